"""The paper's linear probe: one ``nn.Linear(d, K)`` on frozen embeddings, early stopping.

Training uses the ``train`` split, stops when accuracy on the ``early_stop`` split has not
improved for ``patience`` epochs (best weights restored), and, when a grid of hyper-parameters is
given, keeps the configuration with the best ``validation`` accuracy. Validation and test are
both reported: the paper's Table 3 is a validation number, test is the unbiased one.
"""

from __future__ import annotations

import copy
import io as _io
import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clapnb import __version__, io, metrics
from clapnb.errors import InputError
from clapnb.segments import SPLITS
from clapnb.store import LengthFolder
from clapnb.taxonomy import SLUGS

PROBE_FORMAT = "clapnb-probe/1"
#: Epochs between two progress lines (the first, the last and a stop are always reported).
PROGRESS_EVERY = 10

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProbeConfig:
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    max_epochs: int = 300
    patience: int = 10
    seed: int = 0
    standardize: bool = True  # z-score features with train statistics (MFCC scales vary widely)

    def __post_init__(self) -> None:
        checks = {"lr": self.lr > 0, "batch_size": self.batch_size >= 1,
                  "weight_decay": self.weight_decay >= 0, "max_epochs": self.max_epochs >= 1,
                  "patience": self.patience >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise InputError(f"invalid probe parameter(s): "
                             + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
                             + " (lr > 0, batch_size >= 1, weight_decay >= 0, max_epochs >= 1, patience >= 1)")


class EarlyStopping:
    """Stop when the monitored score has not improved for ``patience`` consecutive epochs.

    ``step(score, state)`` returns True when training should stop; the state passed with the
    best score is kept (the caller passes a copy) so the best weights can be restored.
    Improvement means strictly greater: a plateau does not reset the counter.
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise InputError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.epoch = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: Any = None

    def step(self, score: float, state: Any = None) -> bool:
        self.epoch += 1
        if score > self.best_score:
            self.best_score, self.best_epoch, self.best_state = score, self.epoch, state
        return self.epoch - self.best_epoch >= self.patience


@dataclass
class Probe:
    """A trained head and what is needed to apply it to new embeddings."""

    weight: np.ndarray  # (K, d), nn.Linear's weight: y = x W^T + b
    bias: np.ndarray  # (K,)
    mean: np.ndarray  # (d,) subtracted before the layer (zeros without standardisation)
    scale: np.ndarray  # (d,) divided before the layer (ones without standardisation)
    classes: list[str]
    config: ProbeConfig
    backbone: dict = field(default_factory=dict)
    length_s: float | None = None

    def logits(self, X: np.ndarray) -> np.ndarray:
        import torch

        head = _linear(self.weight.shape[1], self.weight.shape[0])
        head.load_state_dict({"weight": torch.from_numpy(self.weight), "bias": torch.from_numpy(self.bias)})
        with torch.inference_mode():
            return head(_standardised(X, self.mean, self.scale)).numpy()

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self.logits(X).astype(np.float64), axis=1)


@dataclass
class TrainResult:
    probe: Probe
    history: pd.DataFrame  # one row per epoch: train_loss, train_accuracy, early_stop_accuracy, ...
    best_epoch: int
    epochs_run: int
    stopped_early: bool


def _linear(d: int, k: int):
    from torch import nn

    return nn.Linear(d, k)


def _standardised(X: np.ndarray, mean: np.ndarray, scale: np.ndarray):
    import torch

    return torch.from_numpy(((np.asarray(X, dtype=np.float32) - mean) / scale).astype(np.float32))


def check_features(X: np.ndarray, what: str = "features") -> np.ndarray:
    """Refuse NaN/infinite or non-2-d features with a message that says which rows."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"{what} must be a 2-d array (n_samples, dim), got shape {X.shape}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{what}: {len(rows)} row(s) hold NaN or infinite values (rows "
                         f"{rows[:10].tolist()}{'...' if len(rows) > 10 else ''}); recompute the "
                         "embeddings (clapnb embed) and check those recordings")
    return X


def train_probe(X_train: np.ndarray, y_train: np.ndarray, X_es: np.ndarray, y_es: np.ndarray,
                classes: Sequence[str], config: ProbeConfig = ProbeConfig(),
                monitor: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                progress: Progress | None = None) -> TrainResult:
    """Train one linear layer with Adam and early stopping on ``(X_es, y_es)`` accuracy.

    ``y_*`` are integer indices into ``classes``. ``monitor`` adds curves for other sets
    (e.g. validation) to the history without influencing training. Deterministic for a given
    ``config.seed``: initialisation and shuffling draw from their own seeded generators.
    """
    import torch
    from torch import nn

    X_train, X_es = check_features(X_train, "train features"), check_features(X_es, "early-stop features")
    y_train, y_es = np.asarray(y_train, dtype=np.int64), np.asarray(y_es, dtype=np.int64)
    if len(X_train) == 0 or len(X_es) == 0:
        raise InputError(f"the probe needs training and early-stopping samples; got "
                         f"{len(X_train)} train and {len(X_es)} early-stop")
    if len(X_train) != len(y_train) or len(X_es) != len(y_es):
        raise InputError("features and labels differ in length")
    k, d = len(classes), X_train.shape[1]
    for name, y in (("train", y_train), ("early-stop", y_es)):
        if y.min() < 0 or y.max() >= k:
            raise InputError(f"{name} labels must be indices into the {k} classes")
    if config.standardize:
        mean = X_train.mean(axis=0).astype(np.float32)
        scale = X_train.std(axis=0).astype(np.float32)
        scale[scale < 1e-8] = 1.0
    else:
        mean, scale = np.zeros(d, np.float32), np.ones(d, np.float32)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = nn.Linear(d, k)
    shuffle = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = _standardised(X_train, mean, scale), torch.from_numpy(y_train)
    sets = {"early_stop": (X_es, y_es), **(monitor or {})}
    evals = {name: (_standardised(X, mean, scale), torch.from_numpy(np.asarray(y, dtype=np.int64)))
             for name, (X, y) in sets.items()}
    stopper = EarlyStopping(config.patience)
    rows = []
    stopped = False
    for epoch in range(1, config.max_epochs + 1):
        head.train()
        order = torch.randperm(len(xt), generator=shuffle)
        total, correct = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            out = head(xt[idx])
            loss = loss_fn(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        row = {"epoch": epoch, "train_loss": total / len(xt), "train_accuracy": correct / len(xt)}
        head.eval()
        with torch.inference_mode():
            for name, (x, y) in evals.items():
                out = head(x)
                row[f"{name}_loss"] = float(loss_fn(out, y))
                row[f"{name}_accuracy"] = float((out.argmax(1) == y).float().mean())
        rows.append(row)
        stop = stopper.step(row["early_stop_accuracy"], copy.deepcopy(head.state_dict()))
        if progress and (stop or epoch == 1 or epoch % PROGRESS_EVERY == 0 or epoch == config.max_epochs):
            progress(f"epoch {epoch:>3}/{config.max_epochs}: train loss {row['train_loss']:.3f}, "
                     f"early-stop accuracy {100 * row['early_stop_accuracy']:.1f} % (best "
                     f"{100 * stopper.best_score:.1f} % at epoch {stopper.best_epoch})"
                     + (f"; no gain for {config.patience} epochs, stopping" if stop else ""))
        if stop:
            stopped = True
            break
    best = stopper.best_state
    probe = Probe(weight=best["weight"].numpy().copy(), bias=best["bias"].numpy().copy(),
                  mean=mean, scale=scale, classes=list(classes), config=config)
    return TrainResult(probe, pd.DataFrame(rows), stopper.best_epoch, len(rows), stopped)


def parse_grid(text: str) -> dict[str, list]:
    """Parse ``"lr=1e-3,1e-2;weight_decay=0,1e-4"`` into ``{name: [values]}``."""
    types = {f.name: f.type for f in fields(ProbeConfig)}
    casts = {"float": float, "int": int, "bool": lambda s: s.lower() in ("1", "true", "yes")}
    grid: dict[str, list] = {}
    for part in [p.strip() for p in text.split(";") if p.strip()]:
        name, sep, values = part.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in types or not values.strip():
            raise InputError(f"grid entry {part!r} must look like name=v1,v2 with name one of "
                             f"{', '.join(types)}; e.g. 'lr=1e-3,1e-2;weight_decay=0,1e-4'")
        try:
            grid[name] = [casts[str(types[name])](v.strip()) for v in values.split(",") if v.strip()]
        except ValueError as exc:
            raise InputError(f"grid entry {part!r}: {exc}") from exc
    return grid


def grid_configs(base: ProbeConfig, grid: dict[str, list] | None) -> list[ProbeConfig]:
    """Every combination of the grid's values applied to ``base`` (just ``base`` without a grid)."""
    if not grid:
        return [base]
    names = list(grid)
    return [replace(base, **dict(zip(names, combo))) for combo in itertools.product(*grid.values())]


def select_and_train(data: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str],
                     config: ProbeConfig = ProbeConfig(), grid: dict[str, list] | None = None,
                     progress: Progress | None = None) -> tuple[TrainResult, pd.DataFrame]:
    """Train one probe per grid point; keep the best on validation (accuracy, then lower loss).

    ``data`` maps split name -> (X, y) and must hold train, early_stop and validation.
    Returns the chosen result and a table of every grid point's validation scores.
    """
    for split in ("train", "early_stop", "validation"):
        if split not in data or len(data[split][0]) == 0:
            raise InputError(f"the '{split}' split is empty: the probe needs train, early_stop "
                             "and validation segments")
    results, rows = [], []
    configs = grid_configs(config, grid)
    for i, cfg in enumerate(configs, 1):
        step = progress
        if progress and grid:
            chosen = {k: getattr(cfg, k) for k in grid}
            progress(f"grid point {i}/{len(configs)}: {chosen}")
            step = (lambda line: progress(f"  {line}"))
        res = train_probe(*data["train"], *data["early_stop"], classes, cfg,
                          monitor={"validation": data["validation"]}, progress=step)
        best = res.history.loc[res.history["epoch"] == res.best_epoch].iloc[0]
        results.append(res)
        rows.append({**asdict(cfg), "validation_accuracy": best["validation_accuracy"],
                     "validation_loss": best["validation_loss"], "best_epoch": res.best_epoch,
                     "epochs_run": res.epochs_run})
    table = pd.DataFrame(rows)
    order = table.sort_values(["validation_accuracy", "validation_loss"], ascending=[False, True],
                              kind="stable").index
    table["selected"] = table.index == order[0]
    return results[order[0]], table


def save_probe(path: str | os.PathLike, probe: Probe) -> Path:
    """Write ``probe.pt``: state dict, classes, backbone metadata, config, standardisation.

    Only tensors and plain Python data go in, so :func:`load_probe` can use ``weights_only``.
    """
    import torch

    payload = {
        "format": PROBE_FORMAT,
        "state_dict": {"weight": torch.from_numpy(probe.weight), "bias": torch.from_numpy(probe.bias)},
        "mean": torch.from_numpy(probe.mean), "scale": torch.from_numpy(probe.scale),
        "classes": list(probe.classes), "config": asdict(probe.config),
        "backbone": io.to_jsonable(probe.backbone), "length_s": probe.length_s,
        "clapnb_version": __version__,
    }
    buf = _io.BytesIO()
    torch.save(payload, buf)
    return io.atomic_write_bytes(path, buf.getvalue())


def load_probe(path: str | os.PathLike) -> Probe:
    """Read a probe written by :func:`save_probe` (tensors and plain data only: weights_only)."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"probe file {path} does not exist; train one with 'clapnb probe --run DIR' "
                         "(it writes DIR/probe.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path} is not a clapnb probe file ({type(exc).__name__}: {exc}); "
                         "use the probe.pt written by 'clapnb probe'") from exc
    if not isinstance(payload, dict) or payload.get("format") != PROBE_FORMAT:
        raise InputError(f"{path} is not a clapnb probe file (no '{PROBE_FORMAT}' format tag); "
                         "use the probe.pt written by 'clapnb probe'")
    sd = payload["state_dict"]
    return Probe(weight=sd["weight"].numpy(), bias=sd["bias"].numpy(), mean=payload["mean"].numpy(),
                 scale=payload["scale"].numpy(), classes=list(payload["classes"]),
                 config=ProbeConfig(**payload["config"]), backbone=dict(payload["backbone"]),
                 length_s=payload["length_s"])


def file_windows(duration_s: float, length_s: float) -> list[tuple[float, float]]:
    """Consecutive non-overlapping ``length_s`` windows covering a file (at least one).

    A file shorter than one window gives one window (``audio.cut`` repeats the audio, as for
    the training segments); a trailing remainder shorter than a window is dropped.
    """
    n = max(1, int(math.floor(duration_s / length_s + 1e-9)))
    return [(i * length_s, (i + 1) * length_s) for i in range(n)]


def predict_files(probe_path: str | os.PathLike, files: Sequence[str | os.PathLike], *,
                  device: str = "auto", backbone=None) -> pd.DataFrame:
    """Classify audio files: cut each into the probe's segment length, embed, average probabilities.

    Returns one row per file: path, n_segments, pred, prob (of pred), probs (all classes in
    the probe's class order).
    """
    from clapnb import audio
    from clapnb.embeddings import embed_waveforms

    probe = load_probe(probe_path)
    if not files:
        raise InputError("no audio files given to predict")
    if probe.length_s is None:
        raise InputError(f"{probe_path} records no segment length; retrain it with 'clapnb probe'")
    if backbone is None:
        from clapnb.backbones import backbone_from_metadata

        backbone = backbone_from_metadata(probe.backbone, device=device)
    rows = []
    for f in files:
        x = audio.load(f, sr=backbone.sample_rate)
        waves = [audio.cut(x, backbone.sample_rate, a, b)
                 for a, b in file_windows(len(x) / backbone.sample_rate, probe.length_s)]
        X = embed_waveforms(backbone, waves, probe.backbone)
        p = probe.probabilities(check_features(X, f"embeddings of {f}")).mean(axis=0)
        k = int(p.argmax())
        rows.append({"path": os.fspath(f), "n_segments": len(waves), "pred": probe.classes[k],
                     "prob": float(p[k]), "probs": p})
    table = pd.DataFrame(rows)
    table.attrs["random_weights"] = bool(probe.backbone.get("random_weights", False))
    return table


def _split_summary(logits: np.ndarray, y: np.ndarray, mask: np.ndarray, segments: pd.DataFrame,
                   classes: Sequence[str], seed: int) -> dict:
    """:func:`metrics.summary` of the rows in ``mask`` (bootstrap over their recordings), plus the
    real-segments-only accuracy."""
    groups = segments.loc[mask, "group"].to_numpy() if "group" in segments else None
    out = metrics.summary(y[mask], logits[mask], classes, groups=groups, seed=seed)
    if "augmented" in segments:
        out.update(metrics.real_only(logits[mask].argmax(1) == y[mask], segments.loc[mask, "augmented"]))
    return out


def background_summary(y: np.ndarray, pred: np.ndarray, classes: Sequence[str], bg: int,
                       groups=None, seed: int = 0) -> dict:
    """The background class of one split, apart from the event classes.

    ``background_recall`` (share of background segments predicted background, with a bootstrap CI
    over background recordings), ``false_events`` (background segments predicted as an event class:
    what detection would report as a spurious event) and their classes, and how many event segments
    the probe called background.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    is_bg, is_ev = y == bg, y != bg
    g = None if groups is None else np.asarray(groups)
    out: dict = {"n_background": int(is_bg.sum()), "n_events": int(is_ev.sum())}
    if is_bg.any():
        ci = metrics.bootstrap_accuracy_ci(y[is_bg], pred[is_bg], groups=None if g is None else g[is_bg], seed=seed)
        false = pred[is_bg] != bg
        out.update({"background_recall": float((~false).mean()), "background_recall_ci": ci.as_dict(),
                    "false_events": int(false.sum()), "false_event_rate": float(false.mean()),
                    "false_events_by_class": {str(classes[k]): int(n) for k, n in
                                              zip(*np.unique(pred[is_bg][false], return_counts=True))}})
    else:
        out.update({"background_recall": None, "background_recall_ci": None, "false_events": 0,
                    "false_event_rate": None, "false_events_by_class": {}})
    if is_ev.any():
        out.update({"events_called_background": int((pred[is_ev] == bg).sum()),
                    "events_called_background_rate": float((pred[is_ev] == bg).mean()),
                    "accuracy_events_only": float((pred[is_ev] == y[is_ev]).mean())})
    else:
        out.update({"events_called_background": 0, "events_called_background_rate": None,
                    "accuracy_events_only": None})
    return out


def probe_classes(present: Sequence[str]) -> list[str]:
    """Output classes: those in the data, in the taxonomy's (paper's) order, ``background`` last."""
    from clapnb.taxonomy import BACKGROUND

    present = set(present)
    unknown = sorted(present - set(SLUGS) - {BACKGROUND})
    if unknown:
        raise InputError(f"segments hold classes outside the taxonomy: {unknown}")
    return [c for c in SLUGS if c in present] + ([BACKGROUND] if BACKGROUND in present else [])


def run_probe(run_dir: str | os.PathLike, config: ProbeConfig = ProbeConfig(),
              grid: dict[str, list] | None = None, *, ci_seed: int | None = None,
              progress: Progress | None = None, extra_labels: str | os.PathLike | None = None) -> dict:
    """Train and evaluate the probe on a run folder; writes probe.json, probe.pt and predictions.

    ``progress``: called with one line per step and every few epochs (e.g. ``print`` to stderr).
    ``extra_labels``: a ``reviewed.parquet`` (clapnb.review) whose answers join the train split
    (:func:`clapnb.review.extra_examples`; recorded in probe.json under ``extra_labels``).
    """
    from clapnb.embeddings import load_run_embeddings

    run_dir = Path(run_dir)
    emb = load_run_embeddings(run_dir)
    segments = emb.segments.reset_index(drop=True)
    X = np.asarray(emb.X)
    bad = ~np.isfinite(X).all(axis=1) if X.ndim == 2 else np.ones(len(X), bool)
    if bad.any():
        ids = segments.loc[bad, "segment_id"].tolist()
        raise InputError(f"{run_dir}: {len(ids)} embedding row(s) hold NaN or infinite values "
                         f"(segments {ids[:5]}{'...' if len(ids) > 5 else ''}); recompute them with "
                         "'clapnb embed' and check those recordings")
    sizes = segments["split"].value_counts()
    empty = [s for s in SPLITS if sizes.get(s, 0) == 0]
    if empty:
        raise InputError(f"{LengthFolder(run_dir).segments}: split(s) {', '.join(empty)} hold no "
                         "segments; the probe needs train, validation, early_stop and test. Rebuild "
                         "the segments with more recordings per class or larger split counts")
    extra = None
    if extra_labels is not None:
        from clapnb import review

        length = float(segments["length_s"].iloc[0]) if "length_s" in segments else None
        if length is None:
            raise InputError(f"{run_dir}: segments record no length_s; --extra-labels needs the segment length")
        extra = review.extra_examples(extra_labels, length, dict(emb.meta.get("backbone", emb.meta)), segments)
    classes = probe_classes(list(segments["class"].unique()) + (list(set(extra[1])) if extra else []))
    index = {c: i for i, c in enumerate(classes)}
    y = segments["class"].map(index).to_numpy()
    masks = {s: (segments["split"] == s).to_numpy() for s in SPLITS}
    data = {s: (X[m], y[m]) for s, m in masks.items()}
    if extra is not None:
        data["train"] = (np.concatenate([data["train"][0], check_features(extra[0], "extra-label embeddings")]),
                         np.concatenate([data["train"][1], np.array([index[c] for c in extra[1]], dtype=np.int64)]))
    if progress:
        sizes_text = ", ".join(f"{s} {int(m.sum())}" for s, m in masks.items())
        progress(f"training nn.Linear({X.shape[1]}, {len(classes)}) on {run_dir} ({sizes_text} segments)")
    result, grid_table = select_and_train(data, classes, config, grid, progress)
    meta = dict(emb.meta.get("backbone", emb.meta))
    probe = result.probe
    probe.backbone = meta
    probe.length_s = float(segments["length_s"].iloc[0]) if "length_s" in segments else None

    seed = probe.config.seed if ci_seed is None else ci_seed
    if progress:
        progress(f"best epoch {result.best_epoch} of {result.epochs_run}; evaluating every split "
                 "(bootstrap 95 % intervals over recordings)")
    logits = probe.logits(X)
    from clapnb.taxonomy import BACKGROUND

    # the headline metrics are over event segments only: a background class (the site's residual
    # sound) is reported apart (record["background"]), so the numbers stay comparable to the paper's
    bg = index.get(BACKGROUND)
    events = (y != bg) if bg is not None else np.ones(len(y), dtype=bool)
    per_split = {}
    for s, m in masks.items():
        per_split[s] = _split_summary(logits, y, m & events, segments, classes, seed)
        if bg is not None:
            per_split[s]["n_classes"] = len(classes) - 1
            per_split[s]["segments"] = "events only (background segments left out)"
    probs = probe.probabilities(X)
    preds = pd.DataFrame({
        "segment_id": segments["segment_id"].to_numpy(), "split": segments["split"].to_numpy(),
        "true": segments["class"].to_numpy(),
        "pred": np.asarray(classes, dtype=object)[logits.argmax(axis=1)],
        "correct": logits.argmax(axis=1) == y,
        "scores": [row.astype(np.float32) for row in probs],
    })
    train_classes = set(segments.loc[masks["train"], "class"]) | set(extra[1] if extra is not None else [])
    record = {
        "backbone": meta,
        "random_weights": bool(meta.get("random_weights", False)),
        "classes": classes,
        "classes_without_train_data": [c for c in classes if c not in train_classes],
        "config": asdict(probe.config),
        "grid": grid_table.to_dict(orient="records") if grid else None,
        "metrics": per_split,
        "loss": "cross-entropy of softmax over the linear layer's outputs",
        "scores": "softmax probability per class, in the order of 'classes'",
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history.to_dict(orient="list"),
        "length_s": probe.length_s,
        "n_per_split": {s: int(m.sum()) for s, m in masks.items()},
        "extra_labels": extra[2] if extra is not None else None,
        "head": f"nn.Linear({X.shape[1]}, {len(classes)}) on frozen embeddings"
                + (", features z-scored with train statistics" if probe.config.standardize else ""),
    }
    if bg is not None:
        record["headline"] = ("metrics: event segments only; background segments (the site's residual sound) "
                              "are reported under 'background' and, with the events, under 'metrics_with_background'")
        record["metrics_with_background"] = {s: _split_summary(logits, y, m, segments, classes, seed)
                                             for s, m in masks.items()}
        record["background"] = {s: background_summary(y[m], logits[m].argmax(axis=1), classes, bg,
                                                      segments.loc[m, "group"].to_numpy() if "group" in segments
                                                      else None, seed)
                                for s, m in masks.items()}
    lf = LengthFolder(run_dir)
    save_probe(lf.probe_model, probe)
    io.atomic_write_parquet(lf.probe_predictions, preds)
    io.atomic_write_json(lf.probe, record)
    return record
