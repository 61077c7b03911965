"""The index of an embedding-cache namespace: key -> (shard, row), in SQLite (stdlib, WAL mode).

Without it a lookup opens every shard of the namespace until it has found its keys: fine for a
few shards, quadratic for a study or an archive (168k rows are ~330 shards; every unit of a
detection run would open them all). With it a lookup asks ``index.sqlite`` which shards hold the
keys and opens only those.

The shards stay the truth; the index is derived and never trusted blindly:

* a **writer** writes its shard and inserts its rows in one SQLite write transaction
  (``BEGIN IMMEDIATE``: writers take turns for the few milliseconds of a shard, readers are not
  blocked), so no reader ever sees a shard on disk that the index lacks unless its writer died
  in between;
* a **reader** compares the shard files in the folder with the index's list of shards (one
  directory listing, no shard opened); shards the index lacks (a cache from before the index, a
  writer killed between its shard and its commit, shards copied in by hand) are indexed, rows of
  shards gone from disk are dropped, each with a notice;
* every row read through the index is checked against the shard itself: the key at that
  position, and the shard's own verification (checksum, shape, finite values); a mismatch means
  a stale index: that shard is re-indexed from its contents, with a notice;
* an index SQLite cannot read (corrupt, truncated, another format) is moved to ``bad/`` and
  rebuilt from the shards, with a notice; where SQLite cannot work at all (a read-only cache
  folder) lookups fall back to scanning the shards.

SQLite's WAL mode needs the cache on a local filesystem (or one host at a time on a network
one); several processes and threads of one machine may read and write at once. Because every
row is verified against its shard, a wrong index can only make rows look missing (they are then
recomputed), never serve a wrong row.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

INDEX_NAME = "index.sqlite"
#: Bump when the schema changes: an index of another format is rebuilt.
INDEX_FORMAT = "1"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shards (name TEXT PRIMARY KEY, n INTEGER NOT NULL, size INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, shard TEXT NOT NULL, pos INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS rows_by_shard ON rows (shard)",
)
_BUSY_S = 300.0  # a writer holds the lock for one shard's write; wait long rather than fail


class IndexUnusable(Exception):
    """SQLite cannot work in this folder at all (read-only, no locking): scan the shards instead."""


def notice(text: str) -> None:
    print(f"clapnb: notice: {text}", file=sys.stderr, flush=True)


class ShardIndex:
    """``index.sqlite`` of one namespace folder. Open a connection per operation (processes fork, pickle)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / INDEX_NAME
        self._checked_pid: int | None = None  # integrity checked once per process and object

    # --- connection --------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        con = sqlite3.connect(str(self.path), timeout=_BUSY_S, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            for stmt in _SCHEMA:
                con.execute(stmt)
            con.execute("INSERT OR IGNORE INTO meta (k, v) VALUES ('format', ?)", (INDEX_FORMAT,))
            fmt = con.execute("SELECT v FROM meta WHERE k = 'format'").fetchone()[0]
            if fmt != INDEX_FORMAT:
                raise sqlite3.DatabaseError(f"index format {fmt!r}, this clapnb writes {INDEX_FORMAT!r}")
            if self._checked_pid != os.getpid():
                result = con.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise sqlite3.DatabaseError(f"integrity check: {result}")
                self._checked_pid = os.getpid()
        except BaseException:
            con.close()
            raise
        return con

    def connect(self) -> tuple[sqlite3.Connection, bool]:
        """An open connection and whether the index was (re)created just now (then it must be filled)."""
        existed = self.path.is_file() and self.path.stat().st_size > 0
        try:
            return self._open(), not existed
        except sqlite3.DatabaseError as exc:
            if _unusable(exc):
                raise IndexUnusable(str(exc)) from None
            reason = str(exc)
        dest = self.folder / "bad" / f"{INDEX_NAME}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            dest.parent.mkdir(exist_ok=True)
            os.replace(self.path, dest)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            where = f"moved to {dest}"
        except FileNotFoundError:
            where = "already moved by another process"
        except OSError as exc:
            raise IndexUnusable(f"{reason}; cannot move it aside ({exc.strerror})") from None
        notice(f"embedding cache index {self.path} is unusable ({reason}); {where}; rebuilding it from the shards")
        try:
            return self._open(), True
        except sqlite3.DatabaseError as exc:
            raise IndexUnusable(str(exc)) from None

    # --- reading and writing ----------------------------------------------------------------

    @staticmethod
    def indexed_shards(con: sqlite3.Connection) -> dict[str, tuple[int, int]]:
        return {name: (n, size) for name, n, size in con.execute("SELECT name, n, size FROM shards")}

    @staticmethod
    def add(con: sqlite3.Connection, name: str, keys: Sequence[str], size: int) -> None:
        """Index one shard's rows (inside a transaction); a key already indexed elsewhere keeps its place."""
        con.execute("INSERT OR REPLACE INTO shards (name, n, size) VALUES (?, ?, ?)", (name, len(keys), int(size)))
        con.executemany("INSERT OR IGNORE INTO rows (key, shard, pos) VALUES (?, ?, ?)",
                        ((k, name, i) for i, k in enumerate(keys)))

    @staticmethod
    def drop(con: sqlite3.Connection, names: Iterable[str]) -> None:
        for name in names:
            con.execute("DELETE FROM rows WHERE shard = ?", (name,))
            con.execute("DELETE FROM shards WHERE name = ?", (name,))

    @staticmethod
    def where(con: sqlite3.Connection, keys: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
        """shard name -> [(key, row)] for the indexed ones among ``keys``."""
        out: dict[str, list[tuple[str, int]]] = {}
        keys = list(dict.fromkeys(keys))
        step = 900  # below SQLite's default limit of host parameters
        for s in range(0, len(keys), step):
            part = keys[s:s + step]
            q = f"SELECT key, shard, pos FROM rows WHERE key IN ({','.join('?' * len(part))})"
            for key, shard, pos in con.execute(q, part):
                out.setdefault(shard, []).append((key, int(pos)))
        return out

    @staticmethod
    def count(con: sqlite3.Connection) -> int:
        return int(con.execute("SELECT COUNT(*) FROM rows").fetchone()[0])


def _unusable(exc: sqlite3.DatabaseError) -> bool:
    """Errors of the environment (not of the file): rebuilding would not help."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        s in text for s in ("unable to open", "readonly", "read-only", "disk i/o error", "locking protocol"))
