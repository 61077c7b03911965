"""Statistics over repeated splits (split seeds or official folds).

One split is one draw: the recordings that land in validation/test decide a few points of
accuracy. These pure functions turn per-repeat results into what a table needs: mean +/- std
with the per-seed values kept, and *paired* comparisons of two configurations evaluated on the
same repeats (two lengths, two backbones, probe vs zero-shot), where the shared draw cancels.

Two paired intervals, because they answer different questions:

- :func:`paired_difference` -- Student-t interval over repeats of the per-repeat differences
  (``mean(d) +/- t_{n-1} * sd(d) / sqrt(n)``). It covers the split-to-split variation, i.e.
  "would another draw of recordings change the verdict". Needs >= 2 repeats.
- :func:`paired_bootstrap` -- within *one* split, resamples whole recordings (groups) and
  recomputes both accuracies on the same resample. It covers only the finite test set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from clapnb.errors import InputError


def _values(name: str, values: Mapping | Iterable) -> dict:
    if isinstance(values, Mapping):
        out = {k: float(v) for k, v in values.items()}
    else:
        out = {i: float(v) for i, v in enumerate(values)}
    if not out:
        raise InputError(f"{name}: no repeats to summarise")
    if not np.isfinite(list(out.values())).all():
        raise InputError(f"{name}: a repeat's value is NaN or infinite: {out}")
    return out


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (ddof=1) over repeats, with the values per repeat."""

    mean: float
    std: float  # NaN with a single repeat: one draw says nothing about the spread
    n: int
    values: dict = field(default_factory=dict)  # repeat id (seed / fold) -> value

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": None if np.isnan(self.std) else self.std, "n": self.n,
                "values": {str(k): v for k, v in self.values.items()}}

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """'61.2 +/- 3.4 (n=5)' -- accuracy in percent by default."""
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f} (n=1)"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f} (n={self.n})"


def spread(values: Mapping | Iterable) -> Spread:
    """Mean +/- std (ddof=1) over repeats; ``values`` maps repeat id -> value (or is a list)."""
    v = _values("spread", values)
    arr = np.array(list(v.values()))
    std = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
    return Spread(float(arr.mean()), std, len(arr), v)


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over the repeats both were evaluated on, with a t-interval over repeats."""

    mean: float
    std: float
    n: int
    low: float
    high: float
    level: float
    p_value: float  # two-sided paired t-test of mean difference 0
    differences: dict = field(default_factory=dict)
    method: str = "paired t over repeats"

    def as_dict(self) -> dict:
        clean = lambda x: None if np.isnan(x) else x  # noqa: E731
        return {"mean": self.mean, "std": clean(self.std), "n": self.n, "low": clean(self.low),
                "high": clean(self.high), "level": self.level, "p_value": clean(self.p_value),
                "method": self.method, "differences": {str(k): v for k, v in self.differences.items()}}

    @property
    def verdict(self) -> str:
        """'a > b', 'a < b' or 'not distinguishable' at the interval's level."""
        if np.isnan(self.low):
            return "not distinguishable (one repeat)"
        if self.low > 0:
            return "a > b"
        if self.high < 0:
            return "a < b"
        return "not distinguishable"

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        if np.isnan(self.low):
            return f"{self.mean * scale:+.{digits}f} (n=1, no interval)"
        return (f"{self.mean * scale + 0.0:+.{digits}f} [{self.low * scale:+.{digits}f}, "
                f"{self.high * scale:+.{digits}f}] (n={self.n})")


def paired_difference(a: Mapping, b: Mapping, *, level: float = 0.95) -> PairedDifference:
    """Mean of ``a[k] - b[k]`` over the repeat ids ``k`` present in both, with a t-interval.

    Pairing matters: the same draw of recordings makes both configurations easy or hard, so the
    difference varies far less than either accuracy does.
    """
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    va, vb = _values("paired_difference a", a), _values("paired_difference b", b)
    keys = [k for k in va if k in vb]
    if not keys:
        raise InputError(f"paired_difference: the two configurations share no repeat "
                         f"(a has {sorted(map(str, va))}, b has {sorted(map(str, vb))})")
    d = np.array([va[k] - vb[k] for k in keys])
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        nan = float("nan")
        return PairedDifference(mean, nan, 1, nan, nan, level, nan, dict(zip(keys, d.tolist())))
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    if sd == 0:
        p = 0.0 if mean != 0 else 1.0
    else:
        p = float(2 * stats.t.sf(abs(mean) / (sd / np.sqrt(n)), n - 1))
    return PairedDifference(mean, sd, n, mean - half, mean + half, level, p, dict(zip(keys, d.tolist())))


def paired_bootstrap(correct_a, correct_b, *, groups=None, n_resamples: int = 2000,
                     level: float = 0.95, seed: int = 0) -> PairedDifference:
    """Accuracy difference of two predictors on the *same* samples, resampling whole groups.

    ``correct_a``/``correct_b`` are 0/1 per sample (same order); ``groups`` (the recording each
    segment came from) makes the resampling unit a recording. Percentile interval.
    """
    ca = np.asarray(correct_a, dtype=np.float64)
    cb = np.asarray(correct_b, dtype=np.float64)
    if ca.ndim != 1 or ca.shape != cb.shape or len(ca) == 0:
        raise InputError(f"paired_bootstrap needs two equal-length 1-d 0/1 arrays, got {ca.shape} and {cb.shape}")
    if groups is None:
        codes = np.arange(len(ca))
    else:
        g = np.asarray(groups)
        if len(g) != len(ca):
            raise InputError(f"groups has {len(g)} entries but there are {len(ca)} samples")
        codes, _ = pd.factorize(pd.Series(g))
    diff = np.bincount(codes, weights=ca - cb)
    sizes = np.bincount(codes).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_resamples, len(diff)))
    boot = diff[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    mean = float((ca - cb).mean())
    p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))
    unit = "recordings" if groups is not None else "segments"
    return PairedDifference(mean, float(boot.std(ddof=1)), len(diff), float(low), float(high), level, p,
                            {}, method=f"paired bootstrap over {unit} ({n_resamples} resamples)")


def summarise(table: pd.DataFrame, *, by: list[str], value: str, repeat: str = "seed") -> pd.DataFrame:
    """One row per ``by`` group: mean, std, n and the per-repeat values of ``value``.

    ``table`` has one row per (configuration, repeat); the result keeps the values per repeat in
    a ``values`` column (dict repeat -> value) so that no cell is a number without its origin.
    """
    missing = [c for c in [*by, value, repeat] if c not in table.columns]
    if missing:
        raise InputError(f"summarise: table lacks columns {missing} (has {list(table.columns)})")
    rows = []
    for key, part in table.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        s = spread(dict(zip(part[repeat], part[value])))
        rows.append({**dict(zip(by, key)), "mean": s.mean, "std": s.std, "n": s.n,
                     "text": s.text(), "values": s.values})
    return pd.DataFrame(rows)


# --- results rows of repeated runs -------------------------------------------------------------

#: Accuracy columns of a results row (:data:`clapnb.store.RESULT_COLUMNS`) summarised over repeats.
METRICS: dict[str, str] = {"zeroshot_accuracy": "zero-shot (validation)",
                           "probe_validation_accuracy": "probe (validation)",
                           "probe_test_accuracy": "probe (test)"}


def long_results(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One table of results rows from several repeats: ``{repeat id: rows}`` -> rows + ``repeat``."""
    parts = [f.assign(repeat=str(k)) for k, f in frames.items() if f is not None and len(f)]
    if not parts:
        raise InputError("no repeat has results yet; run the sweep first")
    return pd.concat(parts, ignore_index=True)


def spread_table(long: pd.DataFrame, metrics: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per length and metric: mean +/- std over repeats, per-repeat values, and the first repeat's
    within-split bootstrap CI (what a single run would have shown)."""
    metrics = dict(metrics or METRICS)
    first = str(long["repeat"].iloc[0])
    rows = []
    for length, part in long.groupby("length_s", sort=True):
        for col, name in metrics.items():
            vals = part[["repeat", col]].dropna()
            if vals.empty:
                continue
            s = spread(dict(zip(vals["repeat"], vals[col].astype(float))))
            ci_cols = {"zeroshot_accuracy": "zeroshot_ci"}.get(col, col.removesuffix("_accuracy") + "_ci")
            one = part[part["repeat"] == first]
            lo = one[f"{ci_cols}_low"].iloc[0] if f"{ci_cols}_low" in one and len(one) else None
            hi = one[f"{ci_cols}_high"].iloc[0] if f"{ci_cols}_high" in one and len(one) else None
            rows.append({"length_s": int(length), "metric": col, "what": name, "mean": s.mean, "std": s.std,
                         "n": s.n, "values": s.values, "first_repeat": first,
                         "first_accuracy": one[col].iloc[0] if len(one) else None,
                         "first_ci_low": lo, "first_ci_high": hi})
    return pd.DataFrame(rows)


def format_spread(table: pd.DataFrame) -> pd.DataFrame:
    """The Results-page table: one row per length, a column per metric ('61.2 ± 3.4'), the per-repeat
    values, and the first repeat's number with its within-split 95 % bootstrap interval."""
    out = []
    for length, part in table.groupby("length_s", sort=True):
        row: dict = {"length (s)": int(length)}
        for r in part.itertuples(index=False):
            s = Spread(r.mean, r.std, r.n, r.values)
            row[f"{r.what}: mean ± std over repeats"] = s.text()
            row[f"{r.what}: per repeat"] = ", ".join(f"{k}: {100 * v:.1f}" for k, v in r.values.items())
            if r.first_accuracy is not None and r.first_ci_low is not None and not pd.isna(r.first_ci_low):
                row[f"{r.what}: {r.first_repeat} alone [95 % CI]"] = (
                    f"{100 * r.first_accuracy:.1f} [{100 * r.first_ci_low:.1f}, {100 * r.first_ci_high:.1f}]")
        out.append(row)
    return pd.DataFrame(out)


def _by_repeat(long: pd.DataFrame, length: int, col: str) -> dict:
    part = long[(long["length_s"] == length)][["repeat", col]].dropna()
    return dict(zip(part["repeat"], part[col].astype(float)))


def headline_comparisons(long: pd.DataFrame, *, at_length: int = 4, level: float = 0.95) -> pd.DataFrame:
    """The paper's two headline comparisons, paired over repeats:

    1. the best length (highest mean over repeats) against every other length, for zero-shot
       (Table 2) and the probe (Table 3), on validation as in the paper;
    2. the probe against zero-shot at ``at_length`` s (validation; the nearest length run if absent).
    """
    rows = []
    lengths = sorted(int(v) for v in long["length_s"].unique())
    zs_name, vs_note = "zero-shot", ""
    if "zeroshot_method" in long and (long["zeroshot_method"] == "as-is").all() and "zeroshot_label" in long:
        # a model's own labels cover only some classes (BirdNET): say so wherever it meets the probe
        zs_name = str(long["zeroshot_label"].dropna().iloc[0]) if long["zeroshot_label"].notna().any() else "as-is"
        vs_note = " (not the same classes: the probe is on all of them)"
    for col, name in (("zeroshot_accuracy", zs_name), ("probe_validation_accuracy", "probe")):
        if col not in long or long[col].dropna().empty:
            continue
        means = long.groupby("length_s")[col].mean().dropna()
        best = int(means.idxmax())
        for other in lengths:
            if other == best:
                continue
            a, b = _by_repeat(long, best, col), _by_repeat(long, other, col)
            if not a or not b or not set(a) & set(b):
                continue
            d = paired_difference(a, b, level=level)
            rows.append({"comparison": f"{name}: {best} s (best) vs {other} s", "a": f"{name} {best} s",
                         "b": f"{name} {other} s", **_diff_fields(d)})
    if lengths and "zeroshot_accuracy" in long and not long["zeroshot_accuracy"].dropna().empty:
        at = min(lengths, key=lambda n: (abs(n - at_length), n))
        a, b = _by_repeat(long, at, "probe_validation_accuracy"), _by_repeat(long, at, "zeroshot_accuracy")
        if a and b and set(a) & set(b):
            d = paired_difference(a, b, level=level)
            rows.append({"comparison": f"probe vs {zs_name} at {at} s{vs_note}", "a": f"probe {at} s",
                         "b": f"{zs_name} {at} s", **_diff_fields(d)})
    return pd.DataFrame(rows)


def _diff_fields(d: PairedDifference) -> dict:
    return {"mean_difference": d.mean, "low": d.low, "high": d.high, "p_value": d.p_value, "n": d.n,
            "verdict": d.verdict.replace("a > b", "a better").replace("a < b", "b better"), "text": d.text(),
            "method": d.method}


def resolution_note(n_segments: int, accuracy: float, n_groups: int | None = None) -> str:
    """What one split can resolve: one segment's worth of accuracy and the binomial standard error
    (a lower bound: segments of one recording are correlated, and the recording draw adds more)."""
    if n_segments < 1:
        raise InputError(f"resolution_note: n_segments must be >= 1, got {n_segments}")
    one = 100.0 / n_segments
    se = 100.0 * float(np.sqrt(accuracy * (1 - accuracy) / n_segments))
    groups = f" from {n_groups} recordings" if n_groups else ""
    return (f"With {n_segments} validation segments{groups}, one segment is {one:.3f} points of accuracy and "
            f"the binomial standard error at {100 * accuracy:.1f} % is {se:.2f} points (a lower bound: segments "
            f"of one recording are not independent, and another draw of recordings moves the number further, "
            f"as the spread over repeats shows).")


def _markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) if len(df) else "(none)"


def results_section(doc: Mapping, *, segments_per_class: int | None = None) -> str:
    """The Results page's section on repeats (MyST Markdown) from ``repeats.json``'s content."""
    ids = list(doc.get("repeats", []))
    spread_t = pd.DataFrame(doc.get("spread", []))
    comps = pd.DataFrame(doc.get("comparisons", []))
    rows = pd.DataFrame(doc.get("rows", []))
    folds = bool(ids) and all(str(i).startswith("fold-") for i in ids)
    what = "official folds" if folds else "split seeds"
    parts = [f"## Over {len(ids)} {what}\n"]
    if doc.get("random_weights"):
        parts.append(":::{danger} Random weights\nThese repeats used the random-weights stand-in: the spread is a "
                     "plumbing check, NOT a property of CLAP.\n:::\n")
    parts.append(
        f"One split is one draw of recordings. The study was repeated over {len(ids)} {what} "
        f"({', '.join(ids)}): " + ("each fold is the test set once, the next fold gives validation and early "
                                   "stopping, the rest train. " if folds else
                                   "each seed deals the recordings (by group) to train, validation, early stop and "
                                   "test anew; the embeddings of the segments both draws share come from the cache. ")
        + "The first column per method is the mean ± standard deviation over the repeats; the per-repeat values "
        "follow; the last is what the first repeat alone shows with its 95 % bootstrap interval over recordings "
        "(the interval of one test set, which does not include the recording draw).\n")
    if len(spread_t):
        parts.append(":::{table} Accuracy (%) over repeats per segment length\n:name: table-repeats\n\n"
                     + _markdown(format_spread(spread_t)) + "\n:::\n")
    if len(comps):
        shown = comps[["comparison", "text", "verdict", "p_value"]].rename(columns={
            "text": "difference a - b, points [95 % paired t-interval over repeats]", "p_value": "p (paired t)"})
        shown["p (paired t)"] = [("" if v is None or pd.isna(v) else f"{v:.3g}") for v in shown["p (paired t)"]]
        parts.append(
            ":::{table} The paper's headline comparisons, paired over the same repeats (validation accuracy as "
            "in the paper). Pairing removes what the draw does to both configurations at once; "
            "'not distinguishable': the interval contains 0.\n:name: table-repeats-paired\n\n"
            + _markdown(shown) + "\n:::\n")
    if len(rows) and "zeroshot_n" in rows and rows["zeroshot_n"].notna().any():
        n_val = int(rows["zeroshot_n"].dropna().iloc[0])
        acc = float(rows["zeroshot_accuracy"].dropna().mean())
    elif len(rows) and rows.get("probe_validation_n") is not None and rows["probe_validation_n"].notna().any():
        n_val = int(rows["probe_validation_n"].dropna().iloc[0])
        acc = float(rows["probe_validation_accuracy"].dropna().mean())
    else:
        n_val = 0
    paper_n = 21 * 100
    text = ["### What the spread means for the paper's table\n",
            "The paper's Table 2 ranks 4 s (72.93 %) above 7 s (72.89 %): 0.04 points. "
            + resolution_note(paper_n, 0.7293).replace("With 2100", "With the paper's 2100 (21 classes x 100)")
            + " A difference smaller than one segment cannot be told apart on one split, and no single-split "
            "ranking of lengths within about two standard errors of each other is evidence."]
    if n_val:
        per = f" ({segments_per_class} validation segments per class)" if segments_per_class else ""
        text.append(f"In this run{per}: " + resolution_note(n_val, acc).replace("With ", "with ", 1))
    if len(spread_t):
        sd = spread_t["std"].dropna()
        if len(sd):
            text.append(f"Across repeats, the standard deviation of an accuracy is {100 * sd.median():.1f} points "
                        f"(median over lengths and methods; {100 * sd.min():.1f} to {100 * sd.max():.1f}); the paired "
                        "table says which differences survive it.")
    parts.append("\n\n".join(text) + "\n")
    return "\n".join(parts)


def paired_by_length(long_a: pd.DataFrame, long_b: pd.DataFrame, column: str = "probe_validation_accuracy", *,
                     level: float = 0.95) -> pd.DataFrame:
    """Two configurations run on the same repeats (two backbones, with/without harmonisation): per length
    the mean difference ``a - b`` of ``column`` with its paired t-interval over the repeats both have."""
    rows = []
    for length in sorted(set(long_a["length_s"]) & set(long_b["length_s"])):
        a, b = _by_repeat(long_a, int(length), column), _by_repeat(long_b, int(length), column)
        if a and b and set(a) & set(b):
            rows.append({"length_s": int(length), "metric": column, **_diff_fields(paired_difference(a, b, level=level))})
    if not rows:
        raise InputError(f"paired_by_length: the two runs share no (length, repeat) with {column}; run both with "
                         "the same --seeds (or folds) and lengths")
    return pd.DataFrame(rows)
