"""Zero-shot classification: prompts -> text embeddings -> cosine similarities -> predictions.

Two losses are reported because the paper's Table 2 loss (~2.83 for 21 classes, close to
ln 21 = 3.04) is only reproduced by a softmax over the *unscaled* cosine similarities:

* ``loss_paper_style``: cross-entropy of softmax(cos) -- comparable with the paper;
* ``loss_calibrated``: cross-entropy of softmax(logit_scale * cos), the probabilities CLAP
  itself assigns (msclap's ``compute_similarity`` multiplies by the learned scale).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import asis, io, metrics
from clapnb.errors import InputError
from clapnb.segments import SPLITS
from clapnb.store import LengthFolder
from clapnb.taxonomy import BY_SLUG, SLUGS

#: msclap's ESC-50 example prompt.
DEFAULT_TEMPLATE = "this is the sound of {}"
CLASS_SETS = ("all", "present")
#: ``zeroshot.json`` ``method`` (the results rows' ``zeroshot_method``): prompts vs audio (CLAP), a
#: model's own labels (``asis.METHOD``, BirdNET), or nothing (a backbone with neither: mfcc, gfcc).
METHOD = "zero-shot"
NO_METHOD = "none"
NOT_APPLICABLE_LABEL = "none (no text encoder or own labels)"

LOSS_DEFINITIONS = {
    "loss_paper_style": "cross-entropy of softmax over the unscaled cosine similarities "
                        "(what reproduces the paper's Table 2 loss)",
    "loss_calibrated": "cross-entropy of softmax over logit_scale x cosine similarities "
                       "(CLAP's own probabilities)",
}


class ZeroShotNotApplicable(InputError):
    """The backbone has no text encoder, so there is nothing to compare audio with."""


def not_applicable_message(backbone_name: str) -> str:
    from clapnb.backbones import text_names

    return (f"zero-shot is not applicable to {backbone_name}: no text encoder. "
            f"Use a backbone with one ({', '.join(text_names())}) for zero-shot, or train the linear "
            "probe (clapnb probe) on these embeddings")


def class_prompts(classes: Sequence[str] = SLUGS, template: str = DEFAULT_TEMPLATE,
                  ensemble: bool = False) -> dict[str, list[str]]:
    """Prompts per class: the class prompt in ``template``, plus its synonyms if ``ensemble``."""
    if template.count("{}") != 1:
        raise InputError(f"template {template!r} must contain exactly one '{{}}' where the class "
                         f"description goes, e.g. {DEFAULT_TEMPLATE!r}")
    unknown = [c for c in classes if c not in BY_SLUG]
    if unknown:
        raise InputError(f"unknown class slug(s) {unknown}; valid: {', '.join(SLUGS)}")
    out: dict[str, list[str]] = {}
    for slug in classes:
        cls = BY_SLUG[slug]
        phrases = [cls.prompt, *cls.synonyms] if ensemble else [cls.prompt]
        out[slug] = [template.format(p) for p in phrases]
    return out


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(x).all():
        raise InputError("embeddings contain an all-zero row or NaN/infinite values; "
                         "recompute them (clapnb embed) and check the audio")
    return x / norms


def class_text_embeddings(embed_text: Callable[[list[str]], np.ndarray],
                          prompts: dict[str, list[str]]) -> np.ndarray:
    """One unit vector per class: the mean of its prompts' normalised embeddings, renormalised.

    Averaging normalised vectors is the usual prompt-ensembling rule (CLIP): each prompt
    contributes its direction, not its length.
    """
    flat = [p for ps in prompts.values() for p in ps]
    emb = _l2_normalise(np.asarray(embed_text(flat)))
    if emb.shape[0] != len(flat):
        raise InputError(f"embed_text returned {emb.shape[0]} rows for {len(flat)} prompts")
    rows, i = [], 0
    for ps in prompts.values():
        rows.append(emb[i:i + len(ps)].mean(axis=0))
        i += len(ps)
    return _l2_normalise(np.stack(rows))


def cosine_scores(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """(n, K) cosine similarities between audio rows and class text rows."""
    a, t = np.asarray(audio), np.asarray(text)
    if a.ndim != 2 or t.ndim != 2 or a.shape[1] != t.shape[1]:
        raise InputError(f"audio embeddings {a.shape} and text embeddings {t.shape} must be "
                         "2-d with the same dimension")
    return _l2_normalise(a) @ _l2_normalise(t).T


def split_metrics(scores: np.ndarray, y_idx: np.ndarray, logit_scale: float | None, *,
                  groups=None, seed: int = 0) -> dict:
    """Accuracy (+ CI), paper-style and calibrated losses for one split."""
    pred = scores.argmax(axis=1)
    ci = metrics.bootstrap_accuracy_ci(y_idx, pred, groups=groups, seed=seed)
    return {
        "n": int(len(y_idx)),
        "accuracy": metrics.accuracy(y_idx, pred),
        "accuracy_ci": ci.as_dict(),
        "loss_paper_style": metrics.cross_entropy(scores, y_idx),
        "loss_calibrated": (None if logit_scale is None
                            else metrics.cross_entropy(float(logit_scale) * scores, y_idx)),
    }


def resolve_classes(present: Sequence[str], class_set: str) -> list[str]:
    """The candidate classes: all 21 (the paper's task) or only those in the data."""
    if class_set not in CLASS_SETS:
        raise InputError(f"class set {class_set!r} is not one of {CLASS_SETS}")
    unknown = sorted(set(present) - set(SLUGS))
    if unknown:
        raise InputError(f"segments hold classes outside the taxonomy: {unknown}")
    return list(SLUGS) if class_set == "all" else [c for c in SLUGS if c in set(present)]


def evaluate(scores: np.ndarray, segments: pd.DataFrame, classes: Sequence[str],
             logit_scale: float | None, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Metrics per split and one prediction row per segment, from a (n, K) score matrix.

    The bootstrap resamples recordings (``group``) when the table has that column.
    """
    if len(scores) != len(segments):
        raise InputError(f"{len(scores)} score rows for {len(segments)} segments")
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(segments["class"]) - set(index))
    if missing:
        raise InputError(f"segments hold classes {missing} that are not among the candidate "
                         f"classes; use the class set 'all'")
    y = segments["class"].map(index).to_numpy()
    pred = scores.argmax(axis=1)
    per_split: dict[str, dict] = {}
    for split in [s for s in SPLITS if s in set(segments["split"])]:
        mask = (segments["split"] == split).to_numpy()
        groups = segments.loc[mask, "group"].to_numpy() if "group" in segments else None
        per_split[split] = split_metrics(scores[mask], y[mask], logit_scale, groups=groups, seed=seed)
        if "augmented" in segments:
            per_split[split].update(metrics.real_only(pred[mask] == y[mask], segments.loc[mask, "augmented"]))
    preds = pd.DataFrame({
        "segment_id": segments["segment_id"].to_numpy(),
        "split": segments["split"].to_numpy(),
        "true": segments["class"].to_numpy(),
        "pred": np.asarray(classes, dtype=object)[pred],
        "correct": pred == y,
        "scores": [row.astype(np.float32) for row in scores],
    })
    return per_split, preds


def not_applicable_record(backbone_meta: dict) -> dict:
    """What ``zeroshot.json`` holds for a backbone without a text encoder."""
    name = str(backbone_meta.get("name", "this backbone"))
    return {"applicable": False, "reason": not_applicable_message(name), "backbone": backbone_meta,
            "random_weights": bool(backbone_meta.get("random_weights", False)),
            "method": NO_METHOD, "label": NOT_APPLICABLE_LABEL}


def zeroshot_label(n_classes: int, class_set: str) -> str:
    """What a zero-shot number was measured over, in words (the results rows' ``zeroshot_label``)."""
    return f"{METHOD}, {n_classes} classes" + (" in the data" if class_set == "present" else "")


def without_background(segments: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """``(mask of event segments, record fields)``: background segments (``--background``, the site's
    residual sound) have no prompt or model label, so zero-shot and as-is leave them out and say so."""
    from clapnb.taxonomy import BACKGROUND

    bg = (segments["class"] == BACKGROUND).to_numpy()
    fields = {"n_background_excluded": int(bg.sum()),
              "background_excluded": ({s: int((bg & (segments["split"] == s).to_numpy()).sum()) for s in SPLITS}
                                      if bg.any() else {})}
    if bg.any():
        fields["background_note"] = (f"{int(bg.sum())} background segment(s) left out: the background class has "
                                     "no prompt or model label, so every number here is over event segments only")
    return ~bg, fields


def run_zeroshot(run_dir: str | os.PathLike, *, template: str = DEFAULT_TEMPLATE,
                 ensemble: bool = False, class_set: str = "all", device: str = "auto",
                 seed: int = 0, if_no_text: str = "raise", backbone=None,
                 asis_mapping: str | os.PathLike | None = None) -> dict:
    """Zero-shot over a run folder's embeddings; writes ``zeroshot.json`` and predictions.

    A backbone without a text encoder but with its own labels (BirdNET) gets the *as-is* baseline
    instead (:func:`clapnb.asis.run_asis`, same files, ``method: "as-is"``; ``asis_mapping``: a
    user's YAML). For any other backbone without text, ``if_no_text='record'`` writes a "not
    applicable" ``zeroshot.json`` and returns it; ``'raise'`` raises :class:`ZeroShotNotApplicable`.
    ``backbone`` may be passed to reuse a loaded model; otherwise it is rebuilt from the
    embeddings' metadata.
    """
    from clapnb.embeddings import load_run_embeddings

    if if_no_text not in ("raise", "record"):
        raise InputError(f"if_no_text must be 'raise' or 'record', got {if_no_text!r}")
    run_dir = Path(run_dir)
    lf = LengthFolder(run_dir)
    emb = load_run_embeddings(run_dir)
    meta = dict(emb.meta.get("backbone", emb.meta))
    has_text = backbone.has_text if backbone is not None else bool(meta.get("has_text", False))
    if not has_text and asis.supported(meta.get("name")):
        return _run_asis(run_dir, emb, meta, asis_mapping, seed)
    if not has_text:
        record = not_applicable_record(meta)
        if if_no_text == "raise":
            raise ZeroShotNotApplicable(record["reason"])
        io.atomic_write_json(lf.zeroshot, record)
        return record
    if backbone is None:
        from clapnb.backbones import backbone_from_metadata

        backbone = backbone_from_metadata(meta, device=device)
    elif meta.get("fingerprint") and backbone.fingerprint != meta["fingerprint"]:
        raise InputError(f"the backbone passed has fingerprint {backbone.fingerprint} but the embeddings "
                         f"of {run_dir} were computed with {meta['fingerprint']}; pass the same backbone")

    segments = emb.segments.reset_index(drop=True)
    events, excluded = without_background(segments)
    classes = resolve_classes(sorted(set(segments.loc[events, "class"])), class_set)
    prompts = class_prompts(classes, template, ensemble)
    text = class_text_embeddings(backbone.embed_text, prompts)
    scores = cosine_scores(np.asarray(emb.X)[events], text)
    logit_scale = None if backbone.logit_scale is None else float(backbone.logit_scale)
    per_split, preds = evaluate(scores, segments[events].reset_index(drop=True), classes, logit_scale, seed)
    record = {
        "applicable": True,
        "backbone": meta,
        "random_weights": bool(meta.get("random_weights", False)),
        "template": template,
        "ensemble": ensemble,
        "class_set": class_set,
        "classes": classes,
        "prompts": prompts,
        "logit_scale": logit_scale,
        "seed": seed,
        "loss_definitions": LOSS_DEFINITIONS,
        "scores": "cosine similarity per class, in the order of 'classes'",
        "metrics": per_split,
        "length_s": float(segments["length_s"].iloc[0]) if "length_s" in segments and len(segments) else None,
        "method": METHOD,
        "label": zeroshot_label(len(classes), class_set),
        **excluded,
    }
    io.atomic_write_parquet(lf.zeroshot_predictions, preds)
    io.atomic_write_json(lf.zeroshot, record)
    return record


def _run_asis(run_dir: Path, emb, meta: dict, mapping, seed: int) -> dict:
    """The as-is baseline (:mod:`clapnb.asis`) evaluated and written like a zero-shot record."""
    scored = asis.score_embeddings(emb, mapping)
    per_split, preds = evaluate(scored.scores, scored.segments, scored.classes, None, seed)
    segments = scored.segments
    _, excluded = without_background(emb.segments)
    record = {"applicable": True, "backbone": meta, "random_weights": bool(meta.get("random_weights", False)),
              "classes": scored.classes, **scored.fields, **excluded, "seed": seed, "metrics": per_split,
              "length_s": float(segments["length_s"].iloc[0]) if "length_s" in segments and len(segments) else None}
    lf = LengthFolder(run_dir)
    io.atomic_write_parquet(lf.zeroshot_predictions, preds)
    io.atomic_write_json(lf.zeroshot, record)
    return record
