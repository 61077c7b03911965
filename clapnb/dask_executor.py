"""Jobs on a Dask cluster: the third implementation of :class:`clapnb.executor.Executor`.

``--scheduler local`` starts a :class:`distributed.LocalCluster` of ``--workers N`` processes
(one thread each: torch and BLAS threads are the parallelism inside a job, processes the
parallelism across jobs); ``--scheduler tcp://HOST:PORT`` connects to a running scheduler
(``dask scheduler`` + ``dask worker``, or dask-jobqueue on SLURM/PBS). Jobs are module-level
functions with plain arguments, exactly as for the local executors, so a job never carries a
model: each worker process loads a backbone once, on its first job, into :data:`PROCESS_CACHE`
(see :func:`process_cached`), and keeps it for every later job.

On a machine with GPUs, ``--scheduler local`` gives each worker **one device**: a
:class:`clapnb.gpu_workers.OneDevicePerWorker` plugin sets ``CUDA_VISIBLE_DEVICES`` in every worker
process before its first job (round-robin, :func:`clapnb.gpu_workers.assign_devices`, when there are
more workers than GPUs; a worker restarted by its nanny gets its device again), so a backbone loaded
with ``device="auto"`` lands on that worker's GPU. Workers beyond the GPU count share devices: with
decoding in the workers (not in threads under one GIL) two or more workers per GPU keep it fed. On a
``tcp://`` cluster the cluster's own configuration decides (e.g. dask-cuda's one worker per GPU).

A worker that dies mid-job (killed, out of memory) is replaced by its nanny and the scheduler
reruns its jobs elsewhere (``distributed.scheduler.allowed-failures`` times, then the job fails
with ``KilledWorker``, which callers report like any other failed job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from clapnb.errors import InputError

#: Per-process objects too costly to rebuild per job (backbones, probes), keyed by their spec.
PROCESS_CACHE: dict[str, Any] = {}


def process_cached(key: str, factory: Callable[[], Any]) -> Any:
    """``factory()`` once per process and key: a worker loads its backbone on its first job only."""
    if key not in PROCESS_CACHE:
        PROCESS_CACHE[key] = factory()
    return PROCESS_CACHE[key]


def worker_environ() -> dict:
    """Dask's environment for new worker processes, without its ``MALLOC_TRIM_THRESHOLD_=65536``.

    That setting returns freed memory to the system at once; for the large short-lived arrays of
    decoding and feature extraction it makes a unit about 1.8x slower (measured: the same 60 MFCC
    segments in 3.7-4.0 s vs 2.0-2.2 s on one worker). glibc's own adaptive threshold is used instead.
    """
    import dask
    import distributed  # noqa: F401  (registers the distributed.* defaults)

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


class DaskExecutor:
    """Runs jobs on a Dask cluster: a new LocalCluster (``"local"``) or an existing scheduler address."""

    def __init__(self, scheduler: str = "local", workers: int = 2, *, dashboard: bool = True,
                 gpus: Sequence[str] | None = None) -> None:
        """``gpus``: the devices to spread a LocalCluster's workers over (default: ``gpu_workers.visible_gpus()``)."""
        import dask
        from distributed import Client, LocalCluster

        self.cluster = None
        self.devices: dict[str, str | None] = {}  # worker address -> its CUDA_VISIBLE_DEVICES
        if scheduler == "local":
            if int(workers) < 1:
                raise InputError(f"--workers must be 1 or more, got {workers}")
            with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
                self.cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                            dashboard_address=":0" if dashboard else None,
                                            silence_logs=logging.CRITICAL)  # clapnb reports failed units itself
            self.client = Client(self.cluster)
            from clapnb import gpu_workers

            gpus = gpu_workers.visible_gpus() if gpus is None else list(gpus)
            if gpus:
                self.devices = gpu_workers.one_device_per_worker(self.client, gpus)
        elif scheduler.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
            try:
                self.client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise InputError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc}); start one with "
                                 "'dask scheduler' (and 'dask worker ADDRESS') or use --scheduler local") from None
        else:
            raise InputError(f"--scheduler must be 'local' or a scheduler address like tcp://HOST:8786, got {scheduler!r}")
        self.scheduler = scheduler

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:  # no dashboard (bokeh missing or disabled)
            return None

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> process id (what a test kills; what an operator looks up in ``top``)."""
        import os

        return self.client.run(os.getpid)

    def submit(self, fn: Callable[..., Any], /, *args: Any):
        return self.client.submit(fn, *args, pure=False)

    def map_unordered(self, fn: Callable[..., Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """``(item, finished future)`` in completion order; a failed job's future holds its exception."""
        from distributed import as_completed

        futures = {}
        for item in items:
            futures[self.client.submit(fn, item, pure=False)] = item
        for fut in as_completed(list(futures)):
            yield futures[fut], fut

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LazyExecutor:
    """An executor started on its first job: bad input is refused, and a rerun with nothing to do returns,
    before a cluster starts (tens of seconds)."""

    def __init__(self, factory: Callable[[], object], workers: int | None) -> None:
        """``workers``: what the executor will have; None: start it to ask (a running cluster)."""
        self._factory, self._inner, self._workers = factory, None, workers

    @property
    def started(self):
        if self._inner is None:
            self._inner = self._factory()
        return self._inner

    @property
    def workers(self) -> int:
        return self.started.workers if self._inner is not None or self._workers is None else int(self._workers)

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.started, "dashboard_link", None)

    def submit(self, fn: Callable[..., Any], /, *args: Any):
        return self.started.submit(fn, *args)

    def map_unordered(self, fn: Callable[..., Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        return self.started.map_unordered(fn, items)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def __enter__(self) -> "LazyExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lazy_executor(scheduler: str | None, workers: int, *, on_start: Callable[[Any], None] | None = None) -> LazyExecutor:
    """:func:`make_executor`, started on the first job (``on_start(executor)`` then, e.g. to print the dashboard)."""
    def start():
        ex = make_executor(scheduler, workers)
        if on_start is not None:
            on_start(ex)
        return ex

    return LazyExecutor(start, None if scheduler not in (None, "", "inprocess", "none", "local") else workers)


def make_executor(scheduler: str | None = None, workers: int = 1, *, gpus: Sequence[str] | None = None):
    """The executor for ``--scheduler``/``--workers``.

    ``None``/``"inprocess"``: in this process (``workers`` > 1: that many local processes, the
    pipeline layer's executor); ``"local"``: a LocalCluster of ``workers`` processes;
    ``tcp://HOST:PORT``: an existing Dask cluster (``workers`` is ignored: the cluster has its own).
    ``gpus``: devices for a LocalCluster's workers, one each (default: the visible ones).
    """
    if scheduler in (None, "", "inprocess", "none"):
        from clapnb.executor import make_executor as local

        return local(workers)
    return DaskExecutor(scheduler, workers, gpus=gpus)
