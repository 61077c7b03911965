"""Scoring detected events against reference annotations, with the field's libraries.

* **event-based F1** (sed_eval 0.2.1, ``EventBasedMetrics``, optimal matching): an estimated
  event matches a reference event of its class when the onsets differ by at most ``collar_s`` and
  the offsets by at most ``max(collar_s, offset_tolerance x reference length)``. Defaults (1 s,
  50 %) suit multi-second windows on a 1-s grid; DCASE's 200 ms collar is for frame-level systems.
  Per class, micro (``overall``) and macro (mean of the per-class values; a class with reference
  events and no detection counts F1 = 0, where sed_eval's own class-wise average would skip it).
* **segment-based F1** (sed_eval, ``SegmentBasedMetrics``): activity per class in 1-s segments.
* **class-agnostic detection F1**: every class renamed ``event`` (overlaps merged), then
  event-based F1 as above: did we find *that something spurious happened*, and when.
* **PSDS** (sed_scores_eval 0.0.4, ``intersection_based.psds``) from the score timeline
  (``scores.parquet``) rather than the thresholded events: DCASE's scenario 1 by default
  (DTC = GTC = 0.7, alpha_ST = 1, alpha_CT = 0, max eFPR 100 per hour).

sed_eval and sed_scores_eval are imported inside the functions (they are slow to import).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb.errors import InputError

AGNOSTIC = "event"


def _container(df: pd.DataFrame):
    import dcase_util

    return dcase_util.containers.MetaDataContainer([
        {"file": r["file"], "event_label": r["class"], "onset": float(r["onset_s"]), "offset": float(r["offset_s"])}
        for r in df.to_dict("records")])


def _prf(d: dict) -> dict:
    """F1, precision, recall from a sed_eval result block (NaN -> None).

    sed_eval leaves F1 undefined when nothing was detected (precision 0/0) or nothing was to be
    found (recall 0/0); with events on the other side no event was matched, so F1 is 0 then.
    Both sides empty (a class absent from reference and detections) stays None.
    """
    d = d["f_measure"]
    out = {k: (None if d.get(k) is None or (isinstance(d.get(k), float) and np.isnan(d[k])) else float(d[k]))
           for k in ("f_measure", "precision", "recall")}
    if out["f_measure"] is None and 0.0 in (out["precision"], out["recall"]):
        out["f_measure"] = 0.0
    return out


def event_based(reference: pd.DataFrame, estimated: pd.DataFrame, classes: list[str], *, collar_s: float = 1.0,
                offset_tolerance: float = 0.5) -> dict:
    """sed_eval event-based metrics: ``micro``, ``macro``, ``per_class`` (F1/P/R), counts."""
    import sed_eval

    m = sed_eval.sound_event.EventBasedMetrics(event_label_list=list(classes), t_collar=collar_s,
                                               percentage_of_length=offset_tolerance,
                                               evaluate_onset=True, evaluate_offset=True)
    for f in sorted(set(reference["file"]) | set(estimated["file"])):
        m.evaluate(_container(reference[reference["file"] == f]), _container(estimated[estimated["file"] == f]))
    r = m.results()
    per_class = {c: {**_prf(v), "n_reference": int(r["class_wise"][c]["count"]["Nref"]),
                     "n_estimated": int(r["class_wise"][c]["count"]["Nsys"])}
                 for c, v in ((c, r["class_wise"][c]) for c in classes)}
    return {"micro": _prf(r["overall"]), "macro": _macro(per_class), "per_class": per_class,
            "n_reference": int(len(reference)), "n_estimated": int(len(estimated))}


def _macro(per_class: dict) -> dict:
    """Mean over classes of F1/P/R, each over the classes where it is defined (a missed class counts 0)."""
    out = {}
    for k in ("f_measure", "precision", "recall"):
        vals = [v[k] for v in per_class.values() if v[k] is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def segment_based(reference: pd.DataFrame, estimated: pd.DataFrame, classes: list[str],
                  durations: dict[str, float], *, segment_s: float = 1.0) -> dict:
    """sed_eval segment-based metrics over ``segment_s`` segments (each file to its duration)."""
    import sed_eval

    m = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(classes), time_resolution=segment_s)
    for f in sorted(durations):
        m.evaluate(_container(reference[reference["file"] == f]), _container(estimated[estimated["file"] == f]),
                   evaluated_length_seconds=durations[f])
    r = m.results()
    per_class = {c: _prf(r["class_wise"][c]) for c in classes}
    return {"micro": _prf(r["overall"]), "macro": _macro(per_class), "per_class": per_class, "segment_s": segment_s}


def class_agnostic(reference: pd.DataFrame, estimated: pd.DataFrame, *, collar_s: float = 1.0,
                   offset_tolerance: float = 0.5) -> dict:
    """Event-based F1 with every class renamed ``event`` (overlapping events merged first)."""
    from clapnb.events import merge_overlaps

    ref, _ = merge_overlaps(reference.assign(**{"class": AGNOSTIC})[["file", "onset_s", "offset_s", "class"]])
    est, _ = merge_overlaps(estimated.assign(**{"class": AGNOSTIC})[["file", "onset_s", "offset_s", "class"]])
    out = event_based(ref, est, [AGNOSTIC], collar_s=collar_s, offset_tolerance=offset_tolerance)
    return {"f_measure": out["micro"]["f_measure"], "precision": out["micro"]["precision"],
            "recall": out["micro"]["recall"], "n_reference": out["n_reference"], "n_estimated": out["n_estimated"]}


def psds(scores: pd.DataFrame, reference: pd.DataFrame, classes: list[str], durations: dict[str, float], *,
         dtc: float = 0.7, gtc: float = 0.7, cttc: float | None = None, alpha_ct: float = 0.0,
         alpha_st: float = 1.0, max_efpr: float = 100.0) -> dict:
    """PSDS of a score timeline (``file, onset_s, offset_s, <class>...``) with sed_scores_eval."""
    from sed_scores_eval import intersection_based

    if alpha_ct and cttc is None:
        raise InputError("PSDS with alpha_ct > 0 needs a cross-trigger tolerance (cttc)")
    present = set(reference["class"])
    classes = [c for c in classes if c in present]  # sed_scores_eval needs reference events for every class
    if not classes:
        raise InputError("PSDS: the reference holds no event of any detected class")
    score_dict, truth, dur = {}, {}, {}
    for f in sorted(durations):
        s = scores[scores["file"] == f].sort_values("onset_s")
        if not len(s):
            continue
        df = pd.DataFrame({"onset": s["onset_s"].to_numpy(float), "offset": s["offset_s"].to_numpy(float)})
        for c in classes:
            df[c] = s[c].to_numpy(float) if c in s.columns else 0.0
        score_dict[f] = df
        r = reference[reference["file"] == f]
        truth[f] = [(float(a), float(b), c) for a, b, c in zip(r["onset_s"], r["offset_s"], r["class"])]
        dur[f] = float(durations[f])
    if not score_dict:
        raise InputError("no score timeline for any reference file: PSDS needs DIR/scores.parquet from `clapnb detect`")
    value, *_ = intersection_based.psds(score_dict, truth, dur, dtc_threshold=dtc, gtc_threshold=gtc,
                                        cttc_threshold=cttc, alpha_ct=alpha_ct, alpha_st=alpha_st,
                                        unit_of_time="hour", max_efpr=max_efpr)
    return {"psds": float(value), "classes": classes, "dtc": dtc, "gtc": gtc, "cttc": cttc, "alpha_ct": alpha_ct,
            "alpha_st": alpha_st,
            "max_efpr_per_hour": max_efpr, "n_files": len(score_dict)}


def match_files(reference: pd.DataFrame, files: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Map reference ``file`` values onto detected files: exact path, else absolute path, else unique name."""
    notes = []
    by_abs = {os.path.abspath(f): f for f in files}
    by_name: dict[str, list[str]] = {}
    for f in files:
        by_name.setdefault(Path(f).name, []).append(f)
        by_name.setdefault(Path(f).stem, []).append(f)
    mapped, unmatched = [], set()
    for f in reference["file"]:
        if f in files:
            mapped.append(f)
        elif os.path.abspath(f) in by_abs:
            mapped.append(by_abs[os.path.abspath(f)])
        elif len(by_name.get(Path(f).name, [])) == 1:
            mapped.append(by_name[Path(f).name][0])
        elif len(by_name.get(Path(f).stem, [])) == 1:
            mapped.append(by_name[Path(f).stem][0])
        else:
            mapped.append(None)
            unmatched.add(f)
    ref = reference.assign(file=mapped)
    if unmatched:
        notes.append(f"{len(unmatched)} reference file(s) were not analysed by the detection and are left out: "
                     f"{sorted(unmatched)[:3]}")
    return ref[ref["file"].notna()].reset_index(drop=True), notes


def score_events(events_path: str | os.PathLike, reference_path: str | os.PathLike, *, collar_s: float = 1.0,
                 offset_tolerance: float = 0.5, segment_s: float = 1.0, scores_path: str | os.PathLike | None = None,
                 folder: str | os.PathLike | None = None, psds_params: dict | None = None) -> dict:
    """Every metric of the module for a detection output (events + optional timeline) and a reference."""
    from clapnb import audio, io
    from clapnb.detect import BACKGROUND
    from clapnb.events import read_events, read_reference

    if not collar_s >= 0 or not offset_tolerance >= 0 or not segment_s > 0:
        raise InputError(f"--collar ({collar_s}) and --offset-tolerance ({offset_tolerance}) must be >= 0, "
                         f"--segment ({segment_s}) > 0")
    p = Path(events_path)
    if p.is_dir():
        p = p / "events.parquet" if (p / "events.parquet").is_file() else p / "events.csv"
    est = read_events(p)
    det_json = p.parent / "detect.json"
    record = io.read_json(det_json) if det_json.is_file() else None
    if record:
        classes = [c for c in record["probe"]["classes"] if c != BACKGROUND]
        analysed = {f["file"]: float(f["duration_s"]) for f in record["files"] if f["status"] != "skipped"}
    else:
        classes, analysed = None, {}
    ref, notes = read_reference(reference_path, folder=folder, classes=classes)
    if classes is None:
        classes = sorted(set(est["class"]) | set(ref["class"]))
    files = list(analysed) if analysed else sorted(set(est["file"]))
    if not files:
        raise InputError(f"{p}: no analysed file to score")
    ref, more = match_files(ref, files)
    notes += more
    for f in files:
        if f not in analysed:
            analysed[f] = audio.probe(f).duration_s if os.path.isfile(f) else float(
                max(ref.loc[ref["file"] == f, "offset_s"].max(), est.loc[est["file"] == f, "offset_s"].max()))
    est = est[est["class"].isin(classes)]
    out = {
        "events": str(p), "reference": os.fspath(reference_path), "classes": classes, "n_files": len(files),
        "parameters": {"collar_s": collar_s, "offset_tolerance": offset_tolerance, "segment_s": segment_s},
        "definitions": {"event_based": f"sed_eval EventBasedMetrics: onset within {collar_s} s, offset within "
                                       f"max({collar_s} s, {offset_tolerance:g} x reference length); micro = overall, "
                                       "macro = mean over classes",
                        "segment_based": f"sed_eval SegmentBasedMetrics, {segment_s:g}-s segments",
                        "class_agnostic": "event-based F1 with every class renamed 'event'",
                        "psds": "sed_scores_eval intersection_based.psds on scores.parquet"},
        "event_based": event_based(ref, est, classes, collar_s=collar_s, offset_tolerance=offset_tolerance),
        "segment_based": segment_based(ref, est, classes, analysed, segment_s=segment_s),
        "class_agnostic": class_agnostic(ref, est, collar_s=collar_s, offset_tolerance=offset_tolerance),
        "notes": notes,
        "random_weights": bool(record and record.get("random_weights")),
    }
    sp = Path(scores_path) if scores_path else p.parent / "scores.parquet"
    if sp.is_file():
        out["psds"] = psds(pd.read_parquet(sp), ref, classes, analysed, **(psds_params or {}))
    else:
        out["psds"] = None
        out["notes"].append(f"no score timeline at {sp}: PSDS not computed")
    return out
