"""Figures and tables of a detection output (``clapnb detect`` folder) for notebook 05 and the book.

Everything reads the output folder; nothing is recomputed except a spectrogram of the audio
shown (decoded in blocks, so long files stay cheap: at most ``max_s`` seconds are drawn).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import io
from clapnb.errors import InputError


def open_detection(det_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """``(detect.json, events, scores)`` of a detection folder."""
    from clapnb.events import read_events

    d = Path(det_dir)
    if not (d / "detect.json").is_file():
        raise InputError(f"{d} holds no detect.json: run `clapnb detect --out {d} ...` first")
    record = io.read_json(d / "detect.json")
    return record, read_events(d / "events.parquet"), pd.read_parquet(d / "scores.parquet")


def banner(record: dict) -> str:
    """The lines every view of a detection starts with (random weights, background rule)."""
    lines = []
    if record.get("random_weights"):
        lines.append("**RANDOM WEIGHTS: detections by the random-weights stand-in; they are NOT CLAP results.**")
    notice = record.get("backbone", {}).get("notice")
    if notice:
        lines.append(notice)
    p = record["parameters"]
    lines.append(f"Probe `{record['probe']['path']}` ({record['backbone'].get('name')}, {record['mode']}), "
                 f"{p['length_s']:g}-s windows every {p['hop_s']:g} s; timeline: {record['timeline']}; "
                 f"threshold {p['threshold']}, median {p['median_s']} s, merge gap {p['merge_gap_s']} s, "
                 f"minimum duration {p['min_duration_s']} s, padding {p['pad_s']} s. {record['background']['rule']}.")
    return "\n\n".join(lines)


def class_summary(events: pd.DataFrame) -> pd.DataFrame:
    """Per class: number of events, total and median duration, mean score."""
    if not len(events):
        return pd.DataFrame(columns=["class", "events", "total_s", "median_s", "mean_score"])
    d = events.assign(duration_s=events["offset_s"] - events["onset_s"])
    out = d.groupby("class").agg(events=("file", "size"), total_s=("duration_s", "sum"),
                                 median_s=("duration_s", "median"), mean_score=("score", "mean")).reset_index()
    return out.sort_values("total_s", ascending=False).reset_index(drop=True)


def top_events(events: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The ``n`` highest-scoring events of each class."""
    if not len(events):
        return events
    return (events.sort_values(["class", "score"], ascending=[True, False], kind="stable")
            .groupby("class", sort=False).head(n).reset_index(drop=True))


def excerpt(path: str, onset_s: float, offset_s: float, sr: int = 22050, max_s: float = 30.0) -> tuple[np.ndarray, int]:
    """Mono audio of ``[onset_s, offset_s)`` (at most ``max_s``), resampled to ``sr``; read by seeking."""
    import soundfile as sf

    from clapnb import audio

    info = audio.probe(path)
    start = int(max(0.0, onset_s) * info.sample_rate)
    stop = int(min(offset_s, onset_s + max_s, info.duration_s) * info.sample_rate)
    x, sr_in = sf.read(path, start=start, stop=max(stop, start + 1), dtype="float32", always_2d=True)
    return audio.resample(x.mean(axis=1), sr_in, sr), sr


def audio_player(path: str, onset_s: float, offset_s: float):
    """A compact audio player of one event (its first 10 s, peak-normalised: ``report.player``)."""
    from clapnb import report

    x, sr = excerpt(path, onset_s, offset_s, sr=report.PLAYER_SR, max_s=report.PLAYER_MAX_S)
    return report.player(x, sr)


def timeline_figure(record: dict, events: pd.DataFrame, scores: pd.DataFrame, file: str, *,
                    reference: pd.DataFrame | None = None, max_s: float = 600.0, min_score: float = 0.05):
    """Spectrogram, one score lane per class, event bars (and reference bars) for one file.

    Classes whose timeline never reaches ``min_score`` get no lane (a 21-class probe would
    otherwise draw mostly empty lanes); ``background`` gets a grey lane.
    """
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    from clapnb.detect import BACKGROUND

    classes = [c for c in record["probe"]["classes"] if c in scores.columns]
    sc = scores[scores["file"] == file]
    shown = [c for c in classes if len(sc) and sc[c].max() >= min_score]
    ev = events[events["file"] == file]
    ref = reference[reference["file"] == file] if reference is not None else None
    dur = float(sc["offset_s"].max()) if len(sc) else max_s
    end = min(dur, max_s)
    fig, axes = plt.subplots(3 + (ref is not None), 1, figsize=(11, 2.2 + 0.35 * len(shown) + 2.6 +
                                                                (0.8 if ref is not None else 0)),
                             sharex=True, gridspec_kw={"height_ratios": [2.2, 0.35 * max(len(shown), 1) + 0.6, 0.9]
                                                       + ([0.9] if ref is not None else [])})
    x, sr = excerpt(file, 0.0, end, sr=16000, max_s=max_s)
    f, t, S = spectrogram(x, fs=sr, nperseg=1024, noverlap=512)
    axes[0].pcolormesh(t, f / 1000, 10 * np.log10(S + 1e-12), shading="auto", cmap="magma")
    axes[0].set_ylabel("kHz")
    axes[0].set_title(f"{Path(file).name}" + (" (first %d s)" % max_s if dur > max_s else ""))
    for i, c in enumerate(shown):
        y = sc[c].to_numpy()
        axes[1].fill_between(sc["onset_s"], i, i + 0.9 * y, step="post",
                             color="0.6" if c == BACKGROUND else f"C{i % 10}", alpha=0.8)
        thr = record["parameters"].get("class_thresholds", {}).get(c, record["parameters"]["threshold"])
        axes[1].hlines(i + 0.9 * thr, 0, end, colors="k", linestyles=":", linewidth=0.6)
    axes[1].set_yticks(np.arange(len(shown)) + 0.45, shown, fontsize=8)
    axes[1].set_ylim(0, max(len(shown), 1))
    lanes = {c: i for i, c in enumerate(shown)}

    def bars(ax, table, label):
        cls = sorted(set(table["class"]))
        for j, c in enumerate(cls):
            g = table[table["class"] == c]
            ax.broken_barh(list(zip(g["onset_s"], g["offset_s"] - g["onset_s"])), (j, 0.8),
                           color=f"C{lanes.get(c, j) % 10}")
        ax.set_yticks(np.arange(len(cls)) + 0.4, cls, fontsize=8)
        ax.set_ylim(0, max(len(cls), 1))
        ax.set_ylabel(label)

    bars(axes[2], ev, "events")
    if ref is not None:
        bars(axes[3], ref, "reference")
    axes[-1].set_xlim(0, end)
    axes[-1].set_xlabel("time from the file's start (s)")
    fig.tight_layout()
    return fig


def event_spectrograms(events: pd.DataFrame, *, context_s: float = 1.0, max_panels: int = 12, ncols: int = 4):
    """Small spectrograms of ``events`` (e.g. :func:`top_events`), each with ``context_s`` around it."""
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    rows = events.head(max_panels).to_dict("records")
    if not rows:
        return None
    nrows = int(np.ceil(len(rows) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.3 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, rows):
        start = max(0.0, r["onset_s"] - context_s)
        x, sr = excerpt(r["file"], start, r["offset_s"] + context_s, sr=16000, max_s=12.0)
        f, t, S = spectrogram(x, fs=sr, nperseg=512, noverlap=384)
        ax.pcolormesh(t + start, f / 1000, 10 * np.log10(S + 1e-12), shading="auto", cmap="magma")
        ax.axvspan(r["onset_s"], min(r["offset_s"], start + 12.0), color="w", alpha=0.12)
        ax.set_title(f"{r['class']} {r['score']:.2f}\n{Path(r['file']).name} {r['onset_s']:.0f} s", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_axis_off()
    axes[0, 0].set_ylabel("kHz", fontsize=8)
    fig.tight_layout()
    return fig
