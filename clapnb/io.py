"""Small I/O helpers: atomic writes and content fingerprints.

Every file clapnb writes goes through here so that a run killed half-way never leaves a
truncated file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd


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
    tmp = _tmp_beside(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
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
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def atomic_write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a DataFrame to parquet atomically and reproducibly (no pandas index, fixed writer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        # Drop the pandas metadata blob: it embeds library versions and would make the bytes of
        # two otherwise identical tables differ between environments.
        table = table.replace_schema_metadata(None)
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
        os.replace(tmp, path)
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
