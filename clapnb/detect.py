"""Sound-event detection on long recordings with a trained probe.

Pipeline per file (each step a pure function except the I/O at the edges):

1. windows of the probe's segment length ``L`` every ``hop`` seconds, streamed (:mod:`clapnb.stream`);
2. window embeddings with the probe's backbone and mode, cached by content: a namespace per
   (backbone, fingerprint, mode, policy, low-pass) *and recording SHA-256*, keyed by window bounds,
   so a new threshold or a retrained probe never re-embeds (:class:`clapnb.embeddings.EmbeddingCache`
   shards, flushed every ``shard_rows`` windows, so a killed run keeps what it embedded);
3. window probabilities (the probe's softmax);
4. a score timeline on a fixed grid of ``grid_s`` cells: a cell's score per class is the
   **mean** (default) or **max** of the probabilities of the windows that contain the cell's centre;
5. per-class post-processing (:class:`PostConfig`): median filter of the scores over
   ``median_s``, threshold, merge of events closer than ``merge_gap_s``, removal of events shorter
   than ``min_duration_s``, padding by ``pad_s`` each side. An event's score is the mean of its
   class's (unfiltered) timeline over the event's cells.

A ``background`` class in the probe (the site's residual sound) is never reported as an event.
Without one the *open-set rule* applies: no event in a cell where the best class's probability is
below ``open_set_threshold`` (recorded in ``detect.json``).

Resuming: each finished file gets an atomic per-file output (``DIR/files/<name>-<key>.parquet``:
its window probabilities) and a line in ``DIR/journal.jsonl``; a rerun loads finished files
instead of recomputing them, and embeds only the windows missing from the cache. Events and
exports are rebuilt from the per-file outputs each run (cheap), so changing post-processing
parameters on the same ``DIR`` recomputes nothing else.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import __version__, io
from clapnb.errors import ClapnbError, InputError

BACKGROUND = "background"
AGGREGATES = ("mean", "max")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".w64", ".rf64", ".caf",
                  ".opus", ".au", ".snd")
WINDOWS_FORMAT = "clapnb-windows/1"
#: Short units are grouped into jobs of up to this many forward batches (batches across files).
GROUP_BATCHES = 4


@dataclass(frozen=True)
class PostConfig:
    """Timeline and post-processing parameters (every one recorded in ``detect.json``)."""

    grid_s: float | None = None  # None: min(hop, 1 s)
    aggregate: str = "mean"
    threshold: float = 0.5
    class_thresholds: dict = field(default_factory=dict)  # slug -> threshold (overrides ``threshold``)
    median_s: float = 0.0  # 0: no median filter
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    pad_s: float = 0.0
    open_set_threshold: float = 0.5

    def __post_init__(self) -> None:
        bad = []
        if self.aggregate not in AGGREGATES:
            bad.append(f"aggregate={self.aggregate!r} (mean or max)")
        for k in ("threshold", "open_set_threshold"):
            if not 0 <= getattr(self, k) <= 1:
                bad.append(f"{k}={getattr(self, k)!r} (0..1)")
        for c, t in self.class_thresholds.items():
            if not 0 <= t <= 1:
                bad.append(f"threshold of {c}={t!r} (0..1)")
        for k in ("median_s", "min_duration_s", "merge_gap_s", "pad_s"):
            if not getattr(self, k) >= 0:
                bad.append(f"{k}={getattr(self, k)!r} (>= 0)")
        if self.grid_s is not None and not self.grid_s > 0:
            bad.append(f"grid_s={self.grid_s!r} (> 0)")
        if bad:
            raise InputError("invalid detection parameter(s): " + ", ".join(bad))

    def grid(self, hop_s: float) -> float:
        return float(self.grid_s) if self.grid_s is not None else min(float(hop_s), 1.0)

    def threshold_of(self, cls: str) -> float:
        return float(self.class_thresholds.get(cls, self.threshold))


# --- inputs ------------------------------------------------------------------------------------

def list_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Audio files from files, folders (searched recursively) and manifests (CSV with a ``path`` column).

    Paths are kept as given (absolute when given absolute); a manifest's relative paths are
    relative to the manifest's folder. Duplicates are dropped, order kept.
    """
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                raise InputError(f"{p}: no audio files ({', '.join(AUDIO_SUFFIXES[:4])}, ...) in this folder")
            out.extend(found)
        elif p.suffix.lower() in (".csv", ".tsv") and p.is_file():
            from clapnb.datasets import read_manifest

            df, _ = read_manifest(p, ["path"])
            if "path" not in df.columns:
                raise InputError(f"{p}: a manifest needs a 'path' column (has {list(df.columns)[:6]})")
            out.extend(str(q if Path(q).is_absolute() else p.parent / q) for q in df["path"].astype(str))
        elif p.exists() or p.suffix.lower() in AUDIO_SUFFIXES:
            out.append(os.fspath(item))  # a missing audio file is reported per file, with the others going on
        else:
            raise InputError(f"{p} does not exist (give audio files, folders or a manifest CSV)")
    seen: set[str] = set()
    return [f for f in out if not (f in seen or seen.add(f))]


# --- timeline and post-processing (pure) ---------------------------------------------------------

def timeline(windows: pd.DataFrame, probs: np.ndarray, duration_s: float, grid_s: float,
             aggregate: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Cell bounds ``(n, 2)`` and scores ``(n, K)``: per cell, mean/max over windows holding its centre."""
    n = max(1, int(math.ceil(duration_s / grid_s - 1e-9)))
    lo = np.arange(n) * grid_s
    hi = np.minimum(lo + grid_s, duration_s)
    centre = (lo + hi) / 2
    start = windows["start_s"].to_numpy()[None, :]
    end = windows["end_s"].to_numpy()[None, :]
    cover = (start <= centre[:, None]) & (centre[:, None] < end)  # (cells, windows)
    K = probs.shape[1]
    scores = np.zeros((n, K), dtype=np.float64)
    has = cover.any(axis=1)
    if aggregate == "mean":
        cnt = cover.sum(axis=1, keepdims=True)
        scores[has] = (cover[has].astype(np.float64) @ probs) / cnt[has]
    else:
        for i in np.flatnonzero(has):
            scores[i] = probs[cover[i]].max(axis=0)
    return np.stack([lo, hi], axis=1), scores


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Running median over ``width`` cells (odd; edges use the shorter window that fits)."""
    if width <= 1:
        return x
    from scipy.ndimage import median_filter as mf

    return mf(x, size=width, mode="nearest")


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def events_from_scores(cells: np.ndarray, scores: np.ndarray, classes: Sequence[str], post: PostConfig,
                       duration_s: float, file: str = "") -> pd.DataFrame:
    """Per-class events from a timeline (see the module docstring for the order of steps)."""
    grid = float(cells[0, 1] - cells[0, 0]) if len(cells) else 1.0
    width = int(round(post.median_s / grid)) if post.median_s else 0
    width = width + 1 if width and width % 2 == 0 else width
    has_bg = BACKGROUND in classes
    best = scores.max(axis=1) if len(scores) else np.zeros(0)
    rows = []
    for k, cls in enumerate(classes):
        if cls == BACKGROUND:
            continue
        s = median_filter(scores[:, k], width)
        active = s >= post.threshold_of(cls)
        if not has_bg:
            active &= best >= post.open_set_threshold
        spans = [[cells[a, 0], cells[b - 1, 1], a, b] for a, b in _runs(active)]
        merged: list[list] = []
        for sp in spans:
            if merged and sp[0] - merged[-1][1] <= post.merge_gap_s + 1e-9:
                merged[-1][1], merged[-1][3] = sp[1], sp[3]
            else:
                merged.append(sp)
        for on, off, a, b in merged:
            if off - on < post.min_duration_s - 1e-9:
                continue
            rows.append({"file": file, "onset_s": max(0.0, on - post.pad_s),
                         "offset_s": min(duration_s, off + post.pad_s), "class": cls,
                         "score": float(np.mean(scores[a:b, k]))})
    ev = pd.DataFrame(rows, columns=["file", "onset_s", "offset_s", "class", "score"])
    if post.pad_s and len(ev):  # padding can make events of one class overlap: merge them again
        out = []
        for cls, g in ev.groupby("class", sort=False):
            cur = None
            for r in g.sort_values("onset_s").to_dict("records"):
                if cur is not None and r["onset_s"] <= cur["offset_s"]:
                    cur["offset_s"] = max(cur["offset_s"], r["offset_s"])
                    cur["score"] = max(cur["score"], r["score"])
                else:
                    if cur is not None:
                        out.append(cur)
                    cur = r
            out.append(cur)
        ev = pd.DataFrame(out, columns=ev.columns)
    return ev.sort_values(["onset_s", "class"], kind="stable").reset_index(drop=True)


# --- embedding with the cache --------------------------------------------------------------------

def window_cache(backbone, probe_backbone_meta: dict, sha256: str, cache_root: str | os.PathLike | None):
    """The cache namespace of one recording's windows for this backbone and mode."""
    from clapnb.embeddings import EmbeddingCache, _backbone_meta, cache_namespace

    lowpass = probe_backbone_meta.get("lowpass_hz")
    ns = {**cache_namespace(_backbone_meta(backbone, lowpass), lowpass), "windows": WINDOWS_FORMAT,
          "recording": sha256}
    return EmbeddingCache(Path(io.cache_dir(cache_root)) / "windows", ns)


def window_key(start_s: float, end_s: float) -> str:
    return f"{start_s:.6f}-{end_s:.6f}"


def window_table(path: str, sr: int, length_s: float, hop_s: float, first: int = 0,
                 stop: int | None = None) -> tuple:
    """``(info, table, keys)`` of windows ``first..stop-1``: index, start_s, end_s, tail, and their cache keys."""
    from clapnb import audio, stream

    info = audio.probe(path)
    n_total = stream.output_frames(info.frames, info.sample_rate, sr)
    starts = stream.window_starts(n_total, sr, length_s, hop_s)
    if not starts:
        raise audio.AudioError(f"{path}: {info.duration_s:.2f} s is shorter than one {length_s:g}-s window; "
                               "nothing to analyse")
    n = int(round(length_s * sr))
    stop = len(starts) if stop is None else min(int(stop), len(starts))
    starts = starts[first:stop]
    table = pd.DataFrame({"index": np.arange(first, stop), "start_s": [s / sr for s, _ in starts],
                          "end_s": [(s + n) / sr for s, _ in starts], "tail": [t for _, t in starts]})
    keys = [window_key(a, b) for a, b in zip(table["start_s"], table["end_s"])]
    return info, table, keys


def embed_file_windows(path: str, sha256: str, backbone, probe, hop_s: float, *, cache_root=None,
                       batch_size: int = 16, shard_rows: int = 256, flush_s: float = 60.0,
                       block_s: float = 30.0, progress: bool = False, first: int = 0,
                       stop: int | None = None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Windows table (index, start_s, end_s, tail), their embeddings, and counts (cached/computed).

    ``progress``: a per-window bar for this file (hours-long files take a while on a CPU).
    ``first``/``stop``: only windows ``first..stop-1`` (one work unit of :mod:`clapnb.archive`).
    """
    from clapnb import archive
    from clapnb.embeddings import embed_waveforms

    sr = backbone.sample_rate
    info, table, keys = window_table(path, sr, probe.length_s, hop_s, first, stop)
    stop = first + len(table)
    cache = window_cache(backbone, probe.backbone, sha256, cache_root)
    found = cache.lookup(keys)
    X = np.zeros((len(keys), backbone.dim), dtype=np.float32)
    done = np.zeros(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        if k in found:
            X[i], done[i] = found[k], True
    n_cached = int(done.sum())
    pending_k: list[str] = []
    pending_x: list[np.ndarray] = []
    last = time.perf_counter()

    def flush() -> None:
        nonlocal pending_k, pending_x, last
        if pending_k:
            cache.write(pending_k, np.stack(pending_x))
        pending_k, pending_x, last = [], [], time.perf_counter()

    def compute(mine: np.ndarray) -> None:
        """Embed the windows flagged in ``mine`` (in file order), flushing shards as it goes."""
        from tqdm.auto import tqdm

        bar = tqdm(total=int(mine.sum()), desc=Path(path).name[:30], unit="window", leave=False,
                   disable=not progress)
        skip = first + int(np.argmax(mine))
        batch_i: list[int] = []
        batch_w: list[np.ndarray] = []

        def run_batch() -> None:
            E = embed_waveforms(backbone, batch_w, probe.backbone, batch_size=batch_size)
            for i, e in zip(batch_i, E):
                X[i], done[i] = e, True
                pending_k.append(keys[i])
                pending_x.append(e)
            bar.update(len(batch_i))
            batch_i.clear()
            batch_w.clear()
            if len(pending_k) >= shard_rows or time.perf_counter() - last >= flush_s:
                flush()

        try:
            for w in archive.iter_window_range(path, probe.length_s, hop_s, sr, skip, stop, block_s=block_s):
                if not mine[w.index - first]:
                    continue
                batch_i.append(w.index - first)
                batch_w.append(w.wave)
                if len(batch_w) == batch_size:
                    run_batch()
            if batch_w:
                run_batch()
        finally:
            bar.close()
            flush()

    n_computed = 0
    if not done.all():
        # Another process (a second detect, a rerun Dask unit) may be embedding the same windows into
        # this cache: claim what this one computes, wait for what others claimed (locks.Claims).
        from clapnb import locks

        def refresh() -> set[str]:
            more = cache.lookup([k for k, d in zip(keys, done) if not d])
            for i, k in enumerate(keys):
                if not done[i] and k in more:
                    X[i], done[i] = more[k], True
            return {keys[i] for i in np.flatnonzero(~done)}

        def choose(claimed: set[str]) -> dict[str, int]:
            return {keys[i]: int(i) for i in np.flatnonzero(~done) if keys[i] not in claimed}

        def compute_claimed(mine: dict[str, int]) -> None:
            mask = np.zeros(len(keys), dtype=bool)
            mask[list(mine.values())] = True
            compute(mask)

        n_computed = locks.fill_claimed(cache.dir, refresh=refresh, choose=choose, compute=compute_claimed)
    n_cached = len(keys) - n_computed
    return table, X, {"n_windows": len(keys), "n_cached": n_cached, "n_computed": len(keys) - n_cached,
                      "duration_s": info.duration_s, "sample_rate": info.sample_rate, "channels": info.channels,
                      "cache_namespace": str(cache.dir)}


# --- the work unit (clapnb.archive) ------------------------------------------------------------------------------------

def worker_backbone(key: str, meta: dict, device: str):
    """The backbone of ``key`` in this process: registered by the client, or loaded once from ``meta``."""
    from clapnb.dask_executor import process_cached

    def load():
        from clapnb.backbones import backbone_from_metadata

        return backbone_from_metadata(meta, device=device)

    return process_cached(key, load)


def worker_probe(path: str, sha256: str):
    from clapnb.dask_executor import process_cached
    from clapnb import probe as probe_mod

    return process_cached(f"probe:{sha256}", lambda: probe_mod.load_probe(path))


def run_unit(unit: dict) -> dict:
    """Embed and score one unit's windows; write its parquet atomically. Returns counts for the journal."""
    from clapnb import probe as probe_mod

    t0 = time.perf_counter()
    probe = worker_probe(unit["probe"], unit["probe_sha256"])
    backbone = worker_backbone(unit["backbone_key"], unit["backbone_meta"], unit["device"])
    table, X, counts = embed_file_windows(
        unit["path"], unit["sha256"], backbone, probe, unit["hop_s"], cache_root=unit["cache"],
        batch_size=unit["batch_size"], block_s=unit["block_s"], first=unit["first"], stop=unit["stop"],
        progress=unit.get("progress", False))
    P = probe.probabilities(probe_mod.check_features(X, f"window embeddings of {unit['path']}"))
    _unit_table(unit, probe, table, P)
    return {"n_windows": counts["n_windows"], "n_cached": counts["n_cached"], "n_computed": counts["n_computed"],
            "seconds": round(time.perf_counter() - t0, 3), "pid": os.getpid()}


def embed_across_units(units: list[dict], backbone, probe) -> list:
    """Windows and embeddings of several (short) units, their uncached windows embedded in shared batches.

    Per unit: look its windows up and claim the missing ones nobody else claimed (as
    :func:`embed_file_windows` does), decode them; the windows of all the units then go through
    the backbone in batches of ``batch_size`` that run across files; each unit's rows are written
    to its recording's cache before its claim is released. Returns per unit ``(table, X, counts)``,
    or the :class:`ClapnbError` that stopped it (unreadable audio): the other units go on. A unit
    whose windows another process had claimed waits for them in :func:`embed_file_windows`.
    """
    from clapnb import archive, locks
    from clapnb.embeddings import embed_waveforms

    sr = backbone.sample_rate
    batch_size = int(units[0]["batch_size"])
    state: list = []
    held: list[dict] = []
    try:
        for u in units:
            try:
                info, table, keys = window_table(u["path"], sr, probe.length_s, u["hop_s"], u["first"], u["stop"])
            except ClapnbError as exc:
                state.append(exc)
                continue
            cache = window_cache(backbone, probe.backbone, u["sha256"], u["cache"])
            claims = locks.Claims(cache.dir)
            with claims.guard():
                found = cache.lookup(keys)
                busy = claims.others()
                claimed = set().union(*busy.values()) if busy else set()
                mine = {int(ix): row for row, (ix, k) in enumerate(zip(table["index"], keys))
                        if k not in found and k not in claimed}
                h = {"unit": u, "info": info, "table": table, "keys": keys, "cache": cache, "claims": claims,
                     "mine": mine, "token": claims.claim([keys[r] for r in mine.values()]) if mine else None,
                     "X": np.zeros((len(keys), backbone.dim), dtype=np.float32),
                     "done": np.zeros(len(keys), dtype=bool), "computed": []}
            for r, k in enumerate(keys):
                if k in found:
                    h["X"][r], h["done"][r] = found[k], True
            h["pos"], h["failed"] = len(state), False
            state.append(h)
            if h["token"] is not None:
                held.append(h)
        batch: list[tuple[dict, int, np.ndarray]] = []

        def run_batch() -> None:
            E = embed_waveforms(backbone, [w for _, _, w in batch], probe.backbone, batch_size=batch_size)
            for (h, r, _), e in zip(batch, E):
                h["X"][r], h["done"][r] = e, True
                h["computed"].append(r)
            batch.clear()

        for h in held:
            u = h["unit"]
            try:  # the unit's windows decoded first: a file that fails part-way adds nothing
                waves = [(h["mine"][w.index], w.wave) for w in archive.iter_window_range(
                    u["path"], probe.length_s, u["hop_s"], sr, u["first"], u["stop"], block_s=u["block_s"])
                    if w.index in h["mine"]]
            except ClapnbError as exc:
                state[h["pos"]], h["failed"] = exc, True
                continue
            for r, wave in waves:
                batch.append((h, r, wave))
                if len(batch) == batch_size:
                    run_batch()
        if batch:
            run_batch()
        for h in held:
            if h["computed"] and not h["failed"]:
                h["cache"].write([h["keys"][r] for r in h["computed"]], h["X"][h["computed"]])
    finally:
        for h in held:
            with h["claims"].guard():
                h["claims"].release(h["token"])
    out: list = []
    for h in state:
        if isinstance(h, BaseException):
            out.append(h)
            continue
        u = h["unit"]
        n_computed = len(h["computed"])
        if not h["done"].all():  # rows another process was computing: wait for them there
            try:
                table, X, counts = embed_file_windows(
                    u["path"], u["sha256"], backbone, probe, u["hop_s"], cache_root=u["cache"],
                    batch_size=batch_size, block_s=u["block_s"], first=u["first"], stop=u["stop"])
            except ClapnbError as exc:
                out.append(exc)
                continue
            h["X"], n_computed = X, n_computed + counts["n_computed"]
        info = h["info"]
        out.append((h["table"], h["X"], {"n_windows": len(h["keys"]), "n_cached": len(h["keys"]) - n_computed,
                                         "n_computed": n_computed, "duration_s": info.duration_s}))
    return out


def _unit_table(unit: dict, probe, table: pd.DataFrame, P: np.ndarray) -> pd.DataFrame:
    wt = table.copy()
    for k, c in enumerate(probe.classes):
        wt[c] = P[:, k].astype(np.float64)
    io.atomic_write_parquet(unit["target"], wt)
    return wt


def run_units(units: list[dict]) -> list[dict]:
    """A job of one or more units: per unit its journal counts, or ``{"error": reason}`` (bad audio).

    Several units (short files, see :func:`clapnb.archive.group_units`) share their forward
    batches (:func:`embed_across_units`); each unit's output is the one it
    would have alone (per-window embeddings: bit for bit; batched torch models may differ in the
    last bits, as a resumed run's batches may).
    """
    from clapnb import probe as probe_mod

    if len(units) == 1:
        try:
            return [run_unit(units[0])]
        except ClapnbError as exc:
            return [{"error": str(exc)}]
    t0 = time.perf_counter()
    u = units[0]
    probe = worker_probe(u["probe"], u["probe_sha256"])
    backbone = worker_backbone(u["backbone_key"], u["backbone_meta"], u["device"])
    parts = embed_across_units(units, backbone, probe)
    out: list[dict] = []
    for unit, part in zip(units, parts):
        if isinstance(part, BaseException):
            out.append({"error": str(part)})
            continue
        table, X, counts = part
        # per unit, as run_unit does: a matrix product's last bits may depend on its number of rows
        P = probe.probabilities(probe_mod.check_features(X, f"window embeddings of {unit['path']}"))
        _unit_table(unit, probe, table, P)
        out.append({"n_windows": counts["n_windows"], "n_cached": counts["n_cached"],
                    "n_computed": counts["n_computed"], "pid": os.getpid(),
                    "seconds": round((time.perf_counter() - t0) / len(units), 3)})
    return out


# --- the run --------------------------------------------------------------------------------------

@dataclass
class DetectResult:
    events: pd.DataFrame
    scores: pd.DataFrame
    record: dict

    @property
    def n_skipped(self) -> int:
        return sum(f.get("status") == "skipped" for f in self.record["files"])


def _safe_name(path: str) -> str:
    stem = Path(path).name
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:80]


def _file_output(out: Path, path: str, key: str) -> Path:
    return out / "files" / f"{_safe_name(path)}-{key}.parquet"


def _journal(out: Path, entry: dict) -> None:
    """Append one line to ``journal.jsonl`` (a log of what happened; the per-file outputs are the truth)."""
    with open(out / "journal.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(io.to_jsonable(entry), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def detect_files(probe_path: str | os.PathLike, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                 hop_s: float | None = None, post: PostConfig = PostConfig(), name_format: str | None = None,
                 backbone=None, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 16, progress: bool = False, block_s: float = 30.0, executor=None,
                 chunk_s: float | None = None, estimate: bool = False, dry_run: bool = False,
                 estimate_workers: int | None = None, group_windows: int | None = None) -> DetectResult:
    """Detect events in every input; write the outputs in ``out_dir``; skip unreadable files with a reason.

    ``executor``: where the work units run (:mod:`clapnb.executor`, :mod:`clapnb.dask_executor`;
    default: this process). ``chunk_s``: split files into units of this many seconds
    (:mod:`clapnb.archive`). ``estimate``: measure a few windows and print the expected wall time
    and storage on stderr first; ``dry_run``: only that (``estimate_workers`` workers assumed
    when no executor is given). ``group_windows``: short units are run together, up to this many
    windows per job, their windows embedded in shared batches (batches across files; default
    ``GROUP_BATCHES`` x ``batch_size``, 0: one unit per job).
    """
    from clapnb import audio, events as ev_mod, probe as probe_mod, stream, timebase

    t0 = time.perf_counter()
    probe = probe_mod.load_probe(probe_path)
    if probe.length_s is None:
        raise InputError(f"{probe_path} records no segment length; retrain it with 'clapnb probe'")
    hop_s = probe.length_s / 2 if hop_s is None else float(hop_s)
    stream.check_window(probe.length_s, hop_s)
    grid_s = post.grid(hop_s)
    unknown = sorted(set(post.class_thresholds) - set(probe.classes))
    if unknown:
        raise InputError(f"--class-threshold names class(es) {unknown} that the probe does not have "
                         f"({', '.join(probe.classes)})")
    if name_format:
        timebase.format_regex(name_format)  # refuse a bad format before any work
    files = list_inputs(inputs)
    if not files:
        raise InputError("no input files given to detect")
    load_s = None  # what a fresh worker process pays once before its first window
    if backbone is None:
        from clapnb.backbones import backbone_from_metadata

        t_load = time.perf_counter()
        backbone = backbone_from_metadata(probe.backbone, device=device)
        load_s = time.perf_counter() - t_load
    probe_sha = io.file_sha256(probe_path)
    out = Path(out_dir)
    (out / "files").mkdir(parents=True, exist_ok=True)
    from clapnb.locks import run_lock

    with run_lock(out, command="clapnb detect"):  # a second detect on the same DIR is refused
        has_bg = BACKGROUND in probe.classes
        classes = list(probe.classes)

        from tqdm.auto import tqdm

        from clapnb import archive
        from clapnb.dask_executor import PROCESS_CACHE, make_executor

        # 1. plan: per file its output key and, unless its output exists, its work units
        plans: list[dict] = []
        for path in files:
            entry: dict = {"file": path}
            plan = {"entry": entry, "path": path, "units": [], "wt": None}
            try:
                if not os.path.isfile(path):
                    raise audio.AudioError(f"{path}: no such file")
                info = audio.probe(path)
                sha = io.file_sha256(path)
                key = io.fingerprint([WINDOWS_FORMAT, sha, probe_sha, probe.length_s, hop_s])[:12]
                target = _file_output(out, path, key)
                plan.update(info=info, sha=sha, key=key, target=target)
                if target.is_file():
                    try:
                        plan["wt"] = pd.read_parquet(target)
                    except Exception:  # a damaged output is recomputed (embeddings come from the cache)
                        plan["wt"] = None
                if plan["wt"] is None:
                    n_total = stream.output_frames(info.frames, info.sample_rate, backbone.sample_rate)
                    starts = stream.window_starts(n_total, backbone.sample_rate, probe.length_s, hop_s)
                    if not starts:
                        raise audio.AudioError(f"{path}: {info.duration_s:.2f} s is shorter than one "
                                               f"{probe.length_s:g}-s window; nothing to analyse")
                    ranges = archive.chunk_ranges(np.array([s for s, _ in starts]) / backbone.sample_rate, chunk_s)
                    for a, b in ranges:
                        u = archive.unit_output(out, _safe_name(path), key, a, b)
                        plan["units"].append({"first": a, "stop": b, "target": str(u), "path": path, "sha256": sha})
            except (audio.AudioError, InputError, ClapnbError) as exc:
                entry.update(status="skipped", reason=str(exc))
            plans.append(plan)

        # 2. the units whose output is missing, the cost estimate, then the work
        bkey = "backbone:" + io.fingerprint([probe.backbone, device])
        local_key = f"{bkey}#{id(backbone)}"  # this process's backbone object, under a key only it knows
        PROCESS_CACHE[local_key] = backbone
        common = {"probe": os.path.abspath(probe_path), "probe_sha256": probe_sha, "backbone_meta": probe.backbone,
                  "device": device, "hop_s": hop_s, "cache": None if cache_dir is None else os.path.abspath(cache_dir),
                  "batch_size": batch_size, "block_s": block_s}
        todo: list[dict] = []
        n_windows_total = 0
        for plan in plans:
            for u in plan["units"]:
                n_windows_total += u["stop"] - u["first"]
                if archive.read_unit(Path(u["target"])) is None:
                    todo.append({**common, **u})
        for plan in plans:
            if plan["wt"] is not None:
                n_windows_total += len(plan["wt"])
        n_todo = sum(u["stop"] - u["first"] for u in todo)
        own_executor = executor is None
        if executor is None and not dry_run:
            executor = make_executor(None)
        workers = executor.workers if executor is not None else max(1, int(estimate_workers or 1))
        est = None
        if estimate or dry_run:
            measured = None
            longest = sorted(todo, key=lambda u: u["first"] - u["stop"])  # the most windows to time
            for path in dict.fromkeys(u["path"] for u in longest):  # the first of them that decodes
                try:
                    measured = archive.seconds_per_window(backbone, probe, path, hop_s, batch_size=batch_size,
                                                          block_s=block_s)
                    break
                except audio.AudioError:
                    continue
            fresh = executor is not None and (hasattr(executor, "client") or executor.workers > 1)
            est = archive.estimate(n_todo, n_windows_total, measured, workers, backbone.dim, len(classes),
                                   startup_s=(load_s or 0.0) + measured["warmup_s"] if fresh and measured else 0.0)
            print(archive.estimate_line(est), file=sys.stderr, flush=True)
        if dry_run:
            PROCESS_CACHE.pop(local_key, None)
            return DetectResult(ev_mod.empty_events(), pd.DataFrame(), {"dry_run": True, "estimate": est,
                                                                        "n_files": len(files), "files": [p["entry"] for p in plans]})
        link = getattr(executor, "dashboard_link", None)
        if link:
            print(f"Dask dashboard: {link}", file=sys.stderr, flush=True)
        # in this process the units use the backbone loaded above; other processes load their own once
        in_process = not hasattr(executor, "client") and executor.workers == 1
        for u in todo:
            u["backbone_key"] = local_key if in_process else bkey
            u["progress"] = progress and in_process  # the per-file bar; workers' bars would interleave
        # short units share forward batches (batches across files), up to group_windows windows per job,
        # and never so few jobs that workers would wait
        if group_windows is None:
            group_windows = GROUP_BATCHES * batch_size
        group_windows = min(int(group_windows), max(1, n_todo // (4 * max(1, workers))))
        jobs = archive.group_units(todo, group_windows)
        by_target = {u["target"]: plan for plan in plans for u in plan["units"]}
        left = {id(plan): sum(archive.read_unit(Path(u["target"])) is None for u in plan["units"])
                for plan in plans}
        counts_of: dict[int, dict] = {}
        t_work = time.perf_counter()

        def assemble(plan: dict) -> None:
            """All units of a file done: its window table, written as the file's output; units removed."""
            parts = [archive.read_unit(Path(u["target"])) for u in plan["units"]]
            if any(p is None for p in parts):
                return
            wt = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
            io.atomic_write_parquet(plan["target"], wt)
            for u in plan["units"]:
                Path(u["target"]).unlink(missing_ok=True)
            plan["wt"] = wt

        try:
            for plan in plans:
                if plan["units"] and left[id(plan)] == 0 and plan["wt"] is None:
                    assemble(plan)  # a killed client had finished every unit of this file
            bar = tqdm(total=n_todo, desc="detect", unit="window", disable=not progress or not n_todo, smoothing=0.1)
            for job, fut in executor.map_unordered(run_units, jobs):
                exc = fut.exception()
                if exc is not None and not isinstance(exc, (audio.AudioError, InputError, ClapnbError)) and \
                        type(exc).__name__ != "KilledWorker":
                    raise exc
                outcomes = [exc] * len(job) if exc is not None else fut.result()
                for u, res in zip(job, outcomes):
                    plan = by_target[u["target"]]
                    line = {"unit": [u["first"], u["stop"]], "file": u["path"], "time": time.time()}
                    if isinstance(res, BaseException) or "error" in res:
                        reason = res["error"] if isinstance(res, dict) else str(res) \
                            if type(res).__name__ != "KilledWorker" else \
                            f"{u['path']}: windows {u['first']}..{u['stop'] - 1} killed their worker repeatedly ({res})"
                        plan["entry"].update(status="skipped", reason=reason)
                        _journal(out, {**line, "status": "failed", "reason": reason})
                    else:
                        c = counts_of.setdefault(id(plan), {"n_windows": 0, "n_cached": 0, "n_computed": 0})
                        for k in c:
                            c[k] += res[k]
                        _journal(out, {**line, "status": "done", **res})
                        left[id(plan)] -= 1
                        if left[id(plan)] == 0 and plan["entry"].get("status") != "skipped":
                            assemble(plan)
                    bar.update(u["stop"] - u["first"])
            bar.close()
        finally:
            PROCESS_CACHE.pop(local_key, None)
            if own_executor:
                executor.close()
        work_s = time.perf_counter() - t_work

        # 3. per file: timeline and events from its window table
        statuses, all_events, all_scores, durations, high_freq = [], [], [], {}, {}
        for plan in plans:
            entry, path = plan["entry"], plan["path"]
            try:
                if entry.get("status") == "skipped":
                    raise ClapnbError(entry["reason"])
                info, wt, target = plan["info"], plan["wt"], plan["target"]
                reused = not plan["units"]
                if reused:
                    counts = {"n_windows": len(wt), "n_cached": len(wt), "n_computed": 0}
                else:
                    counts = counts_of.get(id(plan), {"n_windows": len(wt), "n_cached": len(wt), "n_computed": 0})
                    counts = {**counts, "n_windows": len(wt)}
                counts.update(duration_s=info.duration_s, sample_rate=info.sample_rate, channels=info.channels)
                if len(plan["units"]) > 1:
                    counts["units"] = len(plan["units"])
                probs = wt[classes].to_numpy(dtype=np.float64)
                cells, scores = timeline(wt, probs, info.duration_s, grid_s, post.aggregate)
                st = timebase.start_time(path, name_format)
                fev = events_from_scores(cells, scores, classes, post, info.duration_s, file=path)
                sc = pd.DataFrame(scores, columns=classes)
                sc.insert(0, "offset_s", cells[:, 1])
                sc.insert(0, "onset_s", cells[:, 0])
                sc.insert(0, "file", path)
                if st.time is not None:
                    fev["start_time"] = timebase.absolute(st.time, fev["onset_s"])
                    fev["end_time"] = timebase.absolute(st.time, fev["offset_s"])
                    sc["start_time"] = timebase.absolute(st.time, sc["onset_s"])
                all_events.append(fev)
                all_scores.append(sc)
                durations[path] = info.duration_s
                high_freq[path] = min(info.sample_rate, backbone.sample_rate) / 2
                entry.update(status="done" if not reused else "reused", output=str(target.relative_to(out)),
                             sha256=plan["sha"], n_events=len(fev), **counts, **st.to_dict())
            except (audio.AudioError, InputError, ClapnbError) as exc:
                entry.update(status="skipped", reason=str(exc))
            statuses.append(entry)
            _journal(out, {**entry, "time": time.time()})

        with_times = any("start_time" in e.columns for e in all_events)
        events = (pd.concat([e for e in all_events if len(e)] or [ev_mod.empty_events(with_times)], ignore_index=True)
                  if all_events else ev_mod.empty_events())
        events = ev_mod.normalise(events)
        scores = pd.concat(all_scores, ignore_index=True) if all_scores else pd.DataFrame(
            columns=["file", "onset_s", "offset_s", *classes])
        ev_mod.write_events(events, out)
        io.atomic_write_parquet(out / "scores.parquet", scores)
        aud = out / "audacity"
        aud.mkdir(exist_ok=True)
        names: dict[str, str] = {}
        for f in durations:
            name = Path(f).stem
            if name in names.values():
                name = f"{name}-{io.fingerprint([f])[:6]}"
            names[f] = name
            ev_mod.write_audacity(events[events["file"] == f], aud / f"{name}.txt")
        ev_mod.write_raven(events, out / "raven_selections.txt", durations, high_freq)
        random_weights = bool(probe.backbone.get("random_weights", False))
        n_skipped = sum(s["status"] == "skipped" for s in statuses)
        record = {
            "probe": {"path": os.path.abspath(probe_path), "sha256": probe_sha, "classes": classes,
                      "length_s": probe.length_s},
            "backbone": probe.backbone, "mode": probe.backbone.get("precision", "fp32"),
            "random_weights": random_weights,
            "parameters": {**asdict(post), "length_s": probe.length_s, "hop_s": hop_s, "grid_s": grid_s,
                           "start_time_from_name": name_format, "batch_size": batch_size, "block_s": block_s,
                           "resampler": stream.RESAMPLER},
            "background": {"in_probe": has_bg,
                           "rule": ("the probe's 'background' class is never reported as an event" if has_bg else
                                    f"open-set rule: no event where the best class's probability is below "
                                    f"{post.open_set_threshold} (the probe has no 'background' class)")},
            "timeline": f"{post.aggregate} of the probabilities of the windows holding each {grid_s:g}-s cell's centre",
            "event_score": "mean of the class's timeline score over the event's cells (before the median filter)",
            "files": statuses, "n_files": len(files), "n_skipped": n_skipped,
            "n_events": len(events), "outputs": {"events": ["events.csv", "events.parquet"], "scores": "scores.parquet",
                                                 "audacity": {f: f"audacity/{n}.txt" for f, n in names.items()},
                                                 "raven": "raven_selections.txt", "journal": "journal.jsonl"},
            "seconds": round(time.perf_counter() - t0, 3), "work_seconds": round(work_s, 3),
            "estimate": est, "executor": {"type": type(executor).__name__, "workers": workers,
                                          "scheduler": getattr(executor, "scheduler", None)},
            "chunk_s": chunk_s, "n_units": sum(len(p["units"]) for p in plans), "n_units_run": len(todo),
            "group_windows": group_windows, "n_jobs": len(jobs),
            "clapnb_version": __version__,
        }
        if random_weights:
            from clapnb.embeddings import RANDOM_WEIGHTS_WARNING

            record["warning"] = RANDOM_WEIGHTS_WARNING
        io.atomic_write_json(out / "detect.json", record)
        return DetectResult(events, scores, record)


def summary(result: DetectResult) -> str:
    """The lines ``clapnb detect`` prints."""
    r = result.record
    lines = []
    if r["random_weights"]:
        lines.append("WARNING: RANDOM-WEIGHTS stand-in backbone: these detections are meaningless (plumbing only)")
    done = [f for f in r["files"] if f["status"] != "skipped"]
    lines.append(f"{len(done)} of {r['n_files']} file(s) analysed, {r['n_skipped']} skipped; "
                 f"{r['n_events']} event(s); {r['background']['rule']}")
    for f in r["files"]:
        if f["status"] == "skipped":
            lines.append(f"skipped: {f['reason']}")
    if len(result.events):
        counts = result.events.assign(d=result.events["offset_s"] - result.events["onset_s"]).groupby("class")
        for cls, g in counts:
            lines.append(f"  {cls}: {len(g)} event(s), {g['d'].sum():.1f} s")
    return "\n".join(lines)


def parse_class_thresholds(items: Iterable[str]) -> dict[str, float]:
    out = {}
    for item in items:
        cls, sep, value = item.partition("=")
        try:
            out[cls.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--class-threshold wants CLASS=VALUE (e.g. dogs=0.7), got {item!r}")
    return out
