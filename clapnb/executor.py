"""Where stage jobs run: in this process, or in local worker processes (``-j N``).

A job is a module-level function and plain, picklable arguments (paths, parameter dicts,
lengths): never a live model, so the same job runs in-process, in a spawned worker, or later on
a Dask worker (issue 16: a ``DaskExecutor`` implements the same two methods with
``client.submit`` / ``as_completed``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, Protocol


class Executor(Protocol):
    """Runs jobs; results come back as they complete (``map``) or as futures (``submit``)."""

    workers: int

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future: ...

    def map_unordered(self, fn: Callable[..., Any], items: Iterable[Any]) -> Iterator[tuple[Any, Future]]:
        """``(item, finished future)`` for each item, in completion order."""
        ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Runs each job immediately in this process (the default; what a notebook or a debugger sees)."""

    workers = 1

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # the caller decides; KeyboardInterrupt too
            if isinstance(exc, KeyboardInterrupt):
                raise
            fut.set_exception(exc)
        return fut

    def map_unordered(self, fn: Callable[..., Any], items: Iterable[Any]) -> Iterator[tuple[Any, Future]]:
        for item in items:
            yield item, self.submit(fn, item)

    def close(self) -> None:
        pass

    def __enter__(self) -> "InProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _limit_threads(threads: int) -> None:
    """Worker initialiser: split the cores between the workers (torch, BLAS, OpenMP)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        import torch  # already imported by most jobs; set here so the first job sees it

        torch.set_num_threads(threads)
    except ImportError:
        pass


class ProcessExecutor:
    """``workers`` spawned processes, each with ``cpu_count // workers`` threads.

    Each worker keeps what it loads (a backbone is loaded once per worker, see
    :func:`clapnb.stages.cached_backbone`).
    """

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_limit_threads, initargs=(threads,))

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        return self._pool.submit(fn, *args)

    def map_unordered(self, fn: Callable[..., Any], items: Iterable[Any]) -> Iterator[tuple[Any, Future]]:
        futures = {self._pool.submit(fn, item): item for item in items}
        for fut in as_completed(futures):
            yield futures[fut], fut

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_executor(jobs: int = 1) -> InProcessExecutor | ProcessExecutor:
    """``-j 1``: in this process; ``-j N``: N local processes."""
    from clapnb.errors import InputError

    if int(jobs) < 1:
        raise InputError(f"-j/--jobs must be 1 or more, got {jobs}")
    return InProcessExecutor() if int(jobs) == 1 else ProcessExecutor(int(jobs))
