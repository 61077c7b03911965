"""Locks between clapnb processes: one writer per run folder, one computer per cache key.

Two processes that share a run folder or an embedding cache must not both do the work, and must
never leave a half-merged result. Built on :mod:`filelock` (``flock`` on POSIX: the kernel drops a
dead process's locks, so a killed run never leaves a lock that blocks the next one).

* :func:`run_lock` -- a context manager holding ``DIR/.clapnb.lock`` for as long as a process
  writes into the run folder ``DIR``; a second process refuses with a message naming the holder
  (``wait=False``) or waits for it (``wait=True``, a notice says for whom).
* :class:`Claims` -- per-key claims in an embedding-cache namespace folder: a process claims
  the keys it is about to compute (``claims/<token>.json``, alive while it holds
  ``claims/<token>.lock``), others skip those keys and later wait for the claim to end and read
  the rows from the cache. A claim whose lock is free belongs to a dead process and is dropped.
* :func:`end_children_on_signal` -- SIGTERM/SIGINT end the process's children (papermill's
  kernels) before the process stops, so no orphan keeps writing into a run folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from clapnb.errors import ClapnbError

LOCK_NAME = ".clapnb.lock"


class LockedError(ClapnbError):
    """Another clapnb process holds the lock; the message names it and what to do."""


def _holder_text(info_path: Path) -> str:
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another clapnb process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return (f"another clapnb process (pid {info.get('pid')} on {info.get('host')}, "
            f"`{info.get('command', 'clapnb')}`, since {since})")


def _notice(text: str) -> None:
    print(f"clapnb: {text}", file=sys.stderr, flush=True)


@contextmanager
def run_lock(folder: str | os.PathLike, *, wait: bool = False, timeout: float | None = None,
             command: str | None = None) -> Iterator[Path]:
    """Hold the lock of a run folder (created if needed) while the block runs.

    ``wait=False``: refuse at once with :class:`LockedError` if another process holds it.
    ``wait=True``: wait (up to ``timeout`` seconds; None = as long as it takes), with a notice.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path, info = folder / LOCK_NAME, folder / (LOCK_NAME + ".json")
    lock = FileLock(str(path), is_singleton=True)
    if lock.is_locked:  # this process holds it already (a stage inside a command that locked): nested
        yield folder
        return
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder_text(info)
        if not wait:
            raise LockedError(f"{folder} is in use by {holder}; wait for it to finish, or use another "
                              "folder (--out)") from None
        _notice(f"waiting for {holder}, which is writing {folder}")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise LockedError(f"{folder} is still in use by {holder} after {timeout:g} s; "
                              "try again later or use another folder") from None
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                  "command": command or " ".join(["clapnb", *sys.argv[1:3]])}
        try:
            info.write_text(json.dumps(record), encoding="utf-8")
        except OSError:
            pass  # the holder's description is a courtesy; the lock itself is what counts
        yield folder
    finally:
        try:
            info.unlink(missing_ok=True)
        except OSError:
            pass
        lock.release()
        if created:  # a command that failed before writing anything leaves no empty folder behind
            try:
                path.unlink(missing_ok=True)
                folder.rmdir()
            except OSError:
                pass  # not empty: the command wrote its results there


def is_locked(folder: str | os.PathLike) -> bool:
    """Whether some process holds ``folder``'s run lock now (a probe that takes and drops it)."""
    from filelock import FileLock, Timeout

    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


class Claims:
    """Claims on cache keys in one namespace folder (see the module docstring).

    Use :meth:`guard` around "look up the cache, then claim what is missing" and around
    :meth:`release`, so that no process sees a key as neither cached nor claimed while another
    is about to publish it.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder) / "claims"
        self._held: dict[str, object] = {}

    @contextmanager
    def guard(self) -> Iterator[None]:
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / ".guard.lock")):
            yield

    def others(self) -> dict[str, set[str]]:
        """Live claims of other processes: token -> keys (call under :meth:`guard`); stale ones go."""
        from filelock import FileLock, Timeout

        out: dict[str, set[str]] = {}
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.glob("*.json")):
            token = path.stem
            if token in self._held:
                continue
            probe = FileLock(str(self.folder / f"{token}.lock"))
            try:
                probe.acquire(timeout=0)
            except Timeout:  # held: its process is alive and computing
                try:
                    out[token] = set(json.loads(path.read_text(encoding="utf-8"))["keys"])
                except (OSError, ValueError, KeyError):
                    out[token] = set()
                continue
            try:  # free: the claiming process died; what it finished is in the cache
                path.unlink(missing_ok=True)
                (self.folder / f"{token}.lock").unlink(missing_ok=True)
            finally:
                probe.release()
        return out

    def claim(self, keys: Iterable[str]) -> str:
        """Claim ``keys`` for this process (call under :meth:`guard`); returns the claim's token."""
        from filelock import FileLock

        token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        lock = FileLock(str(self.folder / f"{token}.lock"))
        lock.acquire(timeout=0)
        self._held[token] = lock
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                           "keys": sorted(keys)})
        tmp = self.folder / f".{token}.json.tmp"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, self.folder / f"{token}.json")
        return token

    def release(self, token: str) -> None:
        """End this process's claim (call under :meth:`guard`, after its rows are in the cache)."""
        lock = self._held.pop(token, None)
        (self.folder / f"{token}.json").unlink(missing_ok=True)
        (self.folder / f"{token}.lock").unlink(missing_ok=True)
        if lock is not None:
            lock.release()

    def wait_for(self, token: str, timeout: float | None = None) -> bool:
        """Block until another process's claim ends (its lock is free); False on timeout."""
        from filelock import FileLock, Timeout

        path = self.folder / f"{token}.lock"
        if not path.exists():
            return True
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            return False
        lock.release()
        return True


def fill_claimed(folder: str | os.PathLike, *, refresh: Callable[[], set[str]],
                 choose: Callable[[set[str]], dict[str, int]], compute: Callable[[dict[str, int]], None],
                 waiting: Callable[[str, int], None] | None = None) -> int:
    """Compute the cache rows nobody has, with other processes filling the same cache at once.

    Under :meth:`Claims.guard`: ``refresh()`` takes what the cache now holds and returns the keys
    still missing; ``choose(claimed_by_others)`` returns the rows this process will compute (key ->
    position), which it claims. Outside the guard it runs ``compute`` on them and releases the
    claim once their rows are in the cache; when others hold everything missing it waits for them
    (``waiting(token, n)`` is told once per other claim) and looks again. Returns how many rows it
    computed. A claim whose process died is dropped by :meth:`Claims.others`, so its rows come back.
    """
    claims = Claims(folder)
    told: set[str] = set()
    n_computed = 0
    while True:
        with claims.guard():
            missing = refresh()
            if not missing:
                return n_computed
            busy = claims.others()
            mine = choose(set().union(*busy.values()) if busy else set())
            token = claims.claim(mine) if mine else None
        if token is not None:
            try:
                compute(mine)
                n_computed += len(mine)
            finally:
                with claims.guard():
                    claims.release(token)
            continue
        for other, their in busy.items():
            if their & missing:
                if waiting is not None and other not in told:
                    told.add(other)
                    waiting(other, len(their & missing))
                claims.wait_for(other)


def _end_children(grace_s: float = 3.0) -> None:
    """Terminate this process's descendants (e.g. notebook kernels, ``-j`` workers), then kill what is left.

    multiprocessing's own children (a ``-j N`` process pool's workers) are ended and reaped through
    multiprocessing: if psutil reaped one first, ``Process.is_alive()`` would stay True for ever and the
    pool's shutdown would spin, so a terminated ``sweep -j 2`` hung instead of exiting. Its resource
    tracker is left alone: it exits with this process, and killing it only makes it complain.
    """
    try:
        import psutil
    except ImportError:  # psutil comes with jupyter; without it there are no kernels to end
        return
    import multiprocessing
    from multiprocessing import resource_tracker

    pooled = {p.pid: p for p in multiprocessing.active_children()}
    tracker = getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None)
    children = [c for c in psutil.Process().children(recursive=True) if c.pid != tracker]
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs([c for c in children if c.pid not in pooled], timeout=grace_s)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    deadline = time.monotonic() + grace_s
    for proc in pooled.values():
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(grace_s)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` blocks flush and release what they hold."""


@contextmanager
def end_children_on_signal() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT end the children first, then interrupt the process.

    Without this a killed sweep leaves its papermill kernel running (it only notices its parent's
    death a second later) and a Python process ignores ``finally`` blocks on SIGTERM.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _end_children()
        if signum == signal.SIGTERM:
            raise Terminated()
        raise KeyboardInterrupt()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
