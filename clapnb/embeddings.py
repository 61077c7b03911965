"""Embeddings of a segments table: decode once, batch, and cache on disk by content.

Zero-shot, the probe and every notebook read the same embeddings, so they are computed once per
(audio content, backbone, weights, input policy) and kept in a content-keyed cache:

* a *namespace* folder per backbone configuration: ``<cache>/<backbone>-<fingerprint>/`` where the
  fingerprint covers the backbone name, its weights' SHA-256 (or feature configuration), the input
  policy and duration, the sample rate, the optional low-pass and the cache format;
* inside it, *shards* ``shard-<hash>.npz`` holding ``keys`` (one per segment: recording SHA-256,
  start/end, augmentation SNR and seed) and ``X`` (float32 rows). Shards are written atomically
  after whole batches, every ``shard_rows`` rows or ``flush_s`` seconds and when a run stops
  (also on Ctrl-C), so a killed run loses at most one shard's worth of work and the next run
  computes only what is missing, in the same batches, hence the same bytes.

Decoding runs a few recordings ahead in worker threads, so that on a GPU it overlaps the forward
pass instead of adding to it. The work order is fixed by the full table (recordings in order of first appearance, segments in
table order), so a resumed run forms exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import sys
import time
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import __version__, audio, io
from clapnb.errors import ClapnbError, InputError
from clapnb.segments import read_segments, table_lowpass
from clapnb.store import LengthFolder

#: Bump when the key or shard layout changes: old caches are then simply not found.
CACHE_FORMAT = 1
#: A namespace gets its index once it holds more shards than this (until then a lookup scans them).
INDEX_MIN_SHARDS = 4
REQUIRED_COLUMNS = ("path", "sha256", "start_s", "end_s")
RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS: computed with the offline stand-in, not a trained CLAP model; "
                          "these numbers are NOT CLAP results")


class EmbeddingError(ClapnbError):
    """A backbone produced unusable embeddings (wrong shape, NaN/inf)."""


@dataclass
class EmbeddingSet:
    """``X[i]`` is the embedding of ``segments.iloc[i]``; ``meta`` records how it was made."""

    X: np.ndarray
    segments: pd.DataFrame
    meta: dict


# --- audio -----------------------------------------------------------------------------------

def _check_segments(segments: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in segments.columns]
    if missing:
        raise InputError(f"the segments table lacks columns {missing}; build it with `clapnb segments`")
    if len(segments) == 0:
        raise InputError("the segments table is empty: nothing to embed")


def _is_augmented(row) -> bool:
    return bool(row.get("augmented", False)) and not pd.isna(row.get("snr_db"))


def _recording_segments(path: str, sha256: str, positions: np.ndarray, bounds: np.ndarray, noise: list,
                        sr: int, lowpass_hz: float | None, verify_sha256: bool,
                        channel: str = audio.MIX) -> list[tuple[int, np.ndarray]]:
    """All segments of one recording: ``bounds[i]`` = (start_s, end_s), ``noise[i]`` = (snr_db, seed) or None."""
    if not os.path.lexists(path):
        raise InputError(f"{path}: the recording is missing (deleted or moved since the segments table was "
                         "built); put it back, or rebuild the segments with `clapnb segments`")
    if verify_sha256 and os.path.isfile(path) and io.file_sha256(path) != sha256:
        raise InputError(f"{path} changed since the segments table was built (its SHA-256 is no longer "
                         f"{sha256[:12]}...); rebuild the segments with `clapnb segments`")
    x = audio.load(path, sr=sr, lowpass_hz=lowpass_hz, channel=channel)
    out = []
    for pos in positions:
        seg = audio.cut(x, sr, bounds[pos, 0], bounds[pos, 1])
        if noise[pos] is not None:
            seg = audio.add_noise(seg, *noise[pos])
        out.append((int(pos), seg))
    return out


def iter_segment_audio(segments: pd.DataFrame, sr: int = audio.TARGET_SR, lowpass_hz: float | None = None,
                       *, verify_sha256: bool = True, workers: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(position, waveform)`` for every row, decoding each recording once.

    Recordings are visited in order of first appearance and their segments in table order.
    A segment is ``audio.cut`` of the loaded recording, plus ``audio.add_noise`` with the row's
    ``snr_db``/``noise_seed`` when it is augmented. The recording is low-passed first at the
    table's ``lowpass_hz`` (bandwidth harmonisation) or at ``lowpass_hz`` given here (they must
    agree when both are set). With ``verify_sha256`` a file whose bytes no
    longer match the table's ``sha256`` is refused (the cache is keyed by that hash).

    ``workers`` threads decode a few recordings ahead of the consumer (libsndfile and soxr release
    the GIL), so decoding overlaps whatever the consumer does, e.g. a GPU forward pass; what is
    yielded, and in which order, does not depend on it.
    """
    _check_segments(segments)
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    lowpass_hz = table_lowpass(segments, lowpass_hz)
    rows = segments.reset_index(drop=True)
    # plain arrays: the decoding threads then hold the GIL as little as possible
    bounds = rows[["start_s", "end_s"]].to_numpy(dtype=np.float64)
    noise = [(float(r["snr_db"]), int(r["noise_seed"])) if _is_augmented(r) else None
             for r in rows.to_dict("records")]
    sha = rows["sha256"].tolist()
    channels = rows["channel"].fillna(audio.MIX).astype(str).tolist() if "channel" in rows else [audio.MIX] * len(rows)
    groups = iter(rows.groupby("path", sort=False).indices.items())
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clapnb-decode") as pool:
        ahead: deque = deque()
        try:
            while True:
                while len(ahead) < workers + 1 and (group := next(groups, None)) is not None:
                    path, positions = group
                    ahead.append(pool.submit(_recording_segments, path, sha[positions[0]], positions, bounds,
                                             noise, sr, lowpass_hz, verify_sha256, channels[positions[0]]))
                if not ahead:
                    return
                yield from ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


# --- cache -------------------------------------------------------------------------------------

def segment_keys(segments: pd.DataFrame) -> list[str]:
    """Content key per row: recording bytes, bounds, augmentation (not the file's path)."""
    keys = []
    for row in segments.itertuples(index=False):
        r = row._asdict()
        aug = _is_augmented(r)
        parts = [r["sha256"], float(r["start_s"]), float(r["end_s"]),
                 float(r["snr_db"]) if aug else None, int(r["noise_seed"]) if aug else None]
        channel = r.get("channel")
        if isinstance(channel, str) and channel != audio.MIX:  # the default mix keeps the keys of older tables
            parts.append(f"channel:{channel}")
        keys.append(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32])
    return keys


def cache_namespace(backbone_meta: dict, lowpass_hz: float | None) -> dict:
    """Everything besides the segment that determines an embedding's value."""
    ns = {"format": CACHE_FORMAT, "backbone": backbone_meta["name"],
          "fingerprint": backbone_meta["fingerprint"], "policy": backbone_meta.get("policy"),
          "input_duration_s": backbone_meta.get("input_duration_s"), "dim": backbone_meta["dim"],
          "sample_rate": backbone_meta["sample_rate"], "precision": backbone_meta.get("precision", "fp32"),
          "lowpass_hz": lowpass_hz}
    if lowpass_hz is not None:  # the filter's design is part of what the backbone saw
        ns["lowpass_filter"] = audio.LOWPASS_DESIGN
    return ns


class BadShard(Exception):
    """A cache shard that fails verification; the message says why."""


def shard_checksum(keys: Sequence[str], X: np.ndarray) -> str:
    """SHA-256 over a shard's keys and its rows' bytes (little-endian float32), written with it."""
    h = hashlib.sha256()
    h.update("\n".join(keys).encode("utf-8"))
    h.update(b"\x00")
    h.update(np.ascontiguousarray(X, dtype="<f4").tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """Shards of (keys, X, checksum) in one namespace folder, found through its index; see the module docstring.

    Lookups ask the namespace's SQLite index (:mod:`clapnb.cache_index`) which shards hold the
    keys and open only those; a write stores its shard and indexes it in one transaction, so
    many processes may read and write one cache at once.

    Every shard is verified when it is read (a readable ``.npz``, keys and rows that match in
    number, the namespace's dimension, float32, finite values, and the checksum written with it;
    shards from before checksums must not hold all-zero rows), and so is every row the index
    points to (the key at that position). A bad shard is moved to ``bad/`` with a one-line
    notice on stderr and its rows count as missing, so ``embed`` recomputes them instead of
    serving them again.
    """

    def __init__(self, root: str | os.PathLike, namespace: dict):
        self.namespace = namespace
        self.dir = Path(root) / f"{namespace['backbone']}-{io.fingerprint([namespace])}"
        self.dim = int(namespace["dim"])
        self.moved_aside: list[dict] = []
        self.shards_read = 0  # shard files opened by this object (what the index saves)
        self._index = None
        self._scan_told = False

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []

    def read_shard(self, shard: Path) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, X)`` of a verified shard; raises :class:`BadShard` saying what is wrong."""
        self.shards_read += 1
        try:
            size = shard.stat().st_size
        except OSError as exc:
            raise BadShard(f"cannot be read ({exc.strerror})") from None
        if size == 0:
            raise BadShard("empty file (0 bytes)")
        try:
            with np.load(shard, allow_pickle=False) as z:
                names = set(z.files)
                if not {"keys", "X"} <= names:
                    raise BadShard(f"lacks {', '.join(sorted({'keys', 'X'} - names))}")
                keys, X = z["keys"], z["X"]
                checksum = str(z["sha256"]) if "sha256" in names else None
        except BadShard:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise BadShard(f"not a readable .npz, probably truncated ({type(exc).__name__})") from None
        if keys.ndim != 1 or keys.dtype.kind not in "U":
            raise BadShard(f"keys of dtype {keys.dtype} and shape {keys.shape}, expected strings")
        if X.ndim != 2 or X.shape[0] != len(keys):
            raise BadShard(f"{len(keys)} keys but rows of shape {X.shape}")
        if X.shape[1] != self.dim:
            raise BadShard(f"rows of dimension {X.shape[1]}, the backbone's is {self.dim}")
        if X.dtype != np.float32:
            raise BadShard(f"rows of dtype {X.dtype}, expected float32")
        if checksum is not None and checksum != shard_checksum(keys.tolist(), X):
            raise BadShard("checksum mismatch (the rows or keys changed after it was written)")
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            raise BadShard(f"{int(bad.sum())} of {len(X)} rows hold NaN or infinite values")
        if checksum is None and len(X) and (~X.any(axis=1)).any():
            raise BadShard(f"{int((~X.any(axis=1)).sum())} of {len(X)} rows are all zeros")
        return keys, X

    def _move_aside(self, shard: Path, reason: str) -> None:
        dest = self.dir / "bad" / shard.name
        try:
            dest.parent.mkdir(exist_ok=True)
            os.replace(shard, dest)
            where = f"moved to {dest}"
        except FileNotFoundError:
            return  # another process moved it aside first
        except OSError as exc:
            where = f"left in place ({exc.strerror}: the cache is not writable) and skipped"
        self.moved_aside.append({"shard": str(shard), "reason": reason})
        print(f"clapnb: notice: embedding cache shard {shard} is unusable ({reason}); {where}; "
              "its rows are recomputed", file=sys.stderr, flush=True)

    # --- the index ----------------------------------------------------------------------------

    def _small(self, adding: int = 0) -> bool:
        """No index yet and few shards: a scan opens no more files than the index would (short recordings)."""
        from clapnb.cache_index import INDEX_NAME

        return not (self.dir / INDEX_NAME).exists() and len(self._shards()) + adding <= INDEX_MIN_SHARDS

    def _connect(self):
        """A connection to the index, brought in line with the shards on disk; None: scan instead."""
        from clapnb import cache_index

        if self._index is None:
            self._index = cache_index.ShardIndex(self.dir)
        try:
            con, fresh = self._index.connect()
        except cache_index.IndexUnusable as exc:
            if not self._scan_told:
                self._scan_told = True
                cache_index.notice(f"embedding cache {self.dir} cannot keep its index ({exc}); "
                                   "reading every shard instead (slower, same rows)")
            return None
        try:
            self._sync(con, fresh)
        except BaseException:
            con.close()
            raise
        return con

    def _sync(self, con, fresh: bool) -> None:
        """Index the shards the index lacks, forget those gone from disk (each with a notice)."""
        from clapnb.cache_index import ShardIndex, notice

        on_disk = {p.name for p in self._shards()}
        if on_disk == set(ShardIndex.indexed_shards(con)):
            return
        con.execute("BEGIN IMMEDIATE")  # writers publish a shard and its rows under this lock
        try:
            indexed = ShardIndex.indexed_shards(con)
            on_disk = {p.name for p in self._shards()}
            new, gone = sorted(on_disk - set(indexed)), sorted(set(indexed) - on_disk)
            ShardIndex.drop(con, gone)
            added = 0
            for name in new:
                shard = self.dir / name
                try:
                    keys, _ = self.read_shard(shard)
                except BadShard as exc:
                    self._move_aside(shard, str(exc))
                    continue
                ShardIndex.add(con, name, keys.tolist(), shard.stat().st_size)
                added += 1
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if gone:
            notice(f"embedding cache {self.dir}: {len(gone)} indexed shard(s) are no longer on disk "
                   "(deleted by hand?); their rows count as missing and are recomputed")
        if new and not (fresh and len(new) <= 2 * INDEX_MIN_SHARDS):  # (a namespace outgrowing the scan: quiet)
            why = ("a cache from before the index, or a lost index" if fresh else
                   "written by a process that stopped before indexing them, or copied in")
            notice(f"embedding cache {self.dir}: indexed {added} shard(s) the index lacked ({why})")

    def _reindex(self, con, name: str, keys: Sequence[str] | None) -> None:
        from clapnb.cache_index import ShardIndex

        con.execute("BEGIN IMMEDIATE")
        try:
            ShardIndex.drop(con, [name])
            shard = self.dir / name
            if keys is not None and shard.is_file():
                ShardIndex.add(con, name, list(keys), shard.stat().st_size)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached rows among ``keys``; bad shards are moved aside (their rows count as missing)."""
        from clapnb.cache_index import ShardIndex, notice

        if not self.dir.is_dir():
            return {}
        if self._small():
            return self._scan(keys)
        con = self._connect()
        if con is None:
            return self._scan(keys)
        found: dict[str, np.ndarray] = {}
        try:
            for name, rows in sorted(ShardIndex.where(con, keys).items()):
                shard = self.dir / name
                try:
                    shard_keys, X = self.read_shard(shard)
                except BadShard as exc:
                    if shard.is_file():
                        self._move_aside(shard, str(exc))
                    self._reindex(con, name, None)  # moved aside, or gone: its rows are missing
                    continue
                shard_keys = shard_keys.tolist()
                if any(pos >= len(shard_keys) or shard_keys[pos] != key for key, pos in rows):
                    notice(f"embedding cache index {self._index.path} was stale for {shard} (the shard "
                           "changed after it was indexed); re-indexed it from the shard")
                    self._reindex(con, name, shard_keys)
                    at = {k: i for i, k in enumerate(shard_keys)}
                    rows = [(key, at[key]) for key, _ in rows if key in at]
                for key, pos in rows:
                    found.setdefault(key, X[pos])
        finally:
            con.close()
        return found

    def _scan(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The lookup without an index: open shards until every key is found."""
        wanted = set(keys)
        found: dict[str, np.ndarray] = {}
        for shard in self._shards():
            if len(found) == len(wanted):
                break
            try:
                shard_keys, X = self.read_shard(shard)
            except BadShard as exc:
                self._move_aside(shard, str(exc))
                continue
            for i, k in enumerate(shard_keys.tolist()):
                if k in wanted and k not in found:
                    found[k] = X[i]
        return found

    def keys_on_disk(self) -> list[str]:
        """Every key of every readable shard, repeats included (a key twice is a cache bug)."""
        out: list[str] = []
        for shard in self._shards():
            try:
                out.extend(self.read_shard(shard)[0].tolist())
            except BadShard:
                continue
        return out

    def write(self, keys: Sequence[str], X: np.ndarray) -> Path | None:
        """Write one shard atomically and index it; its name is a hash of its keys (rewriting is idempotent)."""
        from clapnb.cache_index import ShardIndex

        if not keys:
            return None
        keys = list(keys)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if not (self.dir / "namespace.json").is_file():
            io.atomic_write_json(self.dir / "namespace.json", self.namespace)
        buf = _io.BytesIO()
        np.savez(buf, keys=np.asarray(keys), X=X, sha256=np.asarray(shard_checksum(keys, X)))
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20]
        target = self.dir / f"shard-{name}.npz"
        con = None if self._small(adding=1) else self._connect()
        if con is None:
            return io.atomic_write_bytes(target, buf.getvalue())
        try:
            con.execute("BEGIN IMMEDIATE")  # the shard and its index rows appear together
            try:
                path = io.atomic_write_bytes(target, buf.getvalue())
                ShardIndex.add(con, target.name, keys, len(buf.getvalue()))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
        return path


# --- computing ---------------------------------------------------------------------------------

def work_order(segments: pd.DataFrame) -> np.ndarray:
    """Positions in the order they are computed: recordings by first appearance, then table order."""
    rows = segments.reset_index(drop=True)
    first = rows.groupby("path", sort=False).ngroup().to_numpy()
    return np.lexsort((np.arange(len(rows)), first))


def check_embeddings(E: np.ndarray, n: int, dim: int, what: str) -> np.ndarray:
    """Refuse a backbone output of the wrong shape or with NaN/infinite values."""
    E = np.asarray(E)
    if E.shape != (n, dim):
        raise EmbeddingError(f"{what}: the backbone returned shape {E.shape}, expected {(n, dim)}")
    bad = ~np.isfinite(E).all(axis=1)
    if bad.any():
        raise EmbeddingError(f"{what}: {int(bad.sum())} embeddings contain NaN or infinite values "
                             f"(rows {np.flatnonzero(bad)[:8].tolist()}); check the weights and the audio")
    return E.astype(np.float32, copy=False)


def _backbone_meta(backbone, lowpass_hz: float | None) -> dict:
    return {**backbone.metadata, "name": backbone.name, "dim": int(backbone.dim),
            "sample_rate": int(backbone.sample_rate), "fingerprint": backbone.fingerprint,
            "has_text": bool(backbone.has_text), "random_weights": bool(backbone.random_weights),
            "lowpass_hz": lowpass_hz}


def compute_embeddings(segments: pd.DataFrame, backbone, *, cache_dir: str | os.PathLike | None = None,
                       batch_size: int = 16, progress: bool = True, lowpass_hz: float | None = None,
                       shard_rows: int = 512, flush_s: float = 60.0, workers: int | None = None) -> EmbeddingSet:
    """Embed every row of ``segments`` with ``backbone``, reusing and filling the on-disk cache.

    ``cache_dir``: explicit > ``$CLAPNB_CACHE`` > ``~/.cache/clapnb``. Returns X aligned to
    ``segments`` (reset index); ``meta['n_computed']`` says how many rows needed the backbone.
    ``workers``: decoding threads (see :func:`iter_segment_audio`); None picks 1 when the backbone
    computes on the CPU (more would only compete with torch's threads for cores) and up to 8 on a GPU.
    """
    from tqdm.auto import tqdm

    _check_segments(segments)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if workers is None:
        workers = 1 if backbone.metadata.get("device", "cpu") == "cpu" else min(8, os.cpu_count() or 1)
    segments = segments.reset_index(drop=True)
    lowpass_hz = table_lowpass(segments, lowpass_hz)
    bmeta = _backbone_meta(backbone, lowpass_hz)
    root = io.cache_dir(cache_dir)
    cache = EmbeddingCache(root, cache_namespace(bmeta, lowpass_hz))
    keys = segment_keys(segments)
    X = np.zeros((len(segments), cache.dim), dtype=np.float32)
    done = np.zeros(len(segments), dtype=bool)
    computed_here = np.zeros(len(segments), dtype=bool)

    def take(found: dict[str, np.ndarray]) -> None:
        for pos, key in enumerate(keys):
            if not done[pos] and key in found:
                X[pos] = found[key]
                done[pos] = True

    def compute(todo_first: dict[str, int]) -> None:
        """Embed one row per key of ``todo_first`` (in work order), flushing shards as it goes."""
        todo = segments.iloc[list(todo_first.values())]
        pending_keys: list[str] = []
        pending_rows: list[np.ndarray] = []
        last_flush = time.perf_counter()

        def flush() -> None:
            nonlocal pending_keys, pending_rows, last_flush
            if pending_keys:
                cache.write(pending_keys, np.stack(pending_rows))
            pending_keys, pending_rows, last_flush = [], [], time.perf_counter()

        bar = tqdm(total=len(todo), unit="clip", desc=f"embed {backbone.name}", disable=not progress or not len(todo))
        try:
            batch_pos: list[int] = []
            batch_wav: list[np.ndarray] = []

            def run_batch() -> None:
                E = check_embeddings(backbone.embed_audio(batch_wav), len(batch_wav), cache.dim,
                                     f"{backbone.name} on segments {segments.loc[batch_pos[:3], 'path'].tolist()}")
                for p, e in zip(batch_pos, E):
                    X[p] = e
                    computed_here[p] = True
                    pending_keys.append(keys[p])
                    pending_rows.append(e)
                bar.update(len(batch_pos))
                batch_pos.clear()
                batch_wav.clear()
                if len(pending_keys) >= shard_rows or time.perf_counter() - last_flush >= flush_s:
                    flush()

            positions = todo.index.to_numpy()
            for i, wave in iter_segment_audio(todo, backbone.sample_rate, lowpass_hz, workers=workers):
                batch_pos.append(int(positions[i]))
                batch_wav.append(wave)
                if len(batch_wav) == batch_size:
                    run_batch()
            if batch_wav:
                run_batch()
        finally:
            bar.close()
            flush()
        rows = {keys[p]: X[p] for p in todo_first.values()}
        for pos, key in enumerate(keys):
            if key in rows:
                X[pos] = rows[key]
                done[pos] = computed_here[pos] = True

    take(cache.lookup(keys))
    n_computed = 0
    t0 = time.perf_counter()
    if not done.all():
        # Another process may be embedding the same rows into this cache: claim what this one
        # computes, skip what others claimed, then wait for them and read their rows.
        from clapnb import locks

        def refresh() -> set[str]:
            take(cache.lookup([keys[p] for p in np.flatnonzero(~done)]))
            return {keys[p] for p in np.flatnonzero(~done)}

        def choose(claimed: set[str]) -> dict[str, int]:
            todo_first: dict[str, int] = {}
            for pos in work_order(segments):
                if not done[pos] and keys[pos] not in claimed:
                    todo_first.setdefault(keys[pos], int(pos))
            return todo_first

        def waiting(other: str, n: int) -> None:
            print(f"clapnb: notice: waiting for another process (claim {other}) that is embedding "
                  f"{n} of these rows into {cache.dir}", file=sys.stderr, flush=True)

        n_computed = locks.fill_claimed(cache.dir, refresh=refresh, choose=choose, compute=compute, waiting=waiting)
    seconds = time.perf_counter() - t0
    n_cached = int((~computed_here).sum())
    meta = {
        "backbone": bmeta, "random_weights": bmeta["random_weights"],
        "cache_dir": str(root.resolve()), "cache_namespace": str(cache.dir.resolve()),
        "n_rows": len(segments), "n_cached": n_cached, "n_computed": n_computed,
        "batch_size": batch_size, "seconds": round(seconds, 3),
        "clips_per_s": round(n_computed / seconds, 3) if n_computed and seconds > 0 else None,
        "x_sha256": hashlib.sha256(X.tobytes()).hexdigest(), "clapnb_version": __version__,
    }
    if cache.moved_aside:
        meta["bad_shards"] = cache.moved_aside
    if bmeta["random_weights"]:
        meta["warning"] = RANDOM_WEIGHTS_WARNING
    return EmbeddingSet(X, segments, meta)


def embed_waveforms(backbone, waves: Sequence[np.ndarray], meta: dict | None = None, *,
                    batch_size: int = 16) -> np.ndarray:
    """Embed loose waveforms (e.g. new files for a trained probe) the way an embedding set was made.

    ``meta``: the backbone metadata recorded with the embeddings; its fingerprint and policy must
    match ``backbone`` and its ``lowpass_hz`` is applied, so new audio sees the same pipeline.
    """
    if meta:
        meta = dict(meta.get("backbone", meta))
        for k in ("fingerprint", "policy"):
            if meta.get(k) is not None and meta[k] != backbone.metadata.get(k):
                raise InputError(f"the backbone's {k} is {backbone.metadata.get(k)!r} but the embeddings were "
                                 f"made with {meta[k]!r}; load the same backbone (backbone_from_metadata)")
        if meta.get("lowpass_hz") is not None:
            waves = [audio.lowpass(w, backbone.sample_rate, float(meta["lowpass_hz"])) for w in waves]
    if not len(waves):
        return np.zeros((0, backbone.dim), dtype=np.float32)
    out = [check_embeddings(backbone.embed_audio(list(waves[s:s + batch_size])),
                            len(waves[s:s + batch_size]), backbone.dim, backbone.name)
           for s in range(0, len(waves), batch_size)]
    return np.concatenate(out)


# --- run folders -------------------------------------------------------------------------------

def embed_run(run_dir: str | os.PathLike, backbone, *, cache_dir: str | os.PathLike | None = None,
              batch_size: int = 16, progress: bool = True, lowpass_hz: float | None = None,
              workers: int | None = None) -> EmbeddingSet:
    """Embed ``run_dir/segments.parquet`` and record how in ``run_dir/embeddings.json``."""
    run_dir = Path(run_dir)
    lf = LengthFolder(run_dir)
    seg_path = lf.segments
    if not seg_path.is_file():
        raise InputError(f"{seg_path} does not exist; build it with `clapnb segments` first")
    from clapnb.locks import run_lock

    segments = read_segments(seg_path, nullable_int=False)
    # One writer of embeddings.json per folder: a second `clapnb embed` here waits, then finds
    # every row in the cache.
    with run_lock(run_dir, wait=True, command="clapnb embed"):
        emb = compute_embeddings(segments, backbone, cache_dir=cache_dir, batch_size=batch_size,
                                 progress=progress, lowpass_hz=lowpass_hz, workers=workers)
        emb.meta["segments_sha256"] = io.file_sha256(seg_path)
        io.atomic_write_json(lf.embeddings, emb.meta)
    return emb


def load_run_embeddings(run_dir: str | os.PathLike) -> EmbeddingSet:
    """The embeddings recorded for ``run_dir``, read from the cache and aligned to its segments."""
    run_dir = Path(run_dir)
    lf = LengthFolder(run_dir)
    meta_path, seg_path = lf.embeddings, lf.segments
    hint = f"run `clapnb embed --segments {seg_path} --backbone NAME` first"
    if not meta_path.is_file():
        raise InputError(f"{meta_path} does not exist: {hint}")
    if not seg_path.is_file():
        raise InputError(f"{seg_path} does not exist; build it with `clapnb segments`, then {hint[4:]}")
    meta = io.read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("backbone"), dict) or "cache_dir" not in meta:
        raise InputError(f"{meta_path} is not an embeddings record written by clapnb (no backbone/cache_dir): "
                         f"delete it and {hint[4:]}")
    if meta.get("segments_sha256") and io.file_sha256(seg_path) != meta["segments_sha256"]:
        raise InputError(f"{seg_path} changed after the embeddings were computed: {hint} again "
                         "(only new segments are computed)")
    segments = read_segments(seg_path, nullable_int=False)
    bmeta = meta["backbone"]
    cache = EmbeddingCache(meta["cache_dir"], cache_namespace(bmeta, bmeta.get("lowpass_hz")))
    keys = segment_keys(segments)
    found = cache.lookup(keys)
    lost = sum(k not in found for k in keys)
    if lost:
        raise InputError(f"the embedding cache {cache.dir} lacks {lost} of {len(keys)} rows of {run_dir} "
                         f"(cleared or moved?): {hint} again; it recomputes only the missing rows")
    X = np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
    if meta.get("x_sha256") and hashlib.sha256(X.tobytes()).hexdigest() != meta["x_sha256"]:
        raise InputError(f"the cached embeddings for {run_dir} differ from those recorded in {meta_path}: {hint} again")
    return EmbeddingSet(X, segments, meta)
