"""Results tables next to the paper's values, captions, warning banners and the Results page.

Everything here is a pure function of the rows that :mod:`clapnb.sweep` collects into
``results.json`` (one row per segment length, see :data:`RESULT_COLUMNS`), so the tables the book
shows can be checked against the paper's numbers without running a model.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from clapnb import metrics
from clapnb.backbones import REGISTRY
from clapnb.bandwidth import describe_cutoff, single_source_classes
from clapnb.store import RESULT_COLUMNS  # noqa: F401  (the results rows' columns, owned by the store)
from clapnb.taxonomy import BACKGROUND, SLUGS, class_name

#: Paper Table 2: zero-shot CLAP 2023 on the validation set, in the paper's order (best first).
PAPER_TABLE2 = pd.DataFrame({
    "length_s": [4, 7, 8, 3, 9, 10, 5, 6, 2, 1],
    "accuracy": [0.7293, 0.7289, 0.7055, 0.7023, 0.6949, 0.6935, 0.6832, 0.6681, 0.6402, 0.6042],
    "loss": [2.83, 2.82, 2.83, 2.82, 2.83, 2.83, 2.83, 2.83, 2.84, 2.86],
})
#: Paper Table 3: the linear probe's best result ("on the validation set", Section 4).
PAPER_TABLE3 = pd.DataFrame({"length_s": [4], "accuracy": [0.9183], "loss": [0.28]})


NA = "n/a"


def _pct(x) -> str:
    return NA if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def _ci(low, high) -> str:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high)):
        return NA
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def _num(x, digits: int = 2) -> str:
    return NA if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _rank_desc(values: pd.Series) -> pd.Series:
    """Rank 1 = highest; NaN (not applicable) last."""
    return values.rank(ascending=False, method="min", na_option="bottom").astype(int)


def table2(results: pd.DataFrame) -> pd.DataFrame:
    """Zero-shot per length beside paper Table 2, sorted by our accuracy (best first) as in the paper.

    Lengths without a zero-shot number (a backbone with no text side) sort last, by length. The
    paper's value is joined by length, and its rank is kept so the two orders can be compared.
    """
    ours = results[["length_s", "zeroshot_accuracy", "zeroshot_ci_low", "zeroshot_ci_high",
                    "zeroshot_loss_paper", "zeroshot_loss_calibrated"]].copy()
    ours["zeroshot_label"] = [zeroshot_label_of(r) for r in results.to_dict(orient="records")]
    ours["length_s"] = ours["length_s"].astype(int)
    paper = PAPER_TABLE2.rename(columns={"accuracy": "paper_accuracy", "loss": "paper_loss"})
    paper["paper_rank"] = np.arange(1, len(paper) + 1)
    out = ours.merge(paper, on="length_s", how="left")
    out["rank"] = _rank_desc(out["zeroshot_accuracy"])
    out["delta_accuracy"] = out["zeroshot_accuracy"] - out["paper_accuracy"]
    return out.sort_values(["rank", "length_s"], kind="stable").reset_index(drop=True)


def table3(results: pd.DataFrame) -> pd.DataFrame:
    """Linear probe per length beside paper Table 3 (the paper trains it at 4 s only).

    Sorted by our validation accuracy (best first): the paper reports its best result, measured
    on the validation set, so our validation accuracy is the comparable column.
    """
    cols = ["length_s", "probe_validation_accuracy", "probe_validation_ci_low",
            "probe_validation_ci_high", "probe_validation_loss", "probe_test_accuracy",
            "probe_test_ci_low", "probe_test_ci_high", "probe_test_loss", "probe_best_epoch"]
    ours = results[cols].copy()
    ours["length_s"] = ours["length_s"].astype(int)
    paper = PAPER_TABLE3.rename(columns={"accuracy": "paper_accuracy", "loss": "paper_loss"})
    out = ours.merge(paper, on="length_s", how="left")
    out["rank"] = _rank_desc(out["probe_validation_accuracy"])
    out["delta_accuracy"] = out["probe_validation_accuracy"] - out["paper_accuracy"]
    return out.sort_values(["rank", "length_s"], kind="stable").reset_index(drop=True)


def format_table2(t2: pd.DataFrame) -> pd.DataFrame:
    """Display strings for :func:`table2` (percent with two decimals, like the paper)."""
    return pd.DataFrame({
        "Audio length": [f"{n} s" for n in t2["length_s"]],
        "Accuracy (ours)": [_pct(v) for v in t2["zeroshot_accuracy"]],
        "95 % CI": [_ci(lo, hi) for lo, hi in zip(t2["zeroshot_ci_low"], t2["zeroshot_ci_high"])],
        "Loss, paper-style (ours)": [_num(v) for v in t2["zeroshot_loss_paper"]],
        "Loss, calibrated (ours)": [_num(v) for v in t2["zeroshot_loss_calibrated"]],
        "Accuracy (paper)": [_pct(v) for v in t2["paper_accuracy"]],
        "Loss (paper)": [_num(v) for v in t2["paper_loss"]],
        "Rank (ours)": [NA if pd.isna(a) else str(r) for r, a in zip(t2["rank"], t2["zeroshot_accuracy"])],
        "Rank (paper)": [NA if pd.isna(r) else str(int(r)) for r in t2["paper_rank"]],
        "Method (ours)": (list(t2["zeroshot_label"]) if "zeroshot_label" in t2 else [NA] * len(t2)),
    })


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def zeroshot_label_of(row: Mapping) -> str:
    """A results row's ``zeroshot_label`` ("zero-shot, 21 classes", "as-is, 10 of 20 classes", "none
    ..."), or what an older row without that column implies."""
    label = row.get("zeroshot_label")
    if not _missing(label) and label:
        return str(label)
    return "zero-shot" if row.get("zeroshot_applicable") is True else NA


def format_table3(t3: pd.DataFrame) -> pd.DataFrame:
    """Display strings for :func:`table3`; lengths the paper did not report show n/a."""
    return pd.DataFrame({
        "Audio length": [f"{n} s" for n in t3["length_s"]],
        "Validation accuracy (ours)": [_pct(v) for v in t3["probe_validation_accuracy"]],
        "95 % CI": [_ci(lo, hi) for lo, hi in zip(t3["probe_validation_ci_low"], t3["probe_validation_ci_high"])],
        "Validation loss (ours)": [_num(v) for v in t3["probe_validation_loss"]],
        "Test accuracy (ours)": [_pct(v) for v in t3["probe_test_accuracy"]],
        "Test 95 % CI": [_ci(lo, hi) for lo, hi in zip(t3["probe_test_ci_low"], t3["probe_test_ci_high"])],
        "Test loss (ours)": [_num(v) for v in t3["probe_test_loss"]],
        "Accuracy (paper)": [_pct(v) for v in t3["paper_accuracy"]],
        "Loss (paper)": [_num(v) for v in t3["paper_loss"]],
    })


def to_markdown(df: pd.DataFrame) -> str:
    """A pipe table (MyST and GitHub render it)."""
    return df.to_markdown(index=False, stralign="right", disable_numparse=True)


def describe_model(meta: Mapping) -> str:
    """Backbone and weights in words, for captions: which model produced these numbers."""
    name = str(meta.get("backbone", "?"))
    fp = str(meta.get("weights_fingerprint") or "")[:12]
    spec = REGISTRY.get(name)
    kind = spec.kind if spec else ("clap" if name.startswith("msclap") else "features")
    if kind == "features":
        text = f"backbone {name} (feature baseline, no weights" + (f"; configuration {fp}" if fp else "") + ")"
    else:
        weights = meta.get("weights")
        default = "msclap's download" if kind == "clap" else "the installed package's"
        weights = (", ".join(os.path.basename(w.strip()) for w in str(weights).split(","))
                   if weights else default)
        what = name if kind == "clap" or spec is None else f"{name}, {spec.display_name}"
        text = f"backbone {what}, weights {weights}" + (f" (sha256 {fp}...)" if fp else "")
        notice = meta.get("notice") or (spec.notice if spec else "")
        if notice:
            text += f" ({notice})"
    if "lowpass_hz" in meta:
        text += f", {describe_cutoff(meta['lowpass_hz'])}"
    mode = meta.get("precision")
    if mode and mode != "fp32":
        text += f", {mode} embeddings"
        low = meta.get("agreement_min_cosine")
        if low is not None and not (isinstance(low, float) and math.isnan(low)):
            text += f" (min cosine {low:.5f} to fp32" + (
                ", BELOW THE AGREEMENT THRESHOLD" if meta.get("agreement_passed") is False else "") + ")"
    if meta.get("random_weights"):
        text += ", RANDOM WEIGHTS (stand-in, not CLAP results)"
    return text


def banner(meta: Mapping) -> str:
    """A MyST ``danger`` admonition for runs made with the random-weights stand-in, an ``important``
    one for a backbone whose registry entry carries a notice (BirdNET: not CLAP, its licence), else ``''``."""
    spec = REGISTRY.get(str(meta.get("backbone", "")))
    if spec is not None and spec.notice and not meta.get("random_weights"):
        asis = ("" if spec.has_text else "It has no text encoder: the zero-shot column holds its own labels "
                "used as-is, on the classes they cover. ")
        notice = meta.get("backbone_notice") or f"{spec.display_name}; {spec.notice}"
        return (f":::{{important}} {spec.display_name}\n{notice}. These numbers come from {describe_model(meta)}. "
                f"{asis}\n:::\n")
    if not meta.get("random_weights"):
        return ""
    return (":::{danger} Random weights: these are NOT CLAP results\n"
            f"This run used {describe_model(meta)}. The msclap architecture ran with random weights "
            "as an offline plumbing check; every number and figure on this page is meaningless as a "
            "measurement of CLAP and must not be compared with the paper.\n:::\n")


def not_applicable_note(meta: Mapping) -> str:
    if all(meta.get("zeroshot_applicable_all", [True])):
        return ""
    return (f":::{{note}}\nZero-shot classification is not applicable to backbone "
            f"{meta.get('backbone')}: it has no text encoder. Table 2 shows n/a for our columns.\n:::\n")


def zeroshot_note(record: Mapping) -> str:
    """The one note a backbone without a text encoder gets instead of zero-shot results (Markdown).

    ``record``: a ``zeroshot.json`` record (``applicable``, ``reason``, ``backbone``) or
    :func:`run_meta` of a run; ``''`` when zero-shot applies. The book puts it once on the
    zero-shot chapter page (and leaves out the per-length pages); a notebook shows it and stops.
    """
    if "applicable" in record:
        if record["applicable"]:
            return ""
        b = record.get("backbone")
        name = b.get("name") if isinstance(b, Mapping) else b
    else:
        if all(record.get("zeroshot_applicable_all", [True])):
            return ""
        name = record.get("backbone")
    return (f":::{{admonition}} Zero-shot: not applicable\n:class: note\n\nBackbone `{name}` has no text encoder, so there are no "
            "class prompts to compare segments with and no zero-shot result at any length. Its "
            "embeddings are still evaluated by the linear probe and in the confusion analysis; Table 2 "
            "on the Results page shows n/a for our columns.\n:::\n")


def run_meta(results: pd.DataFrame) -> dict:
    """What a run's rows share (backbone, weights, fingerprints); mixed values are listed."""
    meta: dict = {}
    for key in ("backbone", "weights", "weights_fingerprint", "data_fingerprint", "input_policy"):
        values = sorted({str(v) for v in results[key].dropna()}) if key in results else []
        meta[key] = values[0] if len(values) == 1 else ", ".join(values)
    meta["random_weights"] = bool(results["random_weights"].fillna(False).astype(bool).any())
    if "lowpass_hz" in results:
        cutoffs = sorted({float(v) for v in results["lowpass_hz"].dropna()})
        meta["lowpass_hz"] = cutoffs[0] if len(cutoffs) == 1 else None
    if "precision" in results:
        modes = sorted({str(v) for v in results["precision"].dropna()})
        meta["precision"] = ", ".join(modes) if modes else None
        cos = pd.to_numeric(results.get("agreement_min_cosine"), errors="coerce").dropna()
        meta["agreement_min_cosine"] = float(cos.min()) if len(cos) else None
        checked = results["agreement_passed"].dropna() if "agreement_passed" in results else pd.Series([], dtype=bool)
        meta["agreement_passed"] = bool(checked.astype(bool).all())
    meta["zeroshot_applicable_all"] = [bool(v) for v in results["zeroshot_applicable"]]
    for key in ("zeroshot_method", "zeroshot_label", "backbone_notice"):
        values = sorted({str(v) for v in results[key].dropna() if str(v)}) if key in results else []
        meta[key] = "; ".join(values)
    meta["background"] = any(v is True or v == 1 for v in results["background"]) if "background" in results else False
    excluded = pd.to_numeric(results.get("zeroshot_background_excluded"), errors="coerce") \
        if "zeroshot_background_excluded" in results else pd.Series([], dtype=float)
    meta["zeroshot_background_excluded"] = int(excluded.fillna(0).max()) if len(excluded.dropna()) else 0
    return meta


def background_table(results: pd.DataFrame) -> pd.DataFrame:
    """The background class per length (``--background``), apart from Tables 2 and 3: its recall with
    a 95 % bootstrap interval over background recordings, the background segments the probe took for
    an event class (false events: what detection would report) and the event segments it called
    background, on the validation and test splits."""
    rows = []
    for r in results.sort_values("length_s").to_dict(orient="records"):
        row = {"Audio length": f"{int(r['length_s'])} s"}
        for split, name in (("validation", "Validation"), ("test", "Test")):
            n = r.get(f"background_{split}_n")
            row[f"{name}: background segments"] = NA if _missing(n) else str(int(n))
            row[f"{name}: background recall"] = (f"{_pct(r.get(f'background_{split}_recall'))} "
                                                  f"{_ci(r.get(f'background_{split}_recall_ci_low'), r.get(f'background_{split}_recall_ci_high'))}")
            fe = r.get(f"background_{split}_false_events")
            row[f"{name}: false events"] = NA if _missing(fe) or _missing(n) else f"{int(fe)} of {int(n)}"
            cb = r.get(f"background_{split}_events_called_background")
            ne = r.get(f"probe_{split}_n")
            row[f"{name}: events called background"] = (NA if _missing(cb) else
                                                         f"{int(cb)}" + ("" if _missing(ne) else f" of {int(ne)}"))
        rows.append(row)
    return pd.DataFrame(rows)


def results_page(results: pd.DataFrame, *, figure: str | None = None,
                 failed: Sequence[Mapping] = ()) -> str:
    """The MyST Markdown of the Results page: Tables 2 and 3 beside the paper's, and the figure."""
    meta = run_meta(results)
    model = describe_model(meta)
    n = len(results)
    parts = ["# Results\n", banner(meta),
             f"All numbers below come from one run: {model}; data fingerprint "
             f"`{meta['data_fingerprint']}`, input policy `{meta['input_policy']}`, {n} segment "
             "length(s). The paper's values were measured by the authors on their private dataset "
             "(see *The study in brief*): the comparison shows agreement of trends, not of data.\n"]
    if failed:
        parts.append(":::{warning} Incomplete sweep\n" + "\n".join(
            f"- {f.get('length_s')} s: {f.get('error', 'failed')}" for f in failed) + "\n:::\n")
    parts.append(not_applicable_note(meta))
    spec = REGISTRY.get(str(meta.get("backbone")))
    if "as-is" in str(meta.get("zeroshot_method")):
        who = spec.display_name if spec is not None else meta.get("backbone")
        parts.append(f":::{{note}} No zero-shot for {who}\nIt has no text encoder. Table 2's "
                     "column holds its own output labels used **as-is**, mapped to the study classes and "
                     f"evaluated on the classes that have such a label only ({meta.get('zeroshot_label')}; "
                     "column *Method* per length): not comparable with the paper's 21-class zero-shot "
                     "values.\n:::\n")
    if meta.get("background"):
        excluded = meta.get("zeroshot_background_excluded") or 0
        parts.append(":::{note} Background class: event segments only\nThis run trained the probe with a "
                     "`background` class (the site's residual sound, `--background`). Every accuracy in Tables 2 "
                     "and 3 and the figure is over **event segments only** (background segments left out, the "
                     "same bootstrap over recordings), so it stays comparable with the paper's 21 classes"
                     + (f"; zero-shot has no prompt or label for background and leaves its {excluded} validation "
                        "segment(s) out" if excluded else "")
                     + ". The background class is reported apart in the table *Background class* below.\n:::\n")
    parts.append(
        f":::{{table}} Table 2: zero-shot accuracy and loss on the validation set per audio length, "
        f"sorted by our accuracy as in the paper; ours ({model}) beside the paper's (MS-CLAP 2023). "
        "Paper-style loss: softmax over unscaled cosine similarities (what the paper's ~2.83 "
        "implies); calibrated: with CLAP's logit scale. CI: 95 % bootstrap over recordings. Method: what "
        "our column was measured with (zero-shot prompts, a model's own labels as-is, or none)"
        + ("; event segments only (background has no prompt)" if meta.get("background") else "") + ".\n"
        ":name: table-2\n\n" + to_markdown(format_table2(table2(results))) + "\n:::\n")
    parts.append(
        f":::{{table}} Table 3: linear probe (one linear layer on the frozen embeddings, early "
        f"stopping with patience 10) per audio length, sorted by our validation accuracy; ours "
        f"({model}) beside the paper's, which trained it at 4 s only and reports validation accuracy"
        + ("; event segments only (background reported apart)" if meta.get("background") else "") + ".\n"
        ":name: table-3\n\n" + to_markdown(format_table3(table3(results))) + "\n:::\n")
    if meta.get("background"):
        parts.append(
            f":::{{table}} Background class (not an event class, not in Tables 2 and 3) per audio length ({model}): "
            "recall with a 95 % bootstrap interval over background recordings; false events = background "
            "segments the probe took for an event class (what detection would report as a spurious event); "
            "events called background = event segments the probe took for background.\n"
            ":name: table-background\n\n" + to_markdown(background_table(results)) + "\n:::\n")
    if figure:
        parts.append(
            f":::{{figure}} {figure}\n:name: fig-accuracy-length\n\nAccuracy vs audio length "
            f"({model}): zero-shot (validation set) and linear probe (validation and test sets), "
            "with 95 % bootstrap intervals; the paper's zero-shot and probe values as grey marks.\n:::\n")
    return "\n".join(p for p in parts if p)


# --- tables the notebooks show --------------------------------------------------------------------

def show_banner(record: Mapping) -> None:
    """In a notebook: a plain Markdown warning when ``record`` comes from random weights.

    The book adds its MyST admonition on top; this one is for readers in JupyterLab.
    """
    if record.get("random_weights"):
        from IPython.display import Markdown, display  # only inside a notebook kernel

        display(Markdown("**⚠ RANDOM WEIGHTS: NOT CLAP RESULTS.** This run used the random-weights "
                         "stand-in (a plumbing check); its numbers say nothing about CLAP."))


def recordings_summary(recordings: pd.DataFrame) -> pd.DataFrame:
    """Recordings and seconds of audio per class and source (the source mix is a known shortcut)."""
    rec = recordings[recordings["class"].notna()]
    t = rec.pivot_table(index="class", columns="source", values="duration_s",
                        aggfunc=["count", "sum"], fill_value=0)
    t.columns = [f"{'recordings' if agg == 'count' else 'seconds'} · {src}" for agg, src in t.columns]
    t["recordings"] = rec.groupby("class").size()
    t["seconds"] = rec.groupby("class")["duration_s"].sum().round(1)
    t["approximate mapping"] = rec.groupby("class")["approximate"].any()
    if rec["source"].nunique() > 1:
        single = single_source_classes(rec)
        t["single source"] = [single.get(c, "") for c in t.index]
    return display_names(t.loc[_slug_order(t.index)].round(1))


def _slug_order(classes) -> list[str]:
    rank = {c: i for i, c in enumerate(SLUGS)}
    return sorted(classes, key=lambda c: (rank.get(c, len(rank)), str(c)))


def licence_summary(recordings: pd.DataFrame) -> pd.DataFrame:
    """Recordings per source and licence: what the inventory may be redistributed under."""
    rec = recordings[recordings["class"].notna()]
    return (rec.groupby(["source", "license"]).size().rename("recordings").reset_index()
            .sort_values(["source", "license"]).reset_index(drop=True))


def segment_summary(segments: pd.DataFrame) -> pd.DataFrame:
    """Real and noise-augmented segments per length and split, with the augmented share."""
    t = (segments.assign(real=~segments["augmented"].astype(bool), augmented=segments["augmented"].astype(bool))
         .groupby(["length_s", "split"])[["real", "augmented"]].sum().astype(int).reset_index())
    t["augmented %"] = (100 * t["augmented"] / (t["real"] + t["augmented"])).round(1)
    t["split"] = pd.Categorical(t["split"], ["train", "validation", "early_stop", "test"], ordered=True)
    return t.sort_values(["length_s", "split"]).reset_index(drop=True)


def augmented_share(segments: pd.DataFrame) -> pd.DataFrame:
    """Percentage of augmented segments per class (rows) and length (columns)."""
    t = segments.groupby(["class", "length_s"])["augmented"].mean().mul(100).round(1).unstack("length_s")
    t.columns = [f"{float(c):g} s" for c in t.columns]
    return display_names(t.loc[_slug_order(t.index)])


def examples_per_class(recordings: pd.DataFrame) -> pd.DataFrame:
    """One recording per class (the first by path): the audio the dataset notebook plays."""
    rec = recordings[recordings["class"].notna()].sort_values("path")
    first = rec.groupby("class", sort=False).head(1)
    return first.set_index("class").loc[_slug_order(first["class"])].reset_index()


def record_model(record: Mapping) -> dict:
    """The model of a ``zeroshot.json`` / ``probe.json`` record, in :func:`describe_model`'s terms."""
    b = record.get("backbone") or {}
    out = {"backbone": b.get("name"), "weights": b.get("weights_path"),
           "weights_fingerprint": b.get("fingerprint"), "random_weights": record.get("random_weights")}
    if "lowpass_hz" in b:
        out["lowpass_hz"] = b["lowpass_hz"]
    if "precision" in b:
        agree = b.get("agreement") or {}
        out.update({"precision": b["precision"], "agreement_min_cosine": agree.get("min_cosine"),
                    "agreement_passed": agree.get("passed")})
    return out


#: Cell padding and alignment of the tables the notebooks show: a pandas Styler table carries no
#: class the book theme styles, so without these its cells touch ("80080.00 %" for n=800, 80 %).
TABLE_STYLES = [
    {"selector": "th, td", "props": [("padding", "0.3em 0.8em"), ("border-bottom", "1px solid #ddd")]},
    {"selector": "td", "props": [("text-align", "right")]},
    {"selector": "th", "props": [("text-align", "left")]},
    {"selector": "caption", "props": [("caption-side", "top"), ("text-align", "left"), ("padding", "0.3em 0")]},
]


def display_names(df: pd.DataFrame, columns: Sequence[str] = ("class", "true", "pred")) -> pd.DataFrame:
    """``df`` with class slugs replaced by display names in ``columns``, the index and the column labels.

    Files and code keep slugs (stable identifiers); tables meant for readers go through this.
    """
    out = df.copy()
    for col in columns:
        if col in out.columns:
            out[col] = [class_name(v) for v in out[col]]
    if not isinstance(out.index, pd.MultiIndex):
        out.index = pd.Index([class_name(v) for v in out.index], name=out.index.name)
    if not isinstance(out.columns, pd.MultiIndex):
        out.columns = pd.Index([class_name(v) for v in out.columns], name=out.columns.name)
    return out


def styled(df: pd.DataFrame, caption: str | None = None, *, uid: str | None = None, index: bool = False):
    """``df`` as a padded HTML table with display names (and a caption when given)."""
    styler = display_names(df).style.set_table_styles(TABLE_STYLES).set_table_attributes('class="dataframe"')
    if caption:
        styler = styler.set_caption(caption)
    if uid:
        styler = styler.set_uuid(uid)
    styler = styler.format(precision=3, na_rep=NA)
    return styler if index else styler.hide(axis="index")


def captioned(df: pd.DataFrame, what: str, record: Mapping, *, index: bool = False):
    """``df`` as an HTML table whose caption says what it shows and which model produced it."""
    return styled(df, f"{what} ({describe_model(record_model(record))})",
                  uid=re.sub(r"\W+", "-", what.lower()), index=index)


def split_metrics_table(metrics_by_split: Mapping[str, Mapping], loss_keys: Mapping[str, str]) -> pd.DataFrame:
    """Accuracy with CI and the given losses per split, from a zeroshot/probe ``metrics`` dict."""
    rows = []
    for split, m in metrics_by_split.items():
        ci = m.get("accuracy_ci") or {}
        row = {"split": split, "n": m.get("n"), "accuracy": _pct(m.get("accuracy")),
               "95 % CI": _ci(ci.get("low"), ci.get("high"))}
        for label, key in loss_keys.items():
            row[label] = _num(m.get(key), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def zeroshot_table(record: Mapping) -> pd.DataFrame:
    return split_metrics_table(record["metrics"], {"loss, paper-style": "loss_paper_style",
                                                   "loss, calibrated": "loss_calibrated"})


def probe_table(record: Mapping) -> pd.DataFrame:
    return split_metrics_table(record["metrics"], {"loss": "loss"})


def probe_background_table(record: Mapping) -> pd.DataFrame:
    """The background class of a ``probe.json`` record per split (empty without one): apart from the
    event classes, whose accuracy :func:`probe_table` shows."""
    rows = []
    for split, b in (record.get("background") or {}).items():
        ci = b.get("background_recall_ci") or {}
        rows.append({"split": split, "background segments": b.get("n_background"),
                     "background recall": _pct(b.get("background_recall")), "95 % CI": _ci(ci.get("low"), ci.get("high")),
                     "false events": b.get("false_events"),
                     "false events as": ", ".join(f"{class_name(c)} {n}" for c, n in
                                                  (b.get("false_events_by_class") or {}).items()) or "none",
                     "event segments": b.get("n_events"),
                     "events called background": b.get("events_called_background")})
    return pd.DataFrame(rows)


def prompts_table(record: Mapping) -> pd.DataFrame:
    """The prompts per class; for an as-is record (no prompts) the model labels mapped to each class."""
    if record.get("method") == "as-is":
        approx = record.get("approximate") or {}
        rows = [{"class": c, "model labels mapped": record.get("labels_per_class", {}).get(c),
                 "note": approx.get(c, "")} for c in record["classes"]]
        rows += [{"class": c, "model labels mapped": 0, "note": "no label: left out of the as-is evaluation"}
                 for c in record.get("classes_without_label", [])]
        return pd.DataFrame(rows)
    return pd.DataFrame([{"class": c, "prompts": " | ".join(p)} for c, p in record["prompts"].items()])


def event_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """Prediction rows of event segments: a background segment (``--background``) never enters a
    class table (its recall and false events are reported apart, :func:`background_table`)."""
    return predictions[predictions["true"].astype(str) != BACKGROUND]


def per_class_accuracy(predictions: pd.DataFrame, split: str) -> pd.DataFrame:
    """Accuracy and support per true class on one split, in taxonomy order."""
    predictions = event_rows(predictions)
    p = predictions[predictions["split"] == split]
    t = p.groupby("true")["correct"].agg(["mean", "size"]).rename(columns={"mean": "accuracy", "size": "n"})
    t = t.loc[_slug_order(t.index)].rename_axis("class").reset_index()
    return t


def per_class_comparison(by_method: Mapping[str, pd.DataFrame], split: str,
                         classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall and F1 per class for several methods side by side on one split."""
    parts = []
    classes = [c for c in classes if c != BACKGROUND]
    for name, preds in by_method.items():
        p = event_rows(preds)
        p = p[p["split"] == split]
        t = metrics.per_class(p["true"], p["pred"], classes).set_index("class")
        parts.append(t[["precision", "recall", "f1"]].add_prefix(f"{name} ").round(3))
        support = t["support"]
    return pd.concat([support, *parts], axis=1)


def most_confused_table(by_method: Mapping[str, pd.DataFrame], split: str, classes: Sequence[str],
                        top: int = 8) -> pd.DataFrame:
    """The most confused (true, predicted) pairs of each method on one split."""
    parts = []
    for name, preds in by_method.items():
        p = event_rows(preds)
        p = p[p["split"] == split]
        labels = [c for c in classes if c != BACKGROUND] + ([BACKGROUND] if (p["pred"] == BACKGROUND).any() else [])
        t = metrics.most_confused(p["true"], p["pred"], labels, top=top)
        parts.append(t.assign(method=name, share_of_true=t["share_of_true"].round(3)))
    return pd.concat(parts, ignore_index=True)[["method", "true", "pred", "count", "share_of_true"]]


def misclassified(predictions: pd.DataFrame, segments: pd.DataFrame, split: str, n: int, *,
                  recordings: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """``n`` misclassified segments of one split (seeded pick), with where their audio comes from."""
    predictions = event_rows(predictions)
    wrong = predictions[(predictions["split"] == split) & ~predictions["correct"].astype(bool)]
    pick = wrong.sample(n=min(n, len(wrong)), random_state=seed).sort_values("segment_id")
    cols = ["segment_id", "path", "sha256", "start_s", "end_s", "augmented", "snr_db", "noise_seed"]
    out = pick[["segment_id", "true", "pred"]].merge(segments[cols], on="segment_id", how="left")
    if recordings is not None:
        out = out.merge(recordings[["path", "license", "attribution"]], on="path", how="left")
    return out.reset_index(drop=True)


#: Sample rate of the audio players embedded in notebooks: enough to recognise a sound and keeps
#: the book small.
PLAYER_SR = 16000
#: Longest audio a player embeds: a user's hour-long recording must not become an hour of base64.
PLAYER_MAX_S = 10.0


def player_bytes(x: np.ndarray, sr: int = PLAYER_SR, max_s: float = PLAYER_MAX_S) -> tuple[bytes, str]:
    """``x`` (first ``max_s`` s, peak-normalised) encoded for a page: MP3, else 16-bit WAV.

    A 10-s WAV player at 16 kHz is ~430 kB of base64 in the page (and again in any copy of the
    notebook); MP3 at libsndfile's default quality is ~7 times smaller and every browser plays it.
    """
    import io as stdio

    import soundfile as sf

    x = np.asarray(x, dtype=np.float32).reshape(-1)[: int(max_s * sr)]
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        x = 0.89 * x / peak  # -1 dBFS: what IPython's Audio(normalize=True) does, minus clipping
    for fmt, subtype, mime in (("MP3", None, "audio/mpeg"), ("WAV", "PCM_16", "audio/wav")):
        buf = stdio.BytesIO()
        try:
            sf.write(buf, x, sr, format=fmt, subtype=subtype)
        except (sf.LibsndfileError, ValueError, TypeError):  # a libsndfile built without MP3
            continue
        return buf.getvalue(), mime
    raise RuntimeError("soundfile could write neither MP3 nor WAV")


def segment_audio(segments: pd.DataFrame, sr: int = PLAYER_SR) -> list[np.ndarray]:
    """Waveforms of segment rows as the embeddings saw them (cut, repeated, noise), at ``sr``."""
    from clapnb.embeddings import iter_segment_audio  # decodes audio: only for the players

    if segments.empty:
        return []
    waves = dict(iter_segment_audio(segments, sr))
    return [waves[i] for i in range(len(segments))]


def player(x: np.ndarray, sr: int = PLAYER_SR, max_s: float = PLAYER_MAX_S):
    """An audio player for a notebook: the first ``max_s`` s, peak-normalised, as compact MP3."""
    from IPython.display import Audio  # only inside a notebook kernel

    data, mime = player_bytes(x, sr, max_s)
    widget = Audio(data=data)
    widget.mimetype = mime  # IPython assumes WAV for raw bytes
    return widget


def present_classes(segments: pd.DataFrame) -> list[str]:
    """Event classes that have segments, in taxonomy (paper) order (``background`` is no event class)."""
    return _slug_order(set(segments["class"]) - {BACKGROUND})


def confusion(predictions: pd.DataFrame, split: str) -> pd.DataFrame:
    """Confusion counts on one split; columns also hold predicted classes absent from the data.

    Zero-shot chooses among all 21 classes, so it can predict a class with no segments (e.g.
    vehicle pass-by); dropping those predictions would hide errors. For the same reason an event
    segment the probe called ``background`` keeps its column; background segments have no row.
    """
    p = event_rows(predictions)
    p = p[p["split"] == split]
    labels = _slug_order(set(p["true"]) | set(p["pred"]))
    cm = metrics.confusion(p["true"], p["pred"], labels)
    return cm.loc[cm.sum(axis=1) > 0]
