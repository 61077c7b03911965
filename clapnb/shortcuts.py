"""Source shortcuts: how much of an accuracy comes from recognising the dataset, not the sound.

When recordings are pooled from several sources, a classifier can learn the recording chain
instead of the sound (see :mod:`clapnb.bandwidth` for the harmonisation that removes the most
obvious one, bandwidth). This module holds the diagnostic and its tables:

* **The shortcut diagnostic** (:func:`run_shortcuts`): the same linear probe as the class probe
  (:mod:`clapnb.probe`, same embeddings, same recording-grouped splits) trained to predict the
  *source* instead of the class, reported beside the class accuracy, the chance level and two
  baselines, plus the class accuracy broken down by source.
* its tables and the Results-page section (:func:`results_section`).

The bandwidth names (``harmonisation``, ``canonical_harmonise``, ...) are re-exported here for
code written before the split.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import __version__, io
from clapnb.bandwidth import (  # noqa: F401  (re-exported)
    CLIFF_DB, GUARD_HZ, HARMONISE_WORDS, NPERSEG, REF_HZ, band_edge, bandwidth_by_source, canonical_harmonise,
    describe_cutoff, describe_harmonisation, harmonisation, measure_band_edges, parse_harmonise_list,
    single_source_classes)
from clapnb.errors import InputError
from clapnb.report import describe_model, to_markdown
from clapnb.segments import SPLITS
from clapnb.store import LengthFolder, RunFolder
from clapnb.taxonomy import BACKGROUND, class_name

SHORTCUTS_JSON = LengthFolder(".").shortcuts.name


# --- the diagnostic ------------------------------------------------------------------------------

def baselines(source: Sequence, cls: Sequence, n_sources: int) -> dict:
    """The best a source guess can do on one split without hearing the audio.

    ``chance``: 1 / number of sources. ``majority``: the share of the split's most frequent source
    (the best constant guess). ``class_prior``: the best guess that knows only each segment's true
    class (its class's most frequent source in this split). Both are upper bounds computed on the
    split itself, so a source probe that beats them has learnt something besides the class.
    """
    t = pd.DataFrame({"source": list(source), "class": list(cls)})
    if t.empty:
        return {"chance": 1.0 / n_sources, "majority": None, "class_prior": None}
    best_per_class = t.groupby("class")["source"].agg(lambda s: s.value_counts().max())
    return {"chance": 1.0 / n_sources, "majority": float(t["source"].value_counts().max() / len(t)),
            "class_prior": float(best_per_class.sum() / len(t))}


def _source_split_metrics(y: np.ndarray, logits: np.ndarray, sources: list[str], groups: np.ndarray,
                          cls: np.ndarray, seed: int) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    from clapnb import metrics

    m = metrics.summary(y, logits, sources, groups=groups, seed=seed)
    m["balanced_accuracy"] = float(balanced_accuracy_score(y, logits.argmax(1)))
    m["sources_present"] = int(len(np.unique(y)))
    m.update(baselines(y, cls, len(sources)))
    return m


def accuracy_by_source(predictions: pd.DataFrame, segments: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Class accuracy per split and source (with a 95 % bootstrap over recordings)."""
    from clapnb import metrics

    p = predictions[predictions["true"].astype(str) != BACKGROUND]
    p = p.merge(segments[["segment_id", "source", "group"]], on="segment_id", how="left")
    rows = []
    for (split, source), g in p.groupby(["split", "source"], sort=False):
        ci = metrics.bootstrap_accuracy_ci(g["true"].to_numpy(), g["pred"].to_numpy(), groups=g["group"].to_numpy(),
                                           seed=seed)
        rows.append({"split": split, "source": source, "n": int(len(g)),
                     "accuracy": metrics.accuracy(g["true"], g["pred"]),
                     "ci_low": ci.low, "ci_high": ci.high})
    t = pd.DataFrame(rows, columns=["split", "source", "n", "accuracy", "ci_low", "ci_high"])
    t["_s"] = t["split"].map({s: i for i, s in enumerate(SPLITS)})
    return t.sort_values(["_s", "source"]).drop(columns="_s").reset_index(drop=True)


def _by_source_record(table: pd.DataFrame) -> dict:
    out: dict = {}
    for r in table.to_dict(orient="records"):
        out.setdefault(r["split"], {})[r["source"]] = {k: r[k] for k in ("n", "accuracy", "ci_low", "ci_high")}
    return out


def run_shortcuts(run_dir: str | os.PathLike, config=None, *, seed: int | None = None) -> dict:
    """The shortcut diagnostic of one run folder; writes and returns ``shortcuts.json``.

    Needs the run's embeddings and, for the class side, ``probe.json`` and
    ``probe_predictions.parquet`` (and the zero-shot ones when applicable). Two source probes,
    both :func:`clapnb.probe.select_and_train` with the class probe's configuration on the same
    recording-grouped splits:

    * ``source_id``: on every segment. When most classes come from one source, knowing the class
      already gives the source away; the ``class_prior`` baseline says how far.
    * ``source_id_within_classes``: on the classes that mix sources, thinned so that within each
      class every source is equally frequent (:func:`balanced_rows`) in every split. The class
      then carries no information about the source: accuracy above ``chance`` can only come from
      the recording chain (bandwidth, level, noise floor, ...).

    With a single source there is nothing to tell apart: ``applicable`` is false.
    """
    from clapnb import metrics
    from clapnb import probe as probe_mod  # probe and embeddings need torch/sklearn: only when it runs
    from clapnb.embeddings import load_run_embeddings
    from clapnb.segments import table_lowpass

    run_dir = Path(run_dir)
    lf = LengthFolder(run_dir)
    emb = load_run_embeddings(run_dir)
    # a background class (--background: the site's residual sound, its own source) is no event
    # class: the shortcut check is over event segments, like the class tables
    keep = (emb.segments["class"].astype(str) != BACKGROUND).to_numpy()
    seg = emb.segments[keep].reset_index(drop=True)
    if "source" not in seg.columns:
        raise InputError(f"{lf.segments} has no 'source' column; rebuild it with `clapnb segments`")
    class_record = io.read_json(lf.probe) if lf.probe.is_file() else None
    if config is None:
        config = probe_mod.ProbeConfig(**class_record["config"]) if class_record else probe_mod.ProbeConfig()
    seed = config.seed if seed is None else seed
    bmeta = dict(emb.meta.get("backbone", emb.meta))
    sources = sorted(seg["source"].astype(str).unique())
    record: dict = {
        "applicable": len(sources) > 1, "backbone": bmeta, "random_weights": bool(bmeta.get("random_weights")),
        "lowpass_hz": table_lowpass(seg), "length_s": float(seg["length_s"].iloc[0]), "sources": sources,
        "segments_per_source": {s: int(n) for s, n in seg["source"].value_counts().sort_index().items()},
        "single_source_classes": single_source_classes(seg), "clapnb_version": __version__,
        "n_background_excluded": int((~keep).sum()),
    }
    if class_record:
        record["class_accuracy"] = {s: class_record["metrics"][s]["accuracy"] for s in class_record["metrics"]}
        by = {"probe": _by_source_record(accuracy_by_source(
            pd.read_parquet(lf.probe_predictions), seg, seed=seed))}
        zs_path = lf.zeroshot
        if zs_path.is_file() and io.read_json(zs_path).get("applicable"):
            by["zero-shot"] = _by_source_record(accuracy_by_source(
                pd.read_parquet(lf.zeroshot_predictions), seg, seed=seed))
        record["class_accuracy_by_source"] = by
    if not record["applicable"]:
        record["reason"] = (f"every segment comes from one source ({sources[0]}): there is no source to "
                            "tell apart, so no source shortcut to measure")
        io.atomic_write_json(lf.shortcuts, record)
        return record

    X = probe_mod.check_features(np.asarray(emb.X)[keep], f"embeddings of {run_dir}")
    index = {s: i for i, s in enumerate(sources)}
    y = seg["source"].astype(str).map(index).to_numpy()
    cls = seg["class"].astype(str).to_numpy()
    groups = seg["group"].to_numpy()
    masks = {s: (seg["split"] == s).to_numpy() for s in SPLITS}
    empty = [s for s in ("train", "early_stop", "validation") if not masks[s].any()]
    if empty:
        raise InputError(f"{run_dir}: split(s) {', '.join(empty)} hold no segments; the source probe "
                         "needs train, early_stop and validation segments")
    # 1. the class probe's recipe on every segment, predicting the source
    result, _ = probe_mod.select_and_train({s: (X[m], y[m]) for s, m in masks.items()}, sources, config)
    logits = result.probe.logits(X)
    per_split = {s: _source_split_metrics(y[m], logits[m], sources, groups[m], cls[m], seed)
                 for s, m in masks.items() if m.any()}
    record.update({
        "config": asdict(config), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "head": f"nn.Linear({X.shape[1]}, {len(sources)}) on frozen embeddings: the class probe's recipe, "
                "trained to predict the source",
        "source_id": per_split,
    })
    # 2. the same within classes that mix sources, each source equally often per class: the class
    #    then says nothing about the source, so chance is the only baseline
    cells = seg.loc[masks["train"]].groupby("class")["source"].nunique()
    mixed = sorted(cells.index[cells > 1])
    record["mixed_classes"] = mixed
    balanced = {s: balanced_rows(seg, masks[s] & np.isin(cls, mixed), seed, s) for s in SPLITS}
    missing = [s for s in ("train", "early_stop", "validation") if not balanced[s].any()]
    if missing:
        record["source_id_within_classes"] = None
        record["within_classes_reason"] = (
            "no class has recordings from two sources in the train split" if not mixed else
            f"the classes that mix sources ({', '.join(mixed)}) have one source only in the "
            f"{', '.join(missing)} split(s)")
    else:
        inner, _ = probe_mod.select_and_train({s: (X[m], y[m]) for s, m in balanced.items()}, sources, config)
        z = inner.probe.logits(X)
        within = {}
        for s, m in balanced.items():
            if m.any():
                k = seg.loc[m].groupby("class")["source"].transform("nunique").to_numpy()
                within[s] = {**metrics.summary(y[m], z[m], sources, groups=groups[m], seed=seed),
                             "chance": float(np.mean(1.0 / k)),
                             "classes": sorted(set(cls[m]))}
        record["source_id_within_classes"] = within
        record["within_classes_epochs_run"] = inner.epochs_run
    io.atomic_write_json(lf.shortcuts, record)
    return record


def balanced_rows(seg: pd.DataFrame, mask: np.ndarray, seed: int, split: str) -> np.ndarray:
    """``mask`` thinned so that, within every class, each source present has as many segments as
    the rarest one (seeded pick; classes with a single source in ``mask`` are dropped)."""
    out = np.zeros(len(seg), dtype=bool)
    rows = seg.loc[mask, ["segment_id", "class", "source"]]
    for cls_name, cell in rows.groupby("class", sort=True):
        counts = cell["source"].value_counts()
        if len(counts) < 2:
            continue
        m = int(counts.min())
        for source, part in cell.groupby("source", sort=True):
            part = part.sort_values("segment_id")
            rng = np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in ("shortcut", split, cls_name, source))])
            out[part.index[np.sort(rng.permutation(len(part))[:m])]] = True
    return out


# --- tables --------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def source_id_table(record: Mapping, splits: Sequence[str] = ("validation", "test")) -> pd.DataFrame:
    """Per split: class accuracy beside the source-identification accuracies and their baselines."""
    rows = []
    for s in splits:
        m = (record.get("source_id") or {}).get(s)
        if not m:
            continue
        w = (record.get("source_id_within_classes") or {}).get(s) or {}
        rows.append({
            "split": s, "class accuracy (probe)": _pct((record.get("class_accuracy") or {}).get(s)),
            "source-id accuracy": _pct(m["accuracy"]), "95 % CI": _ci(m),
            "majority": _pct(m["majority"]), "class-only": _pct(m["class_prior"]),
            "balanced": _pct(m["balanced_accuracy"]), "n": m["n"],
            "source-id within classes": _pct(w.get("accuracy")), "within 95 % CI": _ci(w),
            "within chance": _pct(w.get("chance")), "within n": w.get("n")})
    return pd.DataFrame(rows)


def _ci(m: Mapping) -> str:
    ci = m.get("accuracy_ci") if m else None
    return f"[{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]" if ci else "n/a"


def by_source_table(record: Mapping, split: str = "test") -> pd.DataFrame:
    """Class accuracy per source on one split, for each method (probe, zero-shot)."""
    rows = {}
    for method, by_split in (record.get("class_accuracy_by_source") or {}).items():
        for source, m in (by_split.get(split) or {}).items():
            r = rows.setdefault(source, {"source": source, "segments": m["n"]})
            r[f"{method} accuracy"] = _pct(m["accuracy"])
            r[f"{method} 95 % CI"] = f"[{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"
    return pd.DataFrame(list(rows.values()))


def summary_sentence(record: Mapping, split: str = "test") -> str:
    """One paragraph for notebooks: what the source probes found, or why they did not run."""
    if not record.get("applicable"):
        return f"Shortcut check skipped: {record.get('reason')}."
    m = record["source_id"].get(split)
    if not m:
        return f"Shortcut check: no {split} segments."
    excess = m["accuracy"] - max(m["majority"], m["class_prior"])
    text = (f"On the {split} split the source probe names the source of {_pct(m['accuracy'])} of the segments "
            f"(majority {_pct(m['majority'])}, knowing only the class {_pct(m['class_prior'])}): "
            f"{100 * abs(excess):.1f} points {'above' if excess >= 0 else 'below'} the better baseline. ")
    w = (record.get("source_id_within_classes") or {}).get(split)
    if w:
        text += (f"Within the classes that mix sources ({', '.join(map(class_name, w['classes']))}), with each "
                 "source equally "
                 f"frequent, it names the source of {_pct(w['accuracy'])} {_ci(w)} of {w['n']} segments "
                 f"(chance {_pct(w['chance'])}). ")
    elif record.get("within_classes_reason"):
        text += f"No within-class check: {record['within_classes_reason']}. "
    bandwidth = describe_cutoff(record.get("lowpass_hz"))
    return text + bandwidth[0].upper() + bandwidth[1:] + "."


# --- the Results page ------------------------------------------------------------------------------

def run_label(run_dir: str | os.PathLike) -> str:
    """How a run treated bandwidth, from its ``bandwidth.json`` (no file: full bandwidth)."""
    path = RunFolder(run_dir).bandwidth
    h = io.read_json(path) if path.is_file() else {"spec": "off", "cutoff_hz": None}
    if h.get("cutoff_hz") is None:
        return "full bandwidth"
    return f"harmonised {h['cutoff_hz']:g} Hz" + (" (auto)" if h.get("spec") == "auto" else "")


def collect(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per completed length of a run: class accuracies, source-id check, accuracy per source."""
    rows = []
    for lf in RunFolder(run_dir).length_folders():
        if not lf.done.is_file():
            continue
        done = io.read_json(lf.done)["row"]
        sc = io.read_json(lf.shortcuts) if lf.shortcuts.is_file() else {}
        test = (sc.get("source_id") or {}).get("test") or {}
        within = (sc.get("source_id_within_classes") or {}).get("test") or {}
        row = {"length_s": int(done["length_s"]), "lowpass_hz": done.get("lowpass_hz"),
               "zeroshot_accuracy": done.get("zeroshot_accuracy"),
               "probe_validation_accuracy": done.get("probe_validation_accuracy"),
               "probe_test_accuracy": done.get("probe_test_accuracy"),
               "source_id_applicable": sc.get("applicable"), "sources": sc.get("sources", []),
               "reason": sc.get("reason"),
               **{f"source_id_{k}": test.get(k) for k in ("accuracy", "balanced_accuracy", "chance", "majority",
                                                           "class_prior")},
               "source_id_within_accuracy": within.get("accuracy"), "source_id_within_chance": within.get("chance"),
               "source_id_within_n": within.get("n")}
        by = ((sc.get("class_accuracy_by_source") or {}).get("probe") or {}).get("test") or {}
        for source, m in by.items():
            row[f"probe_test_accuracy::{source}"] = m["accuracy"]
        rows.append(row)
    return pd.DataFrame(rows)


def results_section(runs: Sequence[str | os.PathLike], meta: Mapping) -> str:
    """MyST Markdown for the Results page: the shortcut check per length for a run and its variants.

    ``runs``: the main run folder first, then its comparison runs (other bandwidth settings);
    ``meta``: :func:`clapnb.report.run_meta` of the main run (the model for the captions).
    """
    model = describe_model({k: v for k, v in meta.items() if k != "lowpass_hz"})
    labelled = [(run_label(r), collect(r)) for r in runs]
    labelled = [(label, t) for label, t in labelled if not t.empty]
    parts = ["## Source shortcuts\n"]
    if not labelled or not any(t["source_id_applicable"].fillna(False).astype(bool).any() for _, t in labelled):
        reason = next((t["reason"].dropna().iloc[0] for _, t in labelled if t["reason"].notna().any()),
                      "no length has a shortcut check")
        return "\n".join(parts + [f"Source shortcut check skipped: {reason}.\n"])
    parts.append(
        "Can the embeddings tell which dataset or collection a segment comes from? The linear probe of "
        "Table 3 is trained on the same embeddings and splits to predict the *source* instead of the "
        "class (test split). *Majority* is the best constant guess, *class-only* the best guess from the "
        "true class alone. *Within classes* repeats the check on the classes with recordings from several "
        "sources, each source equally frequent per class, so that the class gives nothing away and chance "
        "is the only baseline. A source accuracy well above the baselines means the embeddings carry the "
        "recording chain, which the class probe can use; the per-source class accuracies show who pays.\n")
    if len(labelled) > 1:
        frames = []
        for label, t in labelled:
            cols = {"probe_validation_accuracy": f"Probe validation, {label}",
                    "probe_test_accuracy": f"Probe test, {label}"}
            if t["zeroshot_accuracy"].notna().any():
                cols["zeroshot_accuracy"] = f"Zero-shot validation, {label}"
            frames.append(t.set_index("length_s")[list(cols)].rename(columns=cols))
        both = pd.concat(frames, axis=1).sort_index()
        table = pd.DataFrame({"Audio length": [f"{n} s" for n in both.index],
                              **{c: [_pct(v) for v in both[c]] for c in both.columns}})
        parts.append(
            ":::{table} Class accuracy with and without bandwidth harmonisation, per audio length "
            f"({model}; {' vs '.join(label for label, _ in labelled)}): does the accuracy survive when "
            "every recording is low-passed to the lowest common bandwidth?\n:name: table-harmonisation\n\n"
            + to_markdown(table) + "\n:::\n")
    # Two narrow tables instead of one 11-column one (it did not fit a page): the source-id check
    # with its baselines, then the class accuracy per source. The bandwidth gets a column only
    # when the page compares several settings.
    sources = sorted({s for _, t in labelled for srcs in t["sources"] for s in srcs})
    several = len(labelled) > 1
    checks, by_source = [], []
    for label, t in labelled:
        for r in t.to_dict(orient="records"):
            head = {"Audio length": f"{r['length_s']} s", **({"Bandwidth": label} if several else {})}
            checks.append((r["length_s"], {
                **head, "Source-id accuracy": _pct(r["source_id_accuracy"]),
                "Majority": _pct(r["source_id_majority"]), "Class-only": _pct(r["source_id_class_prior"]),
                "Balanced": _pct(r["source_id_balanced_accuracy"]),
                "Within classes": _pct(r["source_id_within_accuracy"]),
                "Chance within": _pct(r["source_id_within_chance"])}))
            by_source.append((r["length_s"], {
                **head, "All sources": _pct(r["probe_test_accuracy"]),
                **{f"On {s}": _pct(r.get(f"probe_test_accuracy::{s}")) for s in sources}}))
    bandwidth = "bandwidth per row" if several else labelled[0][0]
    for rows, caption, name in (
            (checks, "Source shortcut check per audio length, test split: how often the same linear probe, "
                     "trained to name the source, is right; its baselines (majority, class-only); its "
                     "balanced accuracy; and the check within the classes that mix sources, against chance "
                     f"({model}; {bandwidth})",
             "table-shortcuts"),
            (by_source, "Class accuracy of the linear probe per source, test split: all segments, then the "
                        f"segments of each source ({model}; {bandwidth})", "table-accuracy-by-source")):
        table = pd.DataFrame([row for _, row in sorted(rows, key=lambda x: x[0])])
        parts.append(f":::{{table}} {caption}\n:name: {name}\n\n" + to_markdown(table) + "\n:::\n")
    return "\n".join(parts)
