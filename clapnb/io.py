"""Small I/O helpers: atomic writes and content fingerprints.

Every file clapnb writes goes through here so that a run killed half-way never leaves a
truncated file that a later run would trust.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from clapnb.errors import InputError

#: OS errors about the place a file goes (not about clapnb): the CLI shows them as one line.
FILESYSTEM_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                               errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG, errno.EFBIG})


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming the file being written: a failed ``write`` on a full disk carries no name, and a
    failed rename names our temporary file first, which means nothing to the user."""
    if exc.errno is not None and (exc.filename is None or exc.filename2 is not None
                                  or Path(str(exc.filename)).name.endswith(".tmp")):
        return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    return exc


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: which path, what is wrong, what to do."""
    path = exc.filename if exc.filename is not None else "a file"
    if exc.filename2:
        path = f"{path} -> {exc.filename2}"
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        what = "permission denied; choose a folder you can write to (--out, --cache) or fix its permissions"
    elif code == errno.EROFS:
        what = "the file system is read-only; choose a writable folder (--out, --cache)"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        what = ("no space left on the device (or quota exceeded); free some space or choose a folder on "
                "another disk, then rerun: finished files are kept and no partial file was left")
    elif code == errno.ENOTDIR:
        what = "a part of this path is a file, not a folder; choose another folder (--out, --cache)"
    elif code == errno.EEXIST:
        what = "exists and is a file, not a folder; choose another folder (--out, --cache) or move the file"
    elif code == errno.EISDIR:
        what = "is a folder where a file was expected"
    else:
        what = exc.strerror or os.strerror(code or 0)
    return f"{path}: {what} ({errno.errorcode.get(code, code)})"


def writable_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work is done, that ``path`` is (or can become) a folder clapnb may write in.

    Nothing is created: a run that fails on its input leaves no empty output folder behind.
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under {p}, which is a file"
                raise InputError(f"{option} {path}: {where}, not a folder; choose another folder")
            if not os.access(p, os.W_OK | os.X_OK):
                code = errno.EROFS if _read_only_fs(p) else errno.EACCES
                raise InputError(f"{option} {path}: cannot write there: "
                                 f"{describe_os_error(OSError(code, os.strerror(code), str(p)))}")
            break
    return path


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _tmp_beside(path: Path) -> Path:
    """A temporary file next to ``path`` with the usual umask-based mode (mkstemp makes it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    try:
        tmp = _tmp_beside(path)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _named(exc, path) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/pandas scalars and paths so ``json.dumps`` accepts them."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not valid JSON
        return None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as stable, indented JSON (sorted keys) atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file clapnb wrote; a damaged one is an :class:`InputError` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is damaged ({type(exc).__name__}: {exc}); it was cut short or edited: "
                         "delete it and rerun the step that writes it") from None


def atomic_write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a DataFrame to parquet atomically and reproducibly (no pandas index, fixed writer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        tmp = _tmp_beside(path)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        # Drop the pandas metadata blob: it embeds library versions and would make the bytes of
        # two otherwise identical tables differ between environments.
        table = table.replace_schema_metadata(None)
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise _named(exc, path) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes: the identity of a recording in caches and fingerprints."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(parts: Iterable[Any]) -> str:
    """Short stable hash of JSON-able parts (configs, lists of file hashes)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(to_jsonable(part), sort_keys=True).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where clapnb keeps reusable computed data: ``explicit`` > ``$CLAPNB_CACHE`` > ``~/.cache/clapnb``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("CLAPNB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clapnb"


def read_parquet(path: str | os.PathLike, what: str = "table", hint: str = "rebuild it", *,
                 nullable_int: bool = True) -> pd.DataFrame:
    """Read a parquet file; a damaged one (truncated, random, 0 bytes) is one clear InputError.

    ``nullable_int``: int64 columns become pandas ``Int64`` (missing values stay integers), else
    what ``pd.read_parquet`` gives (float64 where values are missing).
    """
    import pyarrow as pa

    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get) if nullable_int else table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        size = os.path.getsize(path) if os.path.isfile(path) else None
        raise InputError(f"{path} cannot be read as a {what} ({'0 bytes' if size == 0 else str(exc).splitlines()[0]}); "
                         f"it is damaged or not what clapnb wrote: {hint}") from None
