"""The sweep's embedding stage in work units on an executor, and its cost estimate before long work.

Before the per-length stages run, the client plans every length's segments: per length the rows
whose embedding the cache lacks, first occurrence of each key, in the stage's own work order
(:func:`clapnb.embeddings.work_order`). That list is cut into **units** of ``unit_segments`` rows,
a whole number of batches, so a unit forms exactly the batches the in-process stage would form
and writes the same rows into the same content-keyed cache (bit-identical at equal BLAS/torch
threads per process). A unit (:func:`run_unit`) is a module-level function of a plain dict (the
study parameters, the cache folder, its segment rows): it runs in this process, in a local worker
process or on a Dask worker, loads the backbone once per process
(:func:`clapnb.stages.cached_backbone`) and writes its rows with
:func:`clapnb.embeddings.compute_embeddings` (atomic shards, per-key claims: a unit rerun after a
killed worker, or two sweeps on one cache, never store a row twice). Then the embeddings stage of
each length finds every row in the cache; a unit that failed leaves its rows to that stage, so
nothing is lost and the rows are the same. A rerun plans only what is still missing.

The estimate measures a batch of segments on this machine (decode + embed, after a warm-up batch) at
the shortest and the longest length to embed, interpolates in the length for the others, and
prints ``segments to embed x s/segment / workers`` (+ worker start-up) and the cache's storage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clapnb import io
from clapnb.config import EMBED_BATCH, StudyConfig, from_mapping
from clapnb.errors import error_summary
from clapnb.estimate import human_b, human_s, wall_seconds
from clapnb.store import RunFolder

Log = Callable[[str], None]
#: Below this many segments to embed the sweep prints no estimate unless asked (it would take longer to read).
ESTIMATE_MIN_SEGMENTS = 1000


def _quiet(_: str) -> None:
    pass


# --- each length's segments table ------------------------------------------------------------------

def segment_tables(run: RunFolder, config: StudyConfig, upstream: Mapping[str, str], *,
                   log: Log = _quiet) -> dict[int, pd.DataFrame]:
    """Every length's segments, its stage built (or current) in ``run``; a length that fails is left out
    (its length job fails the same way and records why)."""
    from clapnb import stages
    from clapnb.segments import read_segments

    tables = {}
    for n in config.length_list:
        run.length(n).root.mkdir(parents=True, exist_ok=True)
        try:
            stages.segments(run, config, n, {k: upstream[k] for k in ("recordings", "bandwidth")}, log=log)
            tables[n] = read_segments(run.length(n).segments, nullable_int=False)
        except Exception:  # reported by the length's own job
            continue
    return tables


def scratch_segment_tables(run: RunFolder, config: StudyConfig) -> dict[int, pd.DataFrame]:
    """The segment tables a sweep into ``run`` would build, built in a scratch folder that is then removed
    (a dry run writes nothing in ``run``): the run's current stages are copied there first, so they are reused."""
    from clapnb import stages

    with tempfile.TemporaryDirectory(prefix="clapnb-dry-run-") as tmp:
        scratch = RunFolder(tmp)
        files = [*run.shared_with_variants, run.stage_record("recordings"), run.bandwidth, run.stage_record("bandwidth")]
        for n in config.length_list:
            lf = run.length(n)
            files += [lf.segments, lf.dataset, lf.stage_record("segments")]
        for path in files:
            if path.is_file():
                target = scratch.root / path.relative_to(run.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        upstream = stages.build_run(scratch, config, log=_quiet)
        return segment_tables(scratch, config, upstream)


# --- the plan: what the cache lacks, in the stage's work order ---------------------------------------

@dataclass
class Plan:
    """Per length the rows to embed (first row of each missing key, in work order) and the counts."""

    todo: dict[int, pd.DataFrame]
    n_rows: int
    n_cached: int
    cache_dir: str
    dim: int
    lowpass_hz: dict[int, float | None] = field(default_factory=dict)

    @property
    def n_todo(self) -> int:
        return int(sum(len(t) for t in self.todo.values()))


def plan(tables: Mapping[int, pd.DataFrame], backbone, cache_dir: str | os.PathLike | None = None) -> Plan:
    from clapnb.embeddings import EmbeddingCache, _backbone_meta, cache_namespace, segment_keys, work_order
    from clapnb.segments import table_lowpass

    root = io.cache_dir(cache_dir).resolve()
    todo, lowpass, n_rows, n_cached = {}, {}, 0, 0
    for n, seg in sorted(tables.items()):
        seg = seg.reset_index(drop=True)
        lp = table_lowpass(seg)
        cache = EmbeddingCache(root, cache_namespace(_backbone_meta(backbone, lp), lp))
        keys = segment_keys(seg)
        found = cache.lookup(keys)
        first: dict[str, int] = {}
        for pos in work_order(seg):
            if keys[pos] not in found:
                first.setdefault(keys[pos], int(pos))
        todo[n], lowpass[n] = seg.iloc[list(first.values())], lp
        n_rows += len(seg)
        n_cached += sum(k in found for k in keys)
    return Plan(todo, n_rows, n_cached, str(root), int(backbone.dim), lowpass)


def units(p: Plan, config: StudyConfig) -> list[dict]:
    """The work units: ``unit_segments`` consecutive rows of a length's to-do list each (whole batches)."""
    size = int(config.unit_segments)
    params = config.parameters()
    out = []
    for n, rows in sorted(p.todo.items()):
        for a in range(0, len(rows), size):
            out.append({"params": params, "cache_dir": p.cache_dir, "length_s": int(n), "first": a,
                        "segments": rows.iloc[a:a + size].reset_index(drop=True), "batch_size": EMBED_BATCH})
    return out


def run_unit(unit: dict) -> dict:
    """Embed one unit's segments into the cache (the backbone loaded once per process). Returns counts."""
    from clapnb import stages
    from clapnb.embeddings import compute_embeddings

    t0 = time.perf_counter()
    backbone = stages.cached_backbone(from_mapping(unit["params"]), batch_size=unit["batch_size"])
    emb = compute_embeddings(unit["segments"], backbone, cache_dir=unit["cache_dir"], batch_size=unit["batch_size"],
                             progress=False, shard_rows=max(512, len(unit["segments"])))
    return {"n_rows": len(unit["segments"]), "n_computed": int(emb.meta["n_computed"]),
            "seconds": round(time.perf_counter() - t0, 3), "pid": os.getpid()}


def embed_units(p: Plan, config: StudyConfig, executor, *, backbone=None, log: Log = _quiet,
                progress: bool = False, estimate: dict | None = None) -> dict:
    """Run every unit of ``p`` on ``executor``; progress with an ETA over the whole embedding job.

    A fast mode (bf16) is checked against fp32 on each length first, here, before any unit: a length
    that fails the check gets no units (its stage refuses it with the reason).
    """
    from tqdm.auto import tqdm

    todo = dict(p.todo)
    if backbone is not None:
        from clapnb import agreement

        for n in list(todo):
            if len(todo[n]):
                try:
                    agreement.check_agreement(backbone, todo[n], threshold=config.agreement_threshold,
                                              warn_only=config.warn_low_agreement, seed=config.seed)
                except Exception as exc:
                    log(f"L{n:02d} embeddings: no units ({error_summary(exc)})")
                    todo.pop(n)
    work = units(Plan(todo, p.n_rows, p.n_cached, p.cache_dir, p.dim, p.lowpass_hz), config)
    total = int(sum(len(u["segments"]) for u in work))
    report = {"n_units": len(work), "n_segments": total, "n_computed": 0, "n_failed_units": 0, "pids": [],
              "executor": None, "workers": int(getattr(executor, "workers", 1)), "seconds": 0.0}
    if not work:
        return report
    link = getattr(executor, "dashboard_link", None)  # starts a lazy executor
    report["executor"] = type(getattr(executor, "started", executor)).__name__
    report["workers"] = int(getattr(executor, "workers", 1))
    if link:
        log(f"Dask dashboard: {link}")
    log(f"embeddings: {total} segment(s) of {len(todo)} length(s) in {len(work)} unit(s) on "
        f"{report['workers']} worker(s) ({report['executor']})")
    t0 = last = time.monotonic()
    done = 0
    pids: set[int] = set()
    bar = tqdm(total=total, desc="embed", unit="segment", disable=not progress, smoothing=0.1)
    try:
        for u, fut in executor.map_unordered(run_unit, work):
            exc = fut.exception()
            if exc is not None:
                report["n_failed_units"] += 1
                log(f"L{u['length_s']:02d} embedding unit (rows {u['first']}..{u['first'] + len(u['segments']) - 1}) "
                    f"failed: {error_summary(exc)}; the length's stage embeds its rows")
            else:
                res = fut.result()
                report["n_computed"] += res["n_computed"]
                pids.add(int(res["pid"]))
            done += len(u["segments"])
            bar.update(len(u["segments"]))
            now = time.monotonic()
            if not progress and (now - last >= 30 or done == total):
                eta = (now - t0) / done * (total - done)
                log(f"embeddings: {done}/{total} segments in {human_s(now - t0)}"
                    + (f", about {human_s(eta)} left" if done < total else ""))
                last = now
    finally:
        bar.close()
    report["seconds"] = round(time.monotonic() - t0, 2)
    report["pids"] = sorted(pids)
    if estimate and estimate.get("wall_s"):
        report["estimate_error"] = round(estimate["wall_s"] / report["seconds"] - 1, 3) if report["seconds"] else None
    return report


# --- the cost estimate ----------------------------------------------------------------------------

@contextlib.contextmanager
def threads_limited(threads: int | None):
    """BLAS/OpenMP (and torch, when loaded) limited to ``threads`` here: time work as a worker with that many does."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None:
            torch.set_num_threads(int(threads))
        with threadpool_limits(int(threads)):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def measure(backbone, p: Plan, *, n: int = EMBED_BATCH, threads: int | None = None) -> dict | None:
    """Seconds per segment (decode + embed) at the shortest and the longest length to embed, on this machine.

    At each, the first ``n`` to-do rows in the stage's order are decoded and embedded untimed (first
    reads, lazy initialisation, JIT), then the next ``n`` are timed, as the stage would process them.
    ``warmup_s`` is what the untimed rows cost beyond their share: a fresh worker pays it once.
    ``threads``: time at a worker's BLAS/torch threads (a Dask worker has one), not this process's.
    """
    from clapnb.embeddings import iter_segment_audio

    def run(rows: pd.DataFrame, lowpass: float | None) -> float:
        t0 = time.perf_counter()
        waves = [w for _, w in sorted(iter_segment_audio(rows.reset_index(drop=True), backbone.sample_rate, lowpass),
                                      key=lambda item: item[0])]
        for a in range(0, len(waves), EMBED_BATCH):
            backbone.embed_audio(waves[a:a + EMBED_BATCH])
        return time.perf_counter() - t0

    lengths = [k for k, t in sorted(p.todo.items()) if len(t)]
    if not lengths:
        return None
    points, warmup, measured = {}, 0.0, 0
    for k in dict.fromkeys([lengths[0], lengths[-1]]):
        rows = p.todo[k].iloc[: 2 * n]
        warm, timed = (rows.iloc[:n], rows.iloc[n:]) if len(rows) > n else (rows.iloc[:1], rows)
        with threads_limited(threads):
            first = run(warm, p.lowpass_hz.get(k))
            points[int(k)] = run(timed, p.lowpass_hz.get(k)) / len(timed)
        warmup = max(warmup, first - points[int(k)] * len(warm))
        measured += len(timed)
    return {"s_per_segment": points, "segments_measured": measured, "warmup_s": round(warmup, 3),
            "threads": threads}


def s_per_segment(measured: dict, length_s: int) -> float:
    """The measured seconds per segment, linear in the length between the two measured lengths."""
    pts = sorted((int(k), float(v)) for k, v in measured["s_per_segment"].items())
    if len(pts) == 1:
        return pts[0][1]
    (l0, s0), (l1, s1) = pts[0], pts[-1]
    return max(min(s0, s1), s0 + (s1 - s0) * (length_s - l0) / (l1 - l0))


def estimate(p: Plan, measured: dict | None, workers: int, startup_s: float = 0.0) -> dict:
    """Expected wall time and storage of the embedding stage of the whole sweep."""
    per_length = {int(k): len(t) for k, t in p.todo.items()}
    work = sum(c * s_per_segment(measured, k) for k, c in per_length.items()) if measured else None
    n_todo = p.n_todo
    spw = work / n_todo if work is not None and n_todo else None
    cache_bytes = n_todo * (4 * p.dim + 4 * 32)  # float32 row + its 32-character key in a shard
    return {"segments_total": int(p.n_rows), "segments_cached": int(p.n_cached), "segments_todo": int(n_todo),
            "per_length": per_length, "workers": int(workers), "s_per_segment": spw, "startup_s": float(startup_s),
            "wall_s": wall_seconds(n_todo, spw, workers, startup_s) if spw is not None else 0.0,
            "storage_bytes": int(cache_bytes), "measurement": measured}


def estimate_line(est: dict) -> str:
    if not est["segments_todo"]:
        return (f"estimate: nothing to embed ({est['segments_total']} segment(s), every one in the embedding cache); "
                "zero-shot, probe and notebooks only")
    if est["measurement"] is None:
        return f"estimate: {est['segments_todo']} segment(s) to embed; none could be decoded to time them"
    m = est["measurement"]
    at = ", ".join(f"{1000 * v:.0f} ms at {k} s" for k, v in sorted(m["s_per_segment"].items()))
    return (f"estimate: {est['segments_todo']} of {est['segments_total']} segment(s) to embed "
            f"({est['segments_cached']} cached) x {1000 * est['s_per_segment']:.1f} ms/segment ({at}) / "
            f"{est['workers']} worker(s)" + (f" + {est['startup_s']:.1f} s worker start-up" if est["startup_s"] else "")
            + f" = {human_s(est['wall_s'])} wall for the embeddings; storage ~{human_b(est['storage_bytes'])} in "
            f"the embedding cache; measured on {m['segments_measured']} segment(s) on this machine (zero-shot, "
            "probe and notebooks come on top)")


def sweep_estimate(p: Plan, backbone, *, workers: int, fresh_workers: bool, load_s: float = 0.0,
                   threads: int | None = None) -> dict:
    """Measure and estimate in one call (what ``clapnb sweep`` prints before its work and for ``--dry-run``).

    ``fresh_workers``: each worker loads its own backbone (``load_s``, as measured here) and warms it up;
    ``threads``: each worker's BLAS/torch threads (None: this process's).
    """
    measured = measure(backbone, p, threads=threads) if p.n_todo else None
    startup = (load_s + measured["warmup_s"]) if fresh_workers and measured else 0.0
    return estimate(p, measured, workers, startup)
