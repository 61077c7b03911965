"""Detection over an archive: work units, the per-process backbone, the cost estimate.

A **work unit** is a range of window indices ``[first, stop)`` of one recording: the whole file,
or one time chunk of ``chunk_s`` seconds of a long file (the windows whose *start* lies in the
chunk). Its audio runs from the first window's start to the last window's end, so consecutive
units overlap by up to one window length of audio but never share a window: no window is lost or
doubled, and the concatenated unit outputs are the unchunked file's windows, bit for bit.

A unit is a module-level function (:func:`clapnb.detect.run_unit`) of a plain dict, so the same unit runs in
this process, in a local worker process or on a Dask worker. It embeds its windows (through the
shared embedding cache), applies the probe and writes one atomic parquet of window probabilities
(``DIR/units/...``); rerunning it rewrites the same bytes. The client (:func:`clapnb.detect.detect_files`)
plans the units, skips those whose output exists, journals each finished unit and assembles a
file's output once all its units are done.

The backbone and the probe are loaded once per process (:func:`clapnb.dask_executor.process_cached`,
keyed by the backbone's metadata and device, or by the probe's SHA-256), never sent with a unit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import io
from clapnb.estimate import human_b as _human_b, human_s as _human_s, wall_seconds
from clapnb.dask_executor import PROCESS_CACHE
from clapnb.errors import InputError


def parse_duration(text: str | float | None) -> float | None:
    """``"1h"``, ``"30min"``, ``"90s"``, ``"3600"`` -> seconds; None/"0"/"" -> None (no chunking)."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = str(text).strip().lower()
        if t in ("", "0", "none", "off"):
            return None
        units = (("min", 60.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("d", 86400.0))
        factor = 1.0
        for suffix, f in units:
            if t.endswith(suffix):
                t, factor = t[: -len(suffix)], f
                break
        try:
            value = float(t) * factor
        except ValueError:
            raise InputError(f"--chunk wants a duration like 1h, 30min or 600s, got {text!r}") from None
    if not value > 0:
        raise InputError(f"--chunk must be positive, got {text!r}")
    return value


def chunk_ranges(starts_s: np.ndarray, chunk_s: float | None) -> list[tuple[int, int]]:
    """Window index ranges ``[first, stop)``: the windows whose start lies in each ``chunk_s`` chunk."""
    n = len(starts_s)
    if n == 0:
        return []
    if not chunk_s:
        return [(0, n)]
    chunk_of = np.floor(np.asarray(starts_s, dtype=np.float64) / chunk_s + 1e-9).astype(np.int64)
    edges = np.flatnonzero(np.diff(chunk_of)) + 1
    bounds = [0, *edges.tolist(), n]
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def iter_window_range(path: str, length_s: float, hop_s: float, sr: int, first: int, stop: int, *,
                      block_s: float = 30.0) -> Iterator:
    """Windows ``first..stop-1`` of a recording, equal to those :func:`clapnb.stream.iter_windows` yields.

    The file is read from the first window's start (a seek), or when it must be resampled from the
    start of that window's resampling segment (:class:`clapnb.stream.Segments`: each segment is
    resampled on its own, so the samples do not depend on where decoding began), and no further
    than the last window needs.
    """
    from clapnb import stream

    for w in stream.iter_windows(path, length_s, hop_s, sr, block_s=block_s, skip=first):
        if w.index >= stop:
            return
        yield w


def group_units(units: list[dict], max_windows: int | None) -> list[list[dict]]:
    """Jobs of units: consecutive units of fewer than ``max_windows`` windows packed together up to that many.

    A job's windows share forward batches (:func:`clapnb.detect.run_units`), so an archive of many
    short files fills whole batches instead of one small batch per file. ``max_windows`` 0/None:
    one unit per job. Every unit is in exactly one job, in order.
    """
    if not max_windows or max_windows <= 1:
        return [[u] for u in units]
    jobs: list[list[dict]] = []
    cur: list[dict] = []
    n = 0
    for u in units:
        w = int(u["stop"]) - int(u["first"])
        if cur and (w >= max_windows or n + w > max_windows):
            jobs.append(cur)
            cur, n = [], 0
        if w >= max_windows:
            jobs.append([u])
            continue
        cur.append(u)
        n += w
    if cur:
        jobs.append(cur)
    return jobs


# --- unit outputs ---------------------------------------------------------------------------------

def unit_output(out: Path, name: str, key: str, first: int, stop: int) -> Path:
    return out / "units" / f"{name}-{key}-{first:08d}-{stop:08d}.parquet"


def read_unit(path: Path) -> pd.DataFrame | None:
    """A finished unit's table, or None when it is missing or unreadable (then it is rerun)."""
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception:
        return None


# --- the cost estimate ----------------------------------------------------------------------------

def seconds_per_window(backbone, probe, path: str, hop_s: float, *, n: int = 8, batch_size: int = 16,
                       block_s: float = 30.0) -> dict:
    """Decode and embed ``n`` windows of ``path`` on this machine (after one warm-up window)."""
    from clapnb import stream
    from clapnb.embeddings import embed_waveforms

    t0 = time.perf_counter()
    waves = []
    for w in stream.iter_windows(path, probe.length_s, hop_s, backbone.sample_rate, block_s=block_s):
        waves.append(w.wave)
        if len(waves) > n:
            break
    decode = (time.perf_counter() - t0) / max(1, len(waves))
    t_warm = time.perf_counter()
    embed_waveforms(backbone, waves[:1], probe.backbone, batch_size=batch_size)  # warm-up (JIT, lazy init)
    warmup = time.perf_counter() - t_warm
    timed = waves[1:] or waves
    t1 = time.perf_counter()
    embed_waveforms(backbone, timed, probe.backbone, batch_size=batch_size)
    embed = (time.perf_counter() - t1) / len(timed)
    return {"windows_measured": len(timed), "decode_s": decode, "embed_s": embed, "s_per_window": decode + embed,
            "warmup_s": warmup, "measured_on": path}


def estimate(n_todo: int, n_total: int, measured: dict | None, workers: int, dim: int, n_classes: int,
             startup_s: float = 0.0) -> dict:
    """Expected wall time (worker start-up + windows x s/window / workers) and storage of a detection job.

    ``startup_s``: what each fresh worker pays once (backbone load + first-call warm-up, as measured
    here); 0 in this process, where the backbone is already loaded.
    """
    cache_bytes = n_todo * (dim * 4 + 48)  # float32 row + its key in a shard
    output_bytes = n_total * (4 + n_classes) * 8  # window tables (index, start, end, tail, probabilities)
    spw = measured["s_per_window"] if measured else None
    return {"windows_total": int(n_total), "windows_todo": int(n_todo), "workers": int(workers),
            "s_per_window": spw, "wall_s": wall_seconds(n_todo, spw, workers, startup_s),
            "startup_s": float(startup_s),
            "storage_bytes": int(cache_bytes + output_bytes), "cache_bytes": int(cache_bytes),
            "output_bytes": int(output_bytes), "measurement": measured}


def estimate_line(est: dict) -> str:
    if not est["windows_todo"]:
        return f"estimate: nothing to compute ({est['windows_total']} window(s) already done)"
    if est["measurement"] is None:
        return f"estimate: {est['windows_todo']} window(s) to compute; no file could be decoded to time them"
    return (f"estimate: {est['windows_todo']} of {est['windows_total']} window(s) to compute x "
            f"{est['s_per_window'] * 1000:.1f} ms/window / {est['workers']} worker(s)"
            + (f" + {est['startup_s']:.1f} s worker start-up" if est.get("startup_s") else "")
            + f" = {_human_s(est['wall_s'])} "
            f"wall; storage ~{_human_b(est['storage_bytes'])} (cache {_human_b(est['cache_bytes'])}, "
            f"outputs {_human_b(est['output_bytes'])}); measured on {est['measurement']['windows_measured']} "
            "window(s) on this machine")


def forget_backbone(key: str) -> None:
    PROCESS_CACHE.pop(key, None)
