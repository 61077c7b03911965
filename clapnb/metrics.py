"""Classification metrics shared by zero-shot and the linear probe.

Plain functions over arrays of labels and (n, K) score matrices. sklearn and scipy do the
counting and the stable log-softmax; what is ours is the choice of definitions the paper needs
(cross-entropy from raw logits, a bootstrap that can resample whole recordings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import log_softmax
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from clapnb.errors import InputError


def _as_1d(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one label per sample (1-d), got shape {arr.shape}")
    return arr


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    if len(t) != len(p):
        raise InputError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) == 0:
        raise InputError("no samples to score (empty y_true)")
    return t, p


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true one."""
    t, p = _pair(y_true, y_pred)
    return float(accuracy_score(t, p))


def cross_entropy(logits, y_true) -> float:
    """Mean ``-log softmax(logits)[i, y_i]``, computed with a stable log-softmax.

    ``logits`` is (n, K) unnormalised scores (a linear layer's output, or cosine similarities
    times a scale); ``y_true`` holds integer class indices into the K columns.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = _as_1d("y_true", y_true)
    if z.ndim != 2 or z.shape[0] != len(y):
        raise InputError(f"logits must be (n_samples, n_classes) with n_samples={len(y)}, got {z.shape}")
    if len(y) == 0:
        raise InputError("no samples to score (empty y_true)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= z.shape[1]:
        raise InputError(f"y_true must be integer class indices in [0, {z.shape[1]}), "
                         f"got values {np.unique(y)[:10].tolist()}")
    if not np.isfinite(z).all():
        raise InputError("logits contain NaN or infinite values")
    return float(-log_softmax(z, axis=1)[np.arange(len(y)), y].mean())


def confusion(y_true, y_pred, classes: Sequence[str]) -> pd.DataFrame:
    """Counts with true classes as rows and predicted classes as columns, in ``classes`` order."""
    t, p = _pair(y_true, y_pred)
    m = confusion_matrix(t, p, labels=list(classes))
    return pd.DataFrame(m, index=pd.Index(list(classes), name="true"),
                        columns=pd.Index(list(classes), name="pred"))


def per_class(y_true, y_pred, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class.

    Undefined values (a class never predicted, or absent from ``y_true``) are NaN rather than
    0, so that a table does not pretend a class with no test data scored zero.
    """
    t, p = _pair(y_true, y_pred)
    prec, rec, f1, support = precision_recall_fscore_support(
        t, p, labels=list(classes), zero_division=np.nan)
    return pd.DataFrame({"class": list(classes), "precision": prec, "recall": rec,
                         "f1": f1, "support": support.astype(int)})


def most_confused(y_true, y_pred, classes: Sequence[str], top: int = 10) -> pd.DataFrame:
    """The ``top`` off-diagonal (true, pred) pairs by count, with the share of the true class."""
    cm = confusion(y_true, y_pred, classes)
    support = cm.sum(axis=1)
    long = cm.stack().rename("count").reset_index()
    long = long[(long["true"] != long["pred"]) & (long["count"] > 0)].copy()
    long["share_of_true"] = long["count"] / long["true"].map(support)
    long = long.sort_values(["count", "true", "pred"], ascending=[False, True, True], kind="stable")
    return long.head(top).reset_index(drop=True)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float
    n_resamples: int
    unit: str  # what was resampled: 'segment' or 'group'

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "level": self.level,
                "n_resamples": self.n_resamples, "resampled": self.unit}


def bootstrap_accuracy_ci(y_true, y_pred, *, groups=None, n_resamples: int = 1000,
                          level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval for accuracy.

    With ``groups`` (e.g. the recording each segment was cut from) whole groups are resampled:
    segments of one recording, and noise-augmented copies of one segment, are not independent,
    and resampling them one by one would give an interval that is too narrow.
    """
    t, p = _pair(y_true, y_pred)
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise InputError(f"n_resamples must be positive, got {n_resamples}")
    correct = (t == p).astype(np.float64)
    if groups is None:
        hits, sizes, unit = correct, np.ones_like(correct), "segment"
    else:
        g = _as_1d("groups", groups)
        if len(g) != len(t):
            raise InputError(f"groups has {len(g)} entries but there are {len(t)} samples")
        codes, _ = pd.factorize(pd.Series(g))
        hits = np.bincount(codes, weights=correct)
        sizes = np.bincount(codes).astype(np.float64)
        unit = "group"
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(hits), size=(n_resamples, len(hits)))
    stats = hits[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(float(low), float(high), level, n_resamples, unit)


def real_only(correct, augmented) -> dict:
    """Accuracy over the real (not noise-augmented) segments alone, beside the full-split number.

    Augmented copies can dominate a split when audio is short; this shows whether the headline
    accuracy holds on genuine audio.
    """
    real = ~np.asarray(augmented, dtype=bool)
    c = np.asarray(correct, dtype=bool)[real]
    return {"n_real": int(real.sum()), "accuracy_real": float(c.mean()) if len(c) else None}


def summary(y_true_idx, logits, classes: Sequence[str], *, groups=None, seed: int = 0,
            n_resamples: int = 1000) -> dict:
    """Accuracy (+ bootstrap CI) and cross-entropy of one split, as a JSON-able dict."""
    y = np.asarray(y_true_idx)
    z = np.asarray(logits)
    pred = z.argmax(axis=1)
    ci = bootstrap_accuracy_ci(y, pred, groups=groups, seed=seed, n_resamples=n_resamples)
    return {"n": int(len(y)), "accuracy": accuracy(y, pred), "accuracy_ci": ci.as_dict(),
            "loss": cross_entropy(z, y), "n_classes": len(classes)}
