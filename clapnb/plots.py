"""Figures for the notebooks and the book: each function takes plain data and returns a Figure.

Figures are closed in pyplot before they are returned: a notebook then renders the returned
figure once (through IPython's PNG formatter) and the book assembly saves it; nothing here shows
or saves anything itself, and no figure piles up in pyplot's registry.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd

from clapnb.taxonomy import class_name


def _figure(**kwargs):
    import matplotlib.pyplot as plt

    fig = plt.figure(layout="constrained", **kwargs)
    plt.close(fig)
    return fig


def wrapped(text: str, width_in: float, fontsize: float = 10) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points.

    Captions that name the model are long; matplotlib does not wrap, and a saved figure clips
    whatever runs past its edge.
    """
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))
    return textwrap.fill(str(text), chars)


def _title(ax, text: str, fontsize: float = 10) -> None:
    if text:
        width = ax.figure.get_figwidth() * ax.get_position().width
        ax.set_title(wrapped(text, width, fontsize), fontsize=fontsize)


def duration_histogram(recordings: pd.DataFrame, bins: int = 30):
    """Recording durations by source: shows how much audio each source contributes per clip."""
    import seaborn as sns

    fig = _figure(figsize=(7, 3.2))
    ax = fig.subplots()
    sns.histplot(recordings, x="duration_s", hue="source", bins=bins, multiple="stack", ax=ax)
    ax.set_xlabel("recording duration (s)")
    ax.set_ylabel("recordings")
    return fig


def spectrogram_grid(examples: Sequence[tuple[str, np.ndarray]], sr: int, ncols: int = 4,
                     top_db: float = 80.0, max_s: float | None = 10.0):
    """Log-mel spectrograms of ``(title, waveform)`` pairs on one grid (one example per class).

    Each panel is in dB relative to its own loudest bin (so quiet and loud clips are both
    readable) on one shared colour scale of ``top_db`` dB; time in s, frequency in Hz on a mel axis.
    Only the first ``max_s`` seconds are drawn (the players hold as much; a user's recording may
    last hours).
    """
    import librosa
    import librosa.display

    n = len(examples)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig = _figure(figsize=(3.2 * ncols + 1.0, 2.4 * nrows + 0.3))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    mesh = None
    for i, (ax, (title, x)) in enumerate(zip(axes, examples)):
        x = np.asarray(x, dtype=np.float32)[: int(max_s * sr) if max_s else None]
        mel = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=2048, hop_length=512, n_mels=64)
        db = librosa.power_to_db(mel, ref=np.max, top_db=top_db)
        mesh = librosa.display.specshow(db, sr=sr, hop_length=512, x_axis="s", y_axis="mel", ax=ax,
                                        vmin=-top_db, vmax=0.0, cmap="magma")
        _title(ax, title, 9)
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("frequency (Hz)" if i % ncols == 0 else "", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_axis_off()
    if mesh is not None:
        cbar = fig.colorbar(mesh, ax=axes[:n].tolist(), shrink=0.8, format="%+.0f")
        cbar.set_label("level (dB re. the clip's maximum)", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    return fig


def per_class_accuracy(table: pd.DataFrame, title: str = ""):
    """Horizontal bars of accuracy per class (``table``: class, accuracy, n)."""
    fig = _figure(figsize=(6.5, 0.28 * len(table) + 1.2))
    ax = fig.subplots()
    names = [class_name(c) for c in table["class"]]
    ax.barh(names, 100 * table["accuracy"], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    _title(ax, title)
    return fig


def training_curves(history: pd.DataFrame, best_epoch: int):
    """Loss and accuracy per epoch for each monitored split, the early-stopping point marked."""
    fig = _figure(figsize=(10, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("early_stop", "--"), ("validation", ":")):
        if f"{split}_loss" in history:
            ax_loss.plot(history["epoch"], history[f"{split}_loss"], style, label=split)
            ax_acc.plot(history["epoch"], 100 * history[f"{split}_accuracy"], style, label=split)
    for ax, label in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy (%)")):
        ax.axvline(best_epoch, color="grey", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    ax_acc.annotate(f"best epoch {best_epoch}", (best_epoch, ax_acc.get_ylim()[0]),
                    textcoords="offset points", xytext=(4, 6), fontsize=8, color="grey")
    ax_loss.legend()
    return fig


def confusion_heatmaps(matrices: Sequence[tuple[str, pd.DataFrame]]):
    """Row-normalised confusion matrices side by side (rows: true class, columns: predicted)."""
    import seaborn as sns

    k = max(len(m) for _, m in matrices)
    fig = _figure(figsize=(6.2 * len(matrices), 0.3 * k + 2.5))
    axes = np.atleast_1d(fig.subplots(1, len(matrices)))
    for ax, (title, cm) in zip(axes, matrices):
        share = cm.div(cm.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
        sns.heatmap(100 * share, ax=ax, vmin=0, vmax=100, cmap="Blues", square=True,
                    cbar_kws={"label": "% of true class", "shrink": 0.6},
                    xticklabels=[class_name(c) for c in cm.columns],
                    yticklabels=[class_name(c) for c in cm.index])
        _title(ax, title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(labelsize=7)
    return fig


def accuracy_vs_length(results: pd.DataFrame, paper_zeroshot: pd.DataFrame | None = None,
                       paper_probe: pd.DataFrame | None = None, title: str = "",
                       repeats: pd.DataFrame | None = None):
    """Accuracy per segment length with 95 % intervals: zero-shot and the probe (val and test).

    ``repeats`` (every repeat's results rows with a ``repeat`` column, :mod:`clapnb.repeats`): the
    spread over repeats as a band (mean +/- std) and one dot per repeat, beside the first split's CI.
    """
    fig = _figure(figsize=(7.5, 4))
    ax = fig.subplots()
    r = results.sort_values("length_s")
    series = [("zeroshot", "zero-shot (validation)", "o-", "tab:blue", 0.0),
              ("probe_validation", "linear probe (validation)", "s-", "tab:orange", -0.08),
              ("probe_test", "linear probe (test)", "^--", "tab:green", 0.08)]
    for key, label, fmt, color, dx in series:
        acc = pd.to_numeric(r[f"{key}_accuracy"], errors="coerce")
        if acc.notna().any():
            lo = pd.to_numeric(r[f"{key}_ci_low"], errors="coerce")
            hi = pd.to_numeric(r[f"{key}_ci_high"], errors="coerce")
            err = np.vstack([(acc - lo).clip(lower=0), (hi - acc).clip(lower=0)]) * 100
            ax.errorbar(r["length_s"] + dx, 100 * acc, yerr=np.nan_to_num(err), fmt=fmt, color=color,
                        capsize=3, label=label)
        if repeats is not None and repeats[f"{key}_accuracy"].notna().any():
            per = repeats.assign(acc=pd.to_numeric(repeats[f"{key}_accuracy"], errors="coerce")).dropna(subset=["acc"])
            stats = per.groupby("length_s")["acc"].agg(["mean", "std"]).fillna(0).sort_index()
            ax.fill_between(stats.index + dx, 100 * (stats["mean"] - stats["std"]),
                            100 * (stats["mean"] + stats["std"]), color=color, alpha=0.15, linewidth=0,
                            label=f"{label}: mean ± std over {per['repeat'].nunique()} repeats")
            ax.plot(per["length_s"] + dx, 100 * per["acc"], ".", color=color, alpha=0.5, markersize=4)
    if paper_zeroshot is not None:
        p = paper_zeroshot.sort_values("length_s")
        ax.plot(p["length_s"], 100 * p["accuracy"], "x", color="grey", label="paper: zero-shot")
    if paper_probe is not None:
        ax.plot(paper_probe["length_s"], 100 * paper_probe["accuracy"], "P", color="dimgrey",
                markersize=9, label="paper: linear probe")
    ax.set_xlabel("segment length (s)")
    ax.set_ylabel("accuracy (%)")
    ticks = set(r["length_s"].astype(int))
    for p in (paper_zeroshot, paper_probe):
        ticks |= set() if p is None else set(p["length_s"].astype(int))
    ax.set_xticks(sorted(ticks))
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    _title(ax, title, 9)
    return fig
