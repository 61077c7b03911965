"""The embedding cache's index: lookups open only the shards that hold the keys; the index is
rebuilt (with a notice) when it is missing, corrupt or stale; two processes write one cache at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clapnb import backbones, cache_index, embeddings
from clapnb.embeddings import EmbeddingCache

REPO = Path(__file__).resolve().parents[1]
NS = {"backbone": "mfcc", "dim": 5, "fingerprint": "test-index"}


@pytest.fixture(scope="module")
def rows(envsounds, envsounds_meta):
    """Real rows to store: MFCC embeddings of 1-s pieces of 48 real 5-s clips (240 rows, 5 dims kept)."""
    from clapnb import audio

    bb = backbones.load_backbone("mfcc", policy="native")
    meta = envsounds_meta[envsounds_meta["source_dataset"] == "ESC-50"].sort_values("path").head(48)
    sr = bb.sample_rate
    waves, keys = [], []
    for p in meta["path"]:
        x = audio.load(envsounds / p, sr=sr)
        for k in range(5):
            waves.append(x[k * sr:(k + 1) * sr])
            keys.append(f"{p}#{k}")
    X = embeddings.embed_waveforms(bb, waves)[:, :5]
    return keys, np.ascontiguousarray(X, dtype=np.float32)


def _fill(root: Path, keys, X, per: int = 10) -> EmbeddingCache:
    c = EmbeddingCache(root, NS)
    for s in range(0, len(keys), per):
        c.write(keys[s:s + per], X[s:s + per])
    return c


def _same(found: dict, keys, X) -> None:
    assert sorted(found) == sorted(keys)
    at = {k: i for i, k in enumerate(keys)}
    np.testing.assert_array_equal(np.stack([found[k] for k in keys]), X[[at[k] for k in keys]])


def test_a_lookup_opens_only_the_shards_holding_its_keys(rows, tmp_path):
    keys, X = rows
    c = _fill(tmp_path, keys, X)
    n_shards = len(list(c.dir.glob("shard-*.npz")))
    assert n_shards == 24
    fresh = EmbeddingCache(tmp_path, NS)
    wanted = keys[3:7] + keys[55:58] + ["not-cached"]  # in shards 0 and 5
    found = fresh.lookup(wanted)
    assert fresh.shards_read == 2
    _same(found, wanted[:-1], X[[*range(3, 7), *range(55, 58)]])
    assert fresh._scan(wanted).keys() == found.keys()  # the scan (the old lookup) agrees
    assert fresh.shards_read == 2 + n_shards  # ... and opened every shard
    everything = EmbeddingCache(tmp_path, NS).lookup(keys)
    _same(everything, keys, X)


@pytest.mark.parametrize("how", ["missing", "garbage", "truncated"])
def test_a_missing_or_corrupt_index_is_rebuilt_from_the_shards(rows, tmp_path, capfd, how):
    keys, X = rows
    c = _fill(tmp_path, keys, X)
    index = c.dir / cache_index.INDEX_NAME
    if how == "missing":  # a cache written before the index existed
        index.unlink()
    elif how == "garbage":
        index.write_bytes(b"not sqlite at all" * 200)
    else:
        raw = index.read_bytes()
        index.write_bytes(raw[:len(raw) // 3])
    capfd.readouterr()
    fresh = EmbeddingCache(tmp_path, NS)
    _same(fresh.lookup(keys[100:130]), keys[100:130], X[100:130])
    err = capfd.readouterr().err
    assert "indexed 24 shard(s) the index lacked" in err
    if how != "missing":
        assert "is unusable" in err and "rebuilding it from the shards" in err
        assert len(list((c.dir / "bad").glob("index.sqlite.*"))) == 1
    again = EmbeddingCache(tmp_path, NS)
    _same(again.lookup(keys[100:130]), keys[100:130], X[100:130])
    assert again.shards_read == 3 and capfd.readouterr().err == ""  # rebuilt once, then trusted


def test_a_stale_index_is_never_trusted(rows, tmp_path, capfd):
    keys, X = rows
    c = _fill(tmp_path, keys, X)
    con = sqlite3.connect(c.dir / cache_index.INDEX_NAME)
    with con:  # the index now says every row of the first shard sits one place later
        con.execute("UPDATE rows SET pos = (pos + 1) % 10 WHERE shard = (SELECT MIN(shard) FROM rows)")
        first = con.execute("SELECT MIN(shard) FROM rows").fetchone()[0]
        shard_keys = [k for (k,) in con.execute("SELECT key FROM rows WHERE shard = ?", (first,))]
    con.close()
    gone = sorted(c.dir.glob("shard-*.npz"))[-1]
    gone_keys = c.read_shard(gone)[0].tolist()
    gone.unlink()  # deleted by hand
    capfd.readouterr()
    found = EmbeddingCache(tmp_path, NS).lookup(keys)
    err = capfd.readouterr().err
    assert "was stale" in err and "no longer on disk" in err
    assert set(found) == set(keys) - set(gone_keys) and set(shard_keys) <= set(found)
    left = [k for k in keys if k in found]
    _same(found, left, X[[keys.index(k) for k in left]])


def test_a_small_namespace_is_scanned_until_it_outgrows_the_scan(rows, tmp_path, capfd):
    """A short recording's few shards need no index; the fifth shard creates it, quietly, with every shard in it."""
    keys, X = rows
    c = EmbeddingCache(tmp_path, NS)
    for s in range(0, 40, 10):
        c.write(keys[s:s + 10], X[s:s + 10])
        _same(c.lookup(keys[:s + 10]), keys[:s + 10], X[:s + 10])
    assert not (c.dir / cache_index.INDEX_NAME).exists()
    c.write(keys[40:50], X[40:50])
    assert (c.dir / cache_index.INDEX_NAME).exists()
    fresh = EmbeddingCache(tmp_path, NS)
    _same(fresh.lookup(keys[45:50]), keys[45:50], X[45:50])
    assert fresh.shards_read == 1 and capfd.readouterr().err == ""


def test_two_processes_write_one_cache_at_once(rows, tmp_path):
    """Two writers (real processes), each 24 shards, 12 of them the same: one index row per key, no damage."""
    keys, X = rows
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "keys.txt").write_text("\n".join(keys))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from clapnb.embeddings import EmbeddingCache
        me = int(sys.argv[1])
        X = np.load({str(tmp_path / 'X.npy')!r})
        keys = open({str(tmp_path / 'keys.txt')!r}).read().split("\\n")
        c = EmbeddingCache({str(tmp_path / 'cache')!r}, {NS!r})
        half = len(keys) // 2
        mine = list(range(0, half, 5)) + list(range(half + me * half // 2, half + (me + 1) * half // 2, 5))
        for s in mine:  # the first half written by both, the second half split between them
            c.write(keys[s:s + 5], X[s:s + 5])
            assert len(c.lookup(keys[s:s + 5])) == 5
        print(len(mine))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(me)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for me in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and int(out) == 36, err
    c = EmbeddingCache(tmp_path / "cache", NS)
    on_disk = c.keys_on_disk()
    assert len(on_disk) == len(set(on_disk)) == len(keys)  # identical shards rewrote one file
    con = sqlite3.connect(c.dir / cache_index.INDEX_NAME)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM rows").fetchone() == (len(keys), len(keys))
    con.close()
    fresh = EmbeddingCache(tmp_path / "cache", NS)
    _same(fresh.lookup(keys), keys, X)
    assert fresh.shards_read == len(keys) // 5 and not list(c.dir.glob("*.tmp"))


def test_an_index_sqlite_cannot_open_falls_back_to_scanning(rows, tmp_path, capfd):
    """Where SQLite cannot work (here: a folder in the index's place; a read-only cache alike): same rows."""
    keys, X = rows
    c = _fill(tmp_path, keys[:80], X[:80])
    for suffix in ("", "-wal", "-shm"):
        Path(str(c.dir / cache_index.INDEX_NAME) + suffix).unlink(missing_ok=True)
    (c.dir / cache_index.INDEX_NAME).mkdir()
    capfd.readouterr()
    fresh = EmbeddingCache(tmp_path, NS)
    _same(fresh.lookup(keys[:80]), keys[:80], X[:80])
    fresh.write(keys[80:90], X[80:90])
    _same(fresh.lookup(keys[:90]), keys[:90], X[:90])
    err = capfd.readouterr().err
    assert err.count("cannot keep its index") == 1 and "reading every shard instead" in err
