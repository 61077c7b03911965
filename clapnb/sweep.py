"""``clapnb sweep`` as a scheduler: the stages for every length, then the notebooks as views.

1. Validate everything first (the configuration, the notebooks, the backbone's files, the run
   folder's recorded configuration); only then is ``sweep.json`` written.
2. Run-level stages (recordings, bandwidth), then per length segments -> embeddings -> zero-shot,
   probe -> shortcuts (:mod:`clapnb.stages`), on an executor (:mod:`clapnb.executor`: in-process or
   ``-j N`` processes). Stages are build-if-missing and record their parameters: a changed
   parameter rebuilds what it feeds, never silently reuses it.
3. Views: the per-length notebooks (02, 03, 04) of every length whose stages changed, then the
   dataset notebook (01), executed in one kernel (:class:`clapnb.views.ViewRunner`); they only
   read stage outputs. ``done`` (the results row) is written after a length's views.
4. ``results.json`` / ``results.csv``.

A length that fails keeps its ``failed.json`` (stage or notebook, error); the others still run.
The folder layout is :mod:`clapnb.store`'s.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from clapnb import io, stages
from clapnb.config import (  # noqa: F401  (names of the first sweep, kept for callers)
    RESUMABLE_KEYS, SPLIT_NAMES, StudyConfig, SweepConfig, canonical_harmonise, default_data, parse_counts,
    parse_harmonise_list, parse_lengths, read_run_config, repo_root)
from clapnb.errors import InputError, error_summary
from clapnb.executor import make_executor
from clapnb.store import DATASET_NOTEBOOK, PER_LENGTH_NOTEBOOKS, LengthFolder, RunFolder, length_row  # noqa: F401
from clapnb.views import ViewRunner, notebooks_dir, sources_fingerprint

Log = Callable[[str], None]
#: The line every final summary of a random-weights run carries.
RANDOM_WEIGHTS_SUMMARY = ("RANDOM WEIGHTS: this run used the random-weights stand-in; its numbers are a "
                          "plumbing check, NOT CLAP results")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def length_dir(run_dir: str | os.PathLike, length_s: int) -> Path:
    return RunFolder(run_dir).length(length_s).root


def variant_dir(run_dir: str | os.PathLike, harmonise: str) -> Path:
    return RunFolder(run_dir).variant(canonical_harmonise(harmonise)).root


def variant_runs(run_dir: str | os.PathLike) -> list[Path]:
    """The comparison runs of ``run_dir`` (sorted by folder name) that have results."""
    return [v.root for v in RunFolder(run_dir).variants()]


def read_results(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, list[dict], dict]:
    return RunFolder(run_dir).read_results()


def load_segments(run_dir: str | os.PathLike, lengths: Sequence[int] | None = None) -> pd.DataFrame:
    """Segments of the run's completed lengths (a view's reader; builds nothing)."""
    run = RunFolder(run_dir)
    wanted = set(lengths) if lengths is not None else None
    parts = [pd.read_parquet(lf.segments) for lf in run.length_folders()
             if lf.segments.is_file() and not lf.failed.is_file() and (wanted is None or lf.length_s in wanted)]
    if not parts:
        raise InputError(f"{run_dir}: no length has segments (every length failed); see the "
                         f"{run.length(1).failed.name} files in its L?? folders")
    return pd.concat(parts, ignore_index=True)


# --- the recorded configuration ---------------------------------------------------------------------

def check_compatible(run_dir: str | os.PathLike, config: StudyConfig, *, rebuild: bool = False) -> None:
    """Refuse a run folder recorded with other parameters, naming each one and both values.

    With ``rebuild`` the call goes on: the stages those parameters feed see their records differ
    and are rebuilt, and the folder records the new configuration.
    """
    old = read_run_config(RunFolder(run_dir))
    if old is None or rebuild:
        return
    diff = old.differences(config, ignore=RESUMABLE_KEYS)
    if diff:
        raise InputError(f"{run_dir} was made with other parameters ({'; '.join(diff)}). Use a new --out "
                         "folder, or pass --rebuild to rebuild the stages these parameters feed")


def write_sweep_config(run_dir: str | os.PathLike, config: StudyConfig, *, rebuild: bool = False) -> StudyConfig:
    """Record the effective configuration; the lengths accumulate over resumed calls (not over a rebuild)."""
    run = RunFolder(run_dir)
    old = read_run_config(run)
    lengths = set(config.length_list)
    if old is not None and not old.differences(config, ignore=RESUMABLE_KEYS):
        lengths |= set(old.length_list)
    stored = replace(config, lengths=",".join(map(str, sorted(lengths))))
    run.write_config(stored)
    return stored


# --- outcomes ------------------------------------------------------------------------------------------

@dataclass
class LengthOutcome:
    length_s: int
    status: str  # 'done', 'skipped' or 'failed'
    seconds: float = 0.0
    error: str = ""
    notebook: str = ""
    stage: str = ""
    random_weights: bool = False


@dataclass
class SweepOutcome:
    run_dir: Path
    lengths: list[LengthOutcome] = field(default_factory=list)
    dataset_error: str = ""
    results: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    estimate: dict | None = None  # the cost estimate printed before the work (clapnb.embed_units)
    embedding_units: dict | None = None  # what the embedding units did, when they ran on an executor

    @property
    def failed(self) -> list[LengthOutcome]:
        return [o for o in self.lengths if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.dataset_error

    @property
    def random_weights(self) -> bool:
        if self.results is not None and not self.results.empty:
            return bool(self.results["random_weights"].fillna(False).astype(bool).any())
        return any(o.random_weights for o in self.lengths)

    def summary(self) -> str:
        rw = " RANDOM WEIGHTS (stand-in: NOT CLAP results)" if self.random_weights else ""
        lines = [f"sweep {self.run_dir}:{rw}"]
        for o in sorted(self.lengths, key=lambda o: o.length_s):
            extra = f" ({o.seconds:.0f} s)" if o.status == "done" else ""
            if o.status == "failed":
                where = o.notebook or (o.stage and f"stage {o.stage}")
                extra += f": {o.error}" + (f"\n      see {where}" if where else "")
            lines.append(f"  {o.length_s:2d} s  {o.status}{extra}" + (rw if o.status == "done" else ""))
        if self.dataset_error:
            lines.append(f"  dataset notebook failed: {self.dataset_error}")
        n_failed = len(self.failed)
        if self.random_weights:
            lines.append(f"  {RANDOM_WEIGHTS_SUMMARY}")
        lines.append(f"  {len(self.lengths) - n_failed} of {len(self.lengths)} lengths complete; "
                     + (f"{n_failed} failed (rerun the same command to retry them; completed "
                        "lengths are skipped)" if n_failed else "results in results.json / results.csv") + rw)
        if self.timings:
            lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        u = self.embedding_units
        if u and u.get("n_units"):
            lines.append(f"  embedding units: {u['n_units']} ({u['n_segments']} segments) on {u['workers']} worker(s) "
                         f"in {u['seconds']:.1f} s" + (f", {u['n_failed_units']} failed (their rows embedded by the "
                                                       "length stages)" if u["n_failed_units"] else "")
                         + (f"; estimated {self.estimate['wall_s']:.1f} s" if self.estimate and
                            self.estimate.get("wall_s") else ""))
        return "\n".join(lines)


# --- views ---------------------------------------------------------------------------------------------

def render_length(views: ViewRunner, run: RunFolder, length_s: int, built: stages.LengthBuild,
                  log: Log = _stderr) -> LengthOutcome:
    """Execute 02 -> 03 -> 04 on one built length; ``done`` (its results row) comes last."""
    lf = run.length(length_s)
    params = {"run_dir": str(run.root.resolve()), "length_s": int(length_s)}
    start = time.monotonic()
    for nb in PER_LENGTH_NOTEBOOKS:
        try:
            views.execute(nb, lf.notebook(nb), params, lf.root)
        except Exception as exc:  # the cell's error, a dead kernel, ...
            outcome = LengthOutcome(length_s, "failed", time.monotonic() - start, error_summary(exc),
                                    str(lf.notebook(nb)))
            io.atomic_write_json(lf.failed, asdict(outcome))
            log(f"L{length_s:02d} view {nb}: FAILED: {outcome.error}")
            return outcome
    seconds = time.monotonic() - start
    row = length_row(lf)
    io.atomic_write_json(lf.done, {"row": row, "seconds": round(seconds + sum(built.seconds.values()), 1),
                                   "stages": built.fingerprints, "views": sources_fingerprint(PER_LENGTH_NOTEBOOKS)})
    log(f"L{length_s:02d} views: rendered in {seconds:.1f} s" + (" RANDOM WEIGHTS" if row["random_weights"] else ""))
    return LengthOutcome(length_s, "done", seconds + sum(built.seconds.values()),
                         random_weights=bool(row["random_weights"]))


def _views_current(lf: LengthFolder, built: stages.LengthBuild) -> bool:
    if not lf.done.is_file() or built.changed:
        return False
    done = io.read_json(lf.done)
    return (done.get("stages") == built.fingerprints and done.get("views") == sources_fingerprint(PER_LENGTH_NOTEBOOKS)
            and all(lf.notebook(nb).is_file() for nb in PER_LENGTH_NOTEBOOKS))


# --- the scheduler -------------------------------------------------------------------------------------

def make_embed_executor(config: StudyConfig):
    """The executor of the embedding units (``--scheduler``/``--workers``), or None: embeddings in the length jobs."""
    if not config.uses_units:
        return None
    from clapnb.dask_executor import lazy_executor

    # started on the first unit: a rerun with every row cached starts nothing
    return lazy_executor(config.scheduler, config.embed_workers)


def run_sweep(config: StudyConfig, run_dir: str | os.PathLike, *, jobs: int = 1, rebuild: bool = False,
              log: Log = _stderr, progress: bool | None = None, views: bool = True, embed_executor=None,
              estimate: bool | None = None, dry_run: bool = False) -> SweepOutcome:
    """Validate, build every stage of every length (``jobs`` at a time), render the views, write results.

    ``views=False`` (the repeats after the first): results rows without notebooks. ``embed_executor``:
    where the embedding units run (default: made from ``config.scheduler``/``config.workers``, none
    without them: each length job embeds its own segments). ``estimate``: print the cost estimate
    first (None: when there are at least :data:`clapnb.embed_units.ESTIMATE_MIN_SEGMENTS` segments to
    embed or units run); ``dry_run``: only the estimate, nothing written in ``run_dir``.
    """
    from clapnb import inputs  # the data check reads manifests: only when a sweep starts

    config = config.resolved()
    run = RunFolder(Path(run_dir).resolve())
    executor = make_executor(jobs)  # refuses -j 0 before any work
    own = None
    try:
        notebooks_dir()
        check_compatible(run.root, config, rebuild=rebuild)
        inputs.check_run_inputs(config)  # data and weights named together, before sweep.json or any work
        if dry_run:
            return dry_run_estimate(run, config, jobs=jobs, log=log)
        if embed_executor is None:
            embed_executor = own = make_embed_executor(config)
        run.root.mkdir(parents=True, exist_ok=True)
        with run.lock():
            return _run(run, config, executor, rebuild=rebuild, log=log,
                        progress=sys.stderr.isatty() if progress is None else progress, views=views,
                        embed_executor=embed_executor, estimate=estimate)
    finally:
        executor.close()
        if own is not None:
            own.close()


def _estimate_workers(config: StudyConfig, jobs: int, embed_executor=None) -> tuple[int, bool, int | None]:
    """``(workers, fresh, threads)``: how many processes embed at once, whether each loads its own backbone,
    and the BLAS/torch threads each has (a Dask worker 1, a local process cores / N; None: this process's)."""
    cores = os.cpu_count() or 1
    if embed_executor is not None or config.uses_units:
        n = max(1, int(embed_executor.workers)) if embed_executor is not None else config.embed_workers
        return n, True, 1 if config.scheduler else max(1, cores // n)
    n = min(max(1, int(jobs)), len(config.length_list))
    return n, n > 1, max(1, cores // int(jobs)) if int(jobs) > 1 else None


def _timed_backbone(config: StudyConfig) -> tuple[object, float]:
    t = time.perf_counter()
    backbone = stages.cached_backbone(config)
    return backbone, time.perf_counter() - t


def dry_run_estimate(run: RunFolder, config: StudyConfig, *, jobs: int = 1, log: Log = _stderr) -> SweepOutcome:
    """``clapnb sweep --dry-run``: the cost estimate of the whole sweep; nothing is written in ``run``."""
    from clapnb import embed_units

    log(f"dry run: planning the segments of {config.lengths} s in a scratch folder (nothing is written in {run.root})")
    tables = embed_units.scratch_segment_tables(run, config)
    if not tables:
        raise InputError(f"{config.data}: no length has segments to plan (see 'clapnb segments' for the reason)")
    backbone, load_s = _timed_backbone(config)
    workers, fresh, threads = _estimate_workers(config, jobs)
    if config.scheduler and config.scheduler != "local":
        from clapnb.dask_executor import DaskExecutor  # the cluster's own count, without starting work

        with DaskExecutor(config.scheduler) as ex:
            workers = ex.workers
    plan = embed_units.plan(tables, backbone)
    est = embed_units.sweep_estimate(plan, backbone, workers=workers, fresh_workers=fresh, load_s=load_s,
                                     threads=threads)
    log(embed_units.estimate_line(est))
    return SweepOutcome(run.root, estimate=est)


def _run(run: RunFolder, config: StudyConfig, executor, *, rebuild: bool, log: Log, progress: bool,
         views: bool = True, embed_executor=None, estimate: bool | None = None) -> SweepOutcome:
    from clapnb import embed_units

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    log(f"reading recordings from {config.data}")
    upstream = stages.build_run(run, config, log=log)  # fails on bad data before sweep.json exists
    stored = write_sweep_config(run.root, config, rebuild=rebuild)
    outcome = SweepOutcome(run.root, timings=timings)
    lengths = config.length_list
    if embed_executor is not None or estimate is not False:
        # every length's segments first: the estimate and the embedding units plan over all of them
        tables = embed_units.segment_tables(run, config, upstream, log=log)
        backbone, load_s = _timed_backbone(config) if tables else (None, 0.0)
        plan = embed_units.plan(tables, backbone) if tables else None
        if plan is not None and (estimate or (estimate is None and (
                embed_executor is not None or plan.n_todo >= embed_units.ESTIMATE_MIN_SEGMENTS))):
            workers, fresh, threads = _estimate_workers(config, executor.workers, embed_executor)
            outcome.estimate = embed_units.sweep_estimate(plan, backbone, workers=workers, fresh_workers=fresh,
                                                          load_s=load_s, threads=threads)
            log(embed_units.estimate_line(outcome.estimate))
        if plan is not None and embed_executor is not None:
            t_units = time.monotonic()
            outcome.embedding_units = embed_units.embed_units(plan, config, embed_executor, backbone=backbone,
                                                              log=log, progress=progress, estimate=outcome.estimate)
            timings["embedding units"] = time.monotonic() - t_units
    for n in lengths:
        run.length(n).failed.unlink(missing_ok=True)
    jobs = [(str(run.root), config.parameters(), n, upstream, progress) for n in lengths]
    built: dict[int, stages.LengthBuild] = {}
    for (_, _, n, _, _), fut in executor.map_unordered(stages.build_length_job, jobs):
        try:
            b = fut.result()
        except Exception as exc:  # a worker died
            b = stages.LengthBuild(n, error=error_summary(exc), failed_stage="(worker)")
        built[n] = b
        if not b.ok:
            o = LengthOutcome(n, "failed", sum(b.seconds.values()), b.error, stage=b.failed_stage)
            io.atomic_write_json(run.length(n).failed, asdict(o))
            outcome.lengths.append(o)
    timings["stages"] = time.monotonic() - t0

    t1 = time.monotonic()
    if not views:  # a repeat: its results rows, no notebooks
        for n in lengths:
            b = built[n]
            if b.ok:
                row = length_row(run.length(n))
                io.atomic_write_json(run.length(n).done, {"row": row, "seconds": round(sum(b.seconds.values()), 1),
                                                          "stages": b.fingerprints})
                outcome.lengths.append(LengthOutcome(n, "done" if b.changed else "skipped", sum(b.seconds.values()),
                                                     random_weights=bool(row["random_weights"])))
        outcome.results, _ = run.write_results(stored.length_list)
        return outcome
    rendered = False
    with ViewRunner(cwd=run.root) as views:
        for n in lengths:
            b = built[n]
            if not b.ok:
                continue
            lf = run.length(n)
            if _views_current(lf, b):
                outcome.lengths.append(LengthOutcome(n, "skipped"))
                continue
            o = render_length(views, run, n, b, log=log)
            rendered = rendered or o.status == "done"
            outcome.lengths.append(o)
        if rendered or not run.dataset_notebook.is_file() or run.dataset_failed.is_file():
            log("dataset notebook")
            try:
                views.execute(DATASET_NOTEBOOK, run.dataset_notebook,
                              {"run_dir": str(run.root), "lengths": stored.lengths}, run.root)
                run.dataset_failed.unlink(missing_ok=True)
            except Exception as exc:
                outcome.dataset_error = error_summary(exc)
                io.atomic_write_text(run.dataset_failed, outcome.dataset_error + "\n")
    timings["views"] = time.monotonic() - t1
    outcome.results, _ = run.write_results(stored.length_list)
    return outcome


def run_variants(configs: StudyConfig | Sequence[StudyConfig], run_dir: str | os.PathLike,
                 harmonise: str | Sequence[str] | None = None, *, jobs: int = 1, rebuild: bool = False,
                 log: Log = _stderr, estimate: bool | None = None, dry_run: bool = False) -> list[SweepOutcome]:
    """The sweep once per bandwidth setting: the first in ``run_dir``, each other one in
    ``run_dir/variants/harmonise-<setting>``, everything else equal (the book shows them side by side).

    ``configs``: one config per setting (:func:`clapnb.config.from_args`), or one config and the
    ``harmonise`` list.
    """
    if isinstance(configs, StudyConfig):
        values = parse_harmonise_list(harmonise) if harmonise is not None else [configs.harmonise_bandwidth]
        configs = [replace(configs, harmonise_bandwidth=v) for v in values]
    main = RunFolder(run_dir)
    if dry_run:  # the main run's estimate: the other settings and repeats reuse its recordings, not its segments
        first = replace(configs[0], seed=configs[0].seed_list[0]) if configs[0].protocol != "folds" else configs[0]
        if len(configs) > 1 or first.protocol == "folds" or len(first.seed_list) > 1:
            log("dry run: the estimate covers the main run; the other bandwidth settings and repeats are not counted")
        return [run_sweep(first, main.root, jobs=jobs, rebuild=rebuild, log=log, dry_run=True)]
    # one executor for every setting and repeat, started on the first unit (after run_sweep's checks)
    embed_executor = make_embed_executor(configs[0].resolved())
    try:
        return _run_variants(configs, main, jobs=jobs, rebuild=rebuild, log=log, estimate=estimate,
                             embed_executor=embed_executor)
    finally:
        if embed_executor is not None:
            embed_executor.close()


def _run_variants(configs: Sequence[StudyConfig], main: RunFolder, *, jobs: int, rebuild: bool, log: Log,
                  estimate: bool | None, embed_executor) -> list[SweepOutcome]:
    kw = {"jobs": jobs, "rebuild": rebuild, "log": log, "estimate": estimate, "embed_executor": embed_executor}
    outcomes = run_repeats(configs[0], main.root, **kw)
    for cfg in configs[1:]:
        out = main.variant(cfg.harmonise_bandwidth)
        out.root.mkdir(parents=True, exist_ok=True)
        # the data and their measurement do not change: take the main run's recordings stage
        for path in (*main.shared_with_variants, main.stage_record("recordings")):
            target = out.root / path.relative_to(main.root)
            if path.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        log(f"comparison run with --harmonise-bandwidth {cfg.harmonise_bandwidth}: {out.root}")
        outcomes.extend(run_repeats(cfg, out.root, **kw))
    return outcomes


# --- repeats: the study over several split seeds / folds -----------------------------------------------

def repeat_configs(config: StudyConfig, n_folds: int | None = None) -> list[StudyConfig]:
    """One configuration per repeat, the first being ``config``'s own split (the main run)."""
    if config.protocol == "folds":
        if n_folds is None:
            raise InputError("repeat_configs: the number of folds is needed for --protocol folds")
        first = int(config.test_fold or 1)
        count = n_folds if int(config.repeats) in (0,) else min(int(config.repeats), n_folds)
        folds = [(first - 1 + k) % n_folds + 1 for k in range(count)]
        return [replace(config, test_fold=f) for f in folds]
    return [replace(config, seed=s) for s in config.seed_list]


def run_repeats(config: StudyConfig, run_dir: str | os.PathLike, *, jobs: int = 1, rebuild: bool = False,
                log: Log = _stderr, views: bool = True, embed_executor=None,
                estimate: bool | None = None) -> list[SweepOutcome]:
    """The sweep once per split seed (or test fold): the first in ``run_dir`` with its notebooks, each other
    one in ``run_dir/repeats/seed-K`` (``fold-I``) without notebooks; the embeddings of the segments and
    noisy copies an earlier repeat had come from the content-keyed cache (a copy's noise is keyed by the
    copy, :func:`clapnb.segments.noise_seed`). Then ``repeats.json``/``.csv``: every row with its repeat, the spread
    over repeats and the paired headline comparisons (:mod:`clapnb.repeats`)."""
    from clapnb import repeats as rp
    from clapnb.store import repeat_name

    main = RunFolder(Path(run_dir).resolve())
    many = config.protocol == "folds" or len(config.seed_list) > 1
    first_cfg = replace(config, seed=config.seed_list[0]) if config.protocol != "folds" else config
    kw = {"jobs": jobs, "rebuild": rebuild, "log": log, "embed_executor": embed_executor, "estimate": estimate}
    outcomes = [run_sweep(first_cfg, main.root, views=views, **kw)]
    if not many:
        return outcomes
    n_folds = None
    if config.protocol == "folds":
        from clapnb.folds import fold_numbers

        _, n_folds, notes = fold_numbers(pd.read_parquet(main.recordings))
        for line in notes:
            log(line)
    configs = repeat_configs(first_cfg, n_folds)
    for cfg in configs[1:]:
        name = repeat_name(cfg)
        out = main.repeat(name)
        out.root.mkdir(parents=True, exist_ok=True)
        for path in (*main.shared_with_variants, main.stage_record("recordings")):  # the data do not change
            target = out.root / path.relative_to(main.root)
            if path.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        log(f"repeat {name}: {out.root}")
        outcomes.append(run_sweep(cfg, out.root, views=False, **kw))
    if any(o.results is not None and len(o.results) for o in outcomes):
        write_repeats(main, [repeat_name(c) for c in configs])
    return outcomes


def repeat_results(run: RunFolder, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Every repeat's results rows (main run first) with a ``repeat`` column."""
    from clapnb import repeats as rp
    from clapnb.store import repeat_name

    main_cfg = read_run_config(run)
    frames = {repeat_name(main_cfg) if main_cfg else "main": run.read_results()[0]}
    for name, sub in run.repeat_runs():
        if names is None or name in names:
            frames[name] = sub.read_results()[0]
    return rp.long_results(frames)


def write_repeats(run: RunFolder, names: Sequence[str] | None = None) -> dict:
    """``repeats.json`` (rows, spread per length and metric, paired comparisons) and ``repeats.csv``."""
    from clapnb import repeats as rp

    long = repeat_results(run, names)
    spread = rp.spread_table(long)
    comparisons = rp.headline_comparisons(long)
    doc = {"repeats": sorted(set(long["repeat"]), key=list(long["repeat"]).index),
           "rows": long.to_dict(orient="records"),
           "spread": spread.to_dict(orient="records"), "comparisons": comparisons.to_dict(orient="records"),
           "random_weights": bool(long["random_weights"].fillna(False).astype(bool).any())}
    io.atomic_write_json(run.repeats_json, doc)
    io.atomic_write_text(run.repeats_csv, long.to_csv(index=False))
    return doc
