"""Agreement of a fast embedding mode with the fp32 reference, measured before the mode is used.

bf16 and compiled forwards round differently from fp32; random weights may tolerate that
differently from trained ones, so the agreement is measured on the model actually loaded and on
the run's own audio: a seeded pick of a few real (non-augmented) segments of the segments table,
one class after another, embedded by the fp32 reference encoder and by the mode's encoder
(:class:`clapnb.backbones.ClapBackbone` keeps both). Below the threshold the run is refused, or,
when asked, it goes on with a loud warning; either way the measurement is recorded in the
backbone metadata (``agreement``), hence in ``embeddings.json``, the results rows and captions.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pandas as pd

from clapnb.errors import ClapnbError, InputError

DEFAULT_THRESHOLD = 0.999
DEFAULT_CLIPS = 8


class AgreementError(ClapnbError):
    """A reduced-precision mode disagrees with fp32 more than the threshold allows."""


class LowAgreementWarning(UserWarning):
    """The run goes on in a mode below the agreement threshold (asked for with warn_only)."""


def cosine_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Row-wise cosine similarity of two embedding matrices: ``{'n', 'min_cosine', 'mean_cosine'}``."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise InputError(f"cannot compare embeddings of shapes {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if (na == 0).any() or (nb == 0).any():
        raise InputError("a zero embedding has no direction: cosine agreement is undefined")
    cos = (a * b).sum(axis=1) / (na * nb)
    return {"n": int(len(cos)), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def pick_segments(segments: pd.DataFrame, n: int = DEFAULT_CLIPS, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of ``segments``, seeded: real segments first, spread over classes and recordings.

    The same table and seed always give the same rows (the table is put in a canonical order
    before the seeded shuffle, so its row order does not matter).
    """
    if n < 1:
        raise InputError(f"the agreement check needs at least 1 clip, got {n}")
    if len(segments) == 0:
        raise InputError("the segments table is empty: no clips for the agreement check")
    key = [c for c in ("segment_id", "path", "start_s", "end_s") if c in segments.columns]
    rows = segments.sort_values(key, kind="stable").reset_index(drop=True)
    rng = np.random.default_rng([int(seed), 0xA9EE])
    rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
    augmented = rows["augmented"].fillna(False).astype(bool) if "augmented" in rows else pd.Series(False, rows.index)
    klass = rows["class"].astype(str) if "class" in rows else pd.Series("", rows.index)
    rank = pd.DataFrame({"augmented": augmented, "klass": klass, "order": np.arange(len(rows)),
                         "per_path": rows.groupby("path", sort=False).cumcount()})
    # within a class, other recordings before a second cut of one; then round robin over classes
    rank = rank.sort_values(["augmented", "klass", "per_path", "order"])
    rank["per_class"] = rank.groupby(["augmented", "klass"], sort=False).cumcount()
    order = rank.sort_values(["augmented", "per_class", "order"]).index
    return rows.loc[order[:n]].reset_index(drop=True)


def measure(backbone, waves: list[np.ndarray]) -> dict:
    """Embed ``waves`` with the fp32 reference and with the backbone's mode; their cosine agreement."""
    t0 = time.perf_counter()
    ref = backbone.embed_audio_reference(waves)
    got = backbone.embed_audio(waves)
    return {**cosine_agreement(ref, got), "seconds": round(time.perf_counter() - t0, 3)}


def check_agreement(backbone, segments: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD,
                    warn_only: bool = False, n_clips: int = DEFAULT_CLIPS, seed: int = 0,
                    lowpass_hz: float | None = None) -> dict | None:
    """Measure the backbone's mode against fp32 on ``n_clips`` segments; refuse or warn below ``threshold``.

    Returns the record also stored as ``backbone.metadata['agreement']``, or None for a backbone
    in the reference mode (fp32 eager, feature baselines): there is nothing to compare.
    """
    mode = backbone.metadata.get("precision", "fp32")
    if mode == "fp32" or not hasattr(backbone, "embed_audio_reference"):
        return None
    if not 0 < threshold <= 1:
        raise InputError(f"agreement threshold must be in (0, 1], got {threshold}")
    from clapnb.embeddings import iter_segment_audio

    picked = pick_segments(segments, n_clips, seed)
    waves = [w for _, w in sorted(iter_segment_audio(picked, backbone.sample_rate, lowpass_hz),
                                  key=lambda item: item[0])]
    record = {"reference": "fp32", "mode": mode, **measure(backbone, waves), "threshold": float(threshold),
              "seed": int(seed),
              "segments": (picked["segment_id"] if "segment_id" in picked else picked["path"]).astype(str).tolist()}
    record["passed"] = record["min_cosine"] >= threshold
    record["on_fail"] = "warn" if warn_only else "refuse"
    backbone.metadata["agreement"] = record
    if not record["passed"]:
        msg = (f"{backbone.name} in mode {mode} agrees with fp32 only down to cosine {record['min_cosine']:.6f} "
               f"(mean {record['mean_cosine']:.6f}) on {record['n']} clips of this run, below the threshold "
               f"{threshold}")
        if not warn_only:
            raise AgreementError(msg + "; use --precision fp32 (the reference), or accept it explicitly with "
                                 "--warn-low-agreement / a lower --agreement-threshold")
        banner = "!" * 100
        print(f"{banner}\nWARNING: {msg}. Going on because low agreement was accepted; every output of this "
              f"run records it.\n{banner}", file=sys.stderr)
        warnings.warn(msg, LowAgreementWarning, stacklevel=2)
    return record


def describe(record: dict | None) -> str:
    """The agreement in words, for captions (empty for the reference mode)."""
    if not record:
        return ""
    text = (f"min cosine {record['min_cosine']:.5f} / mean {record['mean_cosine']:.5f} to fp32 "
            f"on {record['n']} clips")
    return text + ("" if record.get("passed", True) else f", BELOW THE {record['threshold']} THRESHOLD")
