"""Source shortcuts: how much of an accuracy comes from recognising the dataset, not the sound.

When recordings are pooled from several sources (ESC-50 and UrbanSound8K, or public clips and
one's own recordings), a classifier can learn the recording chain instead of the sound: most
UrbanSound8K clips are 22.05 kHz (nothing above 11 kHz) while ESC-50 clips are 44.1 kHz, and a
class that comes from one source only is then recognisable by its missing treble. This module
holds the two tools against that:

* **Bandwidth harmonisation** (:func:`harmonisation`): choose one low-pass frequency for the whole
  data set, the lowest common effective bandwidth, so that every recording is band-limited the
  same way before it is cut into segments (:func:`clapnb.audio.lowpass`). The rule of ``auto`` is
  in :func:`harmonisation`.
* **The shortcut diagnostic** (:func:`run_shortcuts`): the same linear probe as the class probe
  (:mod:`clapnb.probe`, same embeddings, same recording-grouped splits) trained to predict the
  *source* instead of the class, reported beside the class accuracy, the chance level and two
  baselines, plus the class accuracy broken down by source.
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
from clapnb.errors import InputError
from clapnb.segments import SPLITS
from clapnb.taxonomy import class_name

#: Settings of ``--harmonise-bandwidth`` besides a frequency in Hz.
HARMONISE_WORDS = ("off", "auto")

#: Band-edge measurement (see :func:`band_edge`): a fall of CLIFF_DB from the median level of the
#: REF_HZ just below a frequency to *everything* from GUARD_HZ above it up to Nyquist.
CLIFF_DB = 40.0
GUARD_HZ = 250.0
REF_HZ = 1000.0
NPERSEG = 2048

SHORTCUTS_JSON = "shortcuts.json"


# --- bandwidth ---------------------------------------------------------------------------------

def canonical_harmonise(spec: str | float | int | None) -> str:
    """``off``, ``auto`` or a frequency in Hz (as text, ``%g``); anything else is an InputError."""
    if spec is None:
        return "off"
    text = str(spec).strip().lower()
    if text in HARMONISE_WORDS:
        return text
    try:
        hz = float(text.removesuffix("hz"))
    except ValueError:
        hz = math.nan
    if not (math.isfinite(hz) and hz > 0):
        raise InputError(f"--harmonise-bandwidth {spec!r}: use off, auto or a low-pass frequency in Hz "
                         "(e.g. 11025)")
    return f"{hz:g}"


def parse_harmonise_list(text: str | Sequence[str]) -> list[str]:
    """``"off,auto"`` -> ``["off", "auto"]``: one run per setting, the first is the main run."""
    items = [p for p in (text.split(",") if isinstance(text, str) else text) if str(p).strip()]
    values = [canonical_harmonise(p) for p in items] or ["off"]
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise InputError(f"--harmonise-bandwidth {text!r} names {', '.join(dup)} twice; give each setting once")
    return values


def band_edge(x: np.ndarray, sr: int, *, cliff_db: float = CLIFF_DB, guard_hz: float = GUARD_HZ,
              ref_hz: float = REF_HZ, nperseg: int = NPERSEG) -> float:
    """Measured effective bandwidth of one recording (Hz): where its spectrum falls off a cliff.

    The long-term spectrum (Welch) is searched, from low to high, for the first frequency ``f``
    such that everything from ``f + guard_hz`` up to Nyquist lies at least ``cliff_db`` below the
    median level of ``[f - ref_hz, f)``. Resamplers and codecs leave such cliffs (a 22.05-kHz clip
    stored at 44.1 kHz drops by > 100 dB at ~10.5 kHz); natural spectra fall gradually. Without a
    cliff the edge is the Nyquist frequency. Single recordings can still show natural cliffs
    (thunder, a distant helicopter), which is why :func:`harmonisation` uses the median per source.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.signal import welch

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 16:
        return sr / 2
    f, p = welch(x, sr, nperseg=min(nperseg, len(x)))
    db = 10 * np.log10(np.maximum(p, 1e-20))
    df = f[1] - f[0]
    g, r = max(1, round(guard_hz / df)), max(1, round(ref_hz / df))
    if len(f) <= r + g:
        return sr / 2
    above = np.maximum.accumulate(db[::-1])[::-1]  # above[i] = max(db[i:])
    ref = np.median(sliding_window_view(db, r), axis=1)  # ref[j] = median(db[j:j + r])
    i = np.arange(r, len(f) - g)
    hit = np.flatnonzero(ref[i - r] - above[i + g] >= cliff_db)
    return float(f[i[hit[0]]]) if len(hit) else sr / 2


def measure_band_edges(recordings: pd.DataFrame, *, progress: bool = True) -> pd.DataFrame:
    """:func:`band_edge` of every recording with a class, decoded at its own sample rate."""
    from tqdm.auto import tqdm

    from clapnb import audio

    rec = recordings[recordings["class"].notna()]
    edges = []
    for path in tqdm(rec["path"], desc="measuring bandwidth", unit="file", disable=None if progress else True):
        x, sr = audio.decode(path)
        edges.append(band_edge(x, sr))
    return pd.DataFrame({"path": rec["path"].to_numpy(), "sha256": rec["sha256"].to_numpy(),
                         "source": rec["source"].to_numpy(), "sample_rate": rec["sample_rate"].to_numpy(),
                         "nyquist_hz": rec["sample_rate"].to_numpy() / 2, "band_edge_hz": edges})


def bandwidth_by_source(recordings: pd.DataFrame, edges: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per source: recordings, sample rates, lowest Nyquist and (when measured) band-edge quantiles."""
    rec = recordings[recordings["class"].notna()]
    t = rec.groupby("source").agg(
        recordings=("path", "size"),
        sample_rates=("sample_rate", lambda s: ", ".join(f"{v:g}" for v in sorted(set(s)))),
        lowest_nyquist_hz=("sample_rate", lambda s: float(s.min()) / 2))
    if edges is not None and len(edges):
        e = edges[["path", "band_edge_hz"]].merge(rec[["path", "source", "sample_rate"]], on="path")
        by = e.groupby("source")["band_edge_hz"]
        t["band_edge_median_hz"] = by.median()
        t["band_edge_p10_hz"] = by.quantile(0.1)
        t["below_nyquist_share"] = (e["band_edge_hz"] < 0.99 * e["sample_rate"] / 2).groupby(e["source"]).mean()
    return t.reset_index()


def harmonisation(recordings: pd.DataFrame, spec: str | float | None,
                  edges: pd.DataFrame | None = None, *, progress: bool = True) -> dict:
    """The low-pass frequency for ``--harmonise-bandwidth spec`` and how it was chosen.

    * ``off``: none (``cutoff_hz`` null).
    * a frequency: that frequency, whatever the data.
    * ``auto``: the lowest common effective bandwidth, ``floor(min(A, B))`` with
      A = the lowest Nyquist frequency (half the original sample rate) over all recordings, and
      B = the lowest, over sources, of the *median* measured band edge of a source's recordings
      (:func:`band_edge`). A catches recordings stored at a low rate, B a collection that was
      upsampled as a whole (e.g. 16-kHz recordings saved at 44.1 kHz); the median keeps a few
      naturally dull recordings (thunder) from dragging the whole data set down.

    Only recordings with a class count. ``edges`` (from :func:`measure_band_edges`) is measured
    here when ``auto`` needs it and it is not given. Returns a JSON-able provenance record.
    """
    spec = canonical_harmonise(spec)
    rec = recordings[recordings["class"].notna()]
    if rec.empty:
        raise InputError("no recording has a class: nothing to harmonise")
    nyq = rec["sample_rate"].astype(float) / 2
    out: dict = {"spec": spec, "cutoff_hz": None, "lowest_nyquist_hz": float(nyq.min()),
                 "filter": None, "rule": None}
    if spec == "off":
        out["rule"] = "off: every recording keeps its full bandwidth"
        return out
    from clapnb import audio

    out["filter"] = audio.LOWPASS_DESIGN
    if spec != "auto":
        out["cutoff_hz"] = float(spec)
        out["rule"] = "fixed: the given frequency"
        if float(spec) > out["lowest_nyquist_hz"]:
            low = rec.loc[nyq < float(spec)]
            out["warning"] = (f"{len(low)} recording(s) (sources {', '.join(sorted(set(low['source'])))}) have "
                              f"less bandwidth than {float(spec):g} Hz: the bandwidth is not fully harmonised")
        return out
    if edges is None:
        edges = measure_band_edges(rec, progress=progress)
    edges = edges[["path", "band_edge_hz"]].merge(rec[["path", "source"]], on="path")
    medians = edges.groupby("source")["band_edge_hz"].median()
    a, b = float(nyq.min()), float(medians.min())
    cutoff = math.floor(min(a, b))
    at_a = rec.loc[nyq == a]
    limited_by = ({"by": "sample rate", "sources": sorted(set(at_a["source"])), "n_recordings": int(len(at_a)),
                   "sample_rate": int(at_a["sample_rate"].iloc[0])} if a <= b else
                  {"by": "measured band edge", "sources": sorted(medians.index[medians == b]),
                   "median_band_edge_hz": b})
    out.update({
        "cutoff_hz": float(cutoff),
        "rule": "auto: floor(min(lowest Nyquist frequency over recordings, lowest per-source median "
                "of the measured band edge))",
        "limited_by": limited_by,
        "measurement": {"method": "Welch spectrum; first frequency with everything from +guard_hz up to "
                                  "Nyquist at least cliff_db below the median of the ref_hz below",
                        "cliff_db": CLIFF_DB, "guard_hz": GUARD_HZ, "ref_hz": REF_HZ, "nperseg": NPERSEG},
        "per_source": io.to_jsonable(bandwidth_by_source(rec, edges).to_dict(orient="records")),
    })
    return out


def describe_harmonisation(h: Mapping) -> str:
    """One sentence on a :func:`harmonisation` record: the cutoff and what set it."""
    text = describe_cutoff(h.get("cutoff_hz"))
    lim = h.get("limited_by") or {}
    if lim.get("by") == "sample rate":
        text += (f" (auto: the lowest sample rate, {lim['sample_rate']} Hz, of {lim['n_recordings']} recording(s) "
                 f"from {', '.join(lim['sources'])})")
    elif lim.get("by") == "measured band edge":
        text += (f" (auto: the median measured band edge, {lim['median_band_edge_hz']:.0f} Hz, of the recordings "
                 f"from {', '.join(lim['sources'])})")
    elif h.get("spec") not in (None, "off", "auto"):
        text += " (fixed)"
    if h.get("warning"):
        text += f"; WARNING: {h['warning']}"
    return text


def describe_cutoff(cutoff_hz: float | None) -> str:
    """Words for captions: which bandwidth the numbers were measured on."""
    if cutoff_hz is None or (isinstance(cutoff_hz, float) and math.isnan(cutoff_hz)):
        return "full bandwidth (no harmonisation)"
    return f"bandwidth harmonised: low-pass at {float(cutoff_hz):g} Hz"


# --- source mix --------------------------------------------------------------------------------

def single_source_classes(table: pd.DataFrame) -> dict[str, str]:
    """Classes whose recordings (or segments) all come from one source, pooled data only."""
    rows = table[table["class"].notna()]
    if rows["source"].nunique() < 2:
        return {}
    by = rows.groupby("class")["source"].agg(lambda s: sorted(set(s)))
    return {c: s[0] for c, s in by.items() if len(s) == 1}


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

    p = predictions.merge(segments[["segment_id", "source", "group"]], on="segment_id", how="left")
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
    from clapnb import probe as probe_mod
    from clapnb.embeddings import load_run_embeddings
    from clapnb.segments import table_lowpass

    run_dir = Path(run_dir)
    emb = load_run_embeddings(run_dir)
    seg = emb.segments.reset_index(drop=True)
    if "source" not in seg.columns:
        raise InputError(f"{run_dir / 'segments.parquet'} has no 'source' column; rebuild it with `clapnb segments`")
    class_record = io.read_json(run_dir / "probe.json") if (run_dir / "probe.json").is_file() else None
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
    }
    if class_record:
        record["class_accuracy"] = {s: class_record["metrics"][s]["accuracy"] for s in class_record["metrics"]}
        by = {"probe": _by_source_record(accuracy_by_source(
            pd.read_parquet(run_dir / "probe_predictions.parquet"), seg, seed=seed))}
        zs_path = run_dir / "zeroshot.json"
        if zs_path.is_file() and io.read_json(zs_path).get("applicable"):
            by["zero-shot"] = _by_source_record(accuracy_by_source(
                pd.read_parquet(run_dir / "zeroshot_predictions.parquet"), seg, seed=seed))
        record["class_accuracy_by_source"] = by
    if not record["applicable"]:
        record["reason"] = (f"every segment comes from one source ({sources[0]}): there is no source to "
                            "tell apart, so no source shortcut to measure")
        io.atomic_write_json(run_dir / SHORTCUTS_JSON, record)
        return record

    X = probe_mod.check_features(np.asarray(emb.X), f"embeddings of {run_dir}")
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
    io.atomic_write_json(run_dir / SHORTCUTS_JSON, record)
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
    path = Path(run_dir) / "bandwidth.json"
    h = io.read_json(path) if path.is_file() else {"spec": "off", "cutoff_hz": None}
    if h.get("cutoff_hz") is None:
        return "full bandwidth"
    return f"harmonised {h['cutoff_hz']:g} Hz" + (" (auto)" if h.get("spec") == "auto" else "")


def collect(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per completed length of a run: class accuracies, source-id check, accuracy per source."""
    from clapnb import sweep

    rows = []
    for ldir in sorted(Path(run_dir).glob("L[0-9][0-9]")):
        if not (ldir / sweep.DONE).is_file():
            continue
        done = io.read_json(ldir / sweep.DONE)["row"]
        sc = io.read_json(ldir / SHORTCUTS_JSON) if (ldir / SHORTCUTS_JSON).is_file() else {}
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
    from clapnb.report import describe_model, to_markdown

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
