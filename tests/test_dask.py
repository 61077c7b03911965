"""Work units on executors: detection over an archive (chunked == unchunked, Dask == in-process, killed
worker/client), the sweep's embedding units and `clapnb levels` on the same LocalCluster, the sweep's --dry-run.

The archive: a 44.1-kHz file composed of real clips (read with seeks in chunks), a 48-kHz one
(resampled: chunks seek to their resampling segment), two real clips as they are, and a corrupt file. The
probe: a logistic regression on MFCC embeddings of other real clips (plumbing, not a good detector).
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clapnb import archive, detect
from clapnb.cli import main

LABELS = ["siren", "dog", "crickets"]
OUTPUTS = ("events.csv", "events.parquet", "scores.parquet", "raven_selections.txt")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One BLAS/torch thread in this process, as in each Dask worker (threads_per_worker=1): bit-identity
    across executors holds at equal threads per process (a different BLAS split rounds differently)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def arc(one_thread, envsounds, envsounds_meta, tmp_path_factory):
    from sklearn.linear_model import LogisticRegression

    from clapnb import probe as probe_mod
    from clapnb.backbones import load_backbone
    from clapnb.embeddings import _backbone_meta, embed_waveforms

    out = tmp_path_factory.mktemp("arc")
    d = envsounds_meta[envsounds_meta["original_label"].isin(LABELS)].sort_values("path")
    d = d.drop_duplicates(["original_label", "freesound_id"])
    train, rest = d.groupby("original_label").head(4), d.groupby("original_label").tail(3)
    bb = load_backbone("mfcc", policy="native")
    waves, y = [], []
    for p, lab in zip(train["path"], train["original_label"]):
        x, sr = sf.read(envsounds / p, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        waves += [x[:sr * 2], x[sr * 2:sr * 4]]
        y += [lab, lab]
    X = embed_waveforms(bb, waves)
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    lr = LogisticRegression(max_iter=2000).fit((X - mean) / scale, y)
    W = lr.coef_.astype(np.float32)
    probe = probe_mod.Probe(weight=W, bias=lr.intercept_.astype(np.float32), mean=mean.astype(np.float32),
                            scale=scale.astype(np.float32), classes=[str(c) for c in lr.classes_], config=probe_mod.ProbeConfig(),
                            backbone=_backbone_meta(bb, None), length_s=2.0)
    probe_mod.save_probe(out / "probe.pt", probe)
    a = out / "archive"
    a.mkdir()
    clips = [sf.read(envsounds / p, dtype="float32", always_2d=True)[0].mean(axis=1) for p in rest["path"]]
    long = np.concatenate(clips + clips[:3])[:44100 * 45]
    sf.write(a / "long_44k.wav", np.stack([long, 0.5 * long], axis=1), 44100, subtype="PCM_24")
    import soxr

    sf.write(a / "long_48k.wav", soxr.resample(long[:44100 * 21], 44100, 48000), 48000)
    for p in rest["path"][:2]:
        x, sr = sf.read(envsounds / p, dtype="float32")
        sf.write(a / f"clip_{os.path.basename(p)}", x, sr)
    sf.write(a / "corrupt.flac", long[:44100 * 8], 44100)
    raw = bytearray((a / "corrupt.flac").read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (a / "corrupt.flac").write_bytes(bytes(raw))
    post = detect.PostConfig(threshold=0.5, merge_gap_s=1.0, min_duration_s=1.0)
    ref = detect.detect_files(out / "probe.pt", [a], out / "ref", post=post, cache_dir=out / "refcache", hop_s=1.0)
    return {"out": out, "probe": out / "probe.pt", "archive": a, "post": post, "ref": ref, "backbone": bb}


@pytest.fixture(scope="module")
def cluster(one_thread):
    """One LocalCluster of 2 workers for every test here (starting one costs tens of seconds)."""
    from clapnb.dask_executor import make_executor

    with make_executor("local", 2, gpus=["0", "1"]) as ex:  # no GPU here: the ids are only set, one each
        yield ex


def _run(arc, name, **kw):
    out = arc["out"] / name
    res = detect.detect_files(arc["probe"], [arc["archive"]], out, post=arc["post"], hop_s=1.0,
                              cache_dir=arc["out"] / f"{name}-cache", **kw)
    return out, res


def _cached(arc, cache, res):
    """Every window embedding of every analysed file, read back from ``cache``."""
    rows = []
    for f in res.record["files"]:
        if f["status"] == "skipped":
            continue
        c = detect.window_cache(arc["backbone"], arc["ref"].record["backbone"], f["sha256"], cache)
        keys = c.keys_on_disk()
        assert len(keys) == len(set(keys)) == f["n_windows"], f["file"]  # no window lost or doubled
        found = c.lookup(keys)
        rows.append(np.stack([found[k] for k in sorted(keys)]))
    return rows


def _same_outputs(a, b):
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    fa, fb = sorted((a / "files").glob("*.parquet")), sorted((b / "files").glob("*.parquet"))
    assert [p.name for p in fa] == [p.name for p in fb] and len(fa) == 4
    for p, q in zip(fa, fb):
        pd.testing.assert_frame_equal(pd.read_parquet(p), pd.read_parquet(q), check_exact=True)


def test_reference_run_skips_the_corrupt_file_with_its_reason(arc):
    st = {os.path.basename(f["file"]): f for f in arc["ref"].record["files"]}
    assert st["corrupt.flac"]["status"] == "skipped" and "corrupt.flac" in st["corrupt.flac"]["reason"]
    assert sum(f["status"] == "done" for f in st.values()) == 4
    assert st["long_44k.wav"]["n_windows"] == 44  # 45 s, 2-s windows every 1 s


def test_chunked_equals_unchunked_events_and_embeddings(arc):
    ref_out = arc["out"] / "ref"
    out, res = _run(arc, "chunked", chunk_s=7.5)  # chunk edges fall inside windows
    _same_outputs(ref_out, out)
    st = {os.path.basename(f["file"]): f for f in res.record["files"]}
    assert st["long_44k.wav"]["units"] == 6 and st["long_48k.wav"]["units"] == 3
    assert not list((out / "units").glob("*.parquet"))  # unit outputs folded into the file outputs
    ref_rows = _cached(arc, arc["out"] / "refcache", arc["ref"])
    rows = _cached(arc, arc["out"] / "chunked-cache", res)
    for r, c in zip(ref_rows, rows):
        np.testing.assert_array_equal(r, c)  # bit-identical embeddings


def test_batches_across_files_equal_one_unit_per_job(arc):
    """Short units share forward batches (the reference groups the two clips with the corrupt file):
    the same outputs as one unit per job, the corrupt file still skipped alone with its reason."""
    rec = arc["ref"].record
    assert rec["n_jobs"] < rec["n_units_run"]
    out, res = _run(arc, "ungrouped", group_windows=0)
    assert res.record["n_jobs"] == res.record["n_units_run"] == rec["n_units_run"]
    _same_outputs(arc["out"] / "ref", out)
    st = {os.path.basename(f["file"]): f for f in res.record["files"]}
    ref_st = {os.path.basename(f["file"]): f for f in rec["files"]}
    assert st["corrupt.flac"]["reason"] == ref_st["corrupt.flac"]["reason"]
    for name in st:
        if name != "corrupt.flac":  # every window computed once, in either way
            assert st[name]["n_computed"] == ref_st[name]["n_computed"] == st[name]["n_windows"]
    grouped = [g for g in archive.group_units([{"first": 0, "stop": n} for n in (4, 4, 7, 44, 20, 3)], 18)]
    assert [[u["stop"] for u in g] for g in grouped] == [[4, 4, 7], [44], [20], [3]]


def test_chunk_ranges_cover_every_window_once():
    starts = np.arange(0, 100, 0.5)
    for chunk in (None, 1.0, 7.3, 30.0, 1000.0):
        r = archive.chunk_ranges(starts, chunk)
        assert r[0][0] == 0 and r[-1][1] == len(starts) and all(a[1] == b[0] for a, b in zip(r, r[1:]))
        if chunk:
            for a, b in r:
                assert np.floor(starts[a] / chunk) == np.floor(starts[b - 1] / chunk)
    assert archive.parse_duration("1h") == 3600 and archive.parse_duration("30min") == 1800
    assert archive.parse_duration(None) is None


class Interrupted:
    """An in-process executor whose client dies (KeyboardInterrupt, as on SIGTERM) after ``n`` units."""

    def __init__(self, n):
        from clapnb.dask_executor import make_executor

        self.inner, self.n, self.workers = make_executor(None), n, 1

    def map_unordered(self, fn, items):
        for i, pair in enumerate(self.inner.map_unordered(fn, items)):
            if i == self.n:
                raise KeyboardInterrupt
            yield pair

    def close(self):
        pass


def _units(arc, chunk_s):
    """Every (file, first, stop) unit of the archive, from the headers alone."""
    from clapnb import audio, stream

    out = set()
    for f in detect.list_inputs([arc["archive"]]):
        info = audio.probe(f)
        starts = stream.window_starts(stream.output_frames(info.frames, info.sample_rate, 44100), 44100, 2.0, 1.0)
        out |= {(f, a, b) for a, b in archive.chunk_ranges(np.array([s for s, _ in starts]) / 44100, chunk_s)}
    return out


def test_killed_client_rerun_does_only_the_missing_units(arc):
    with pytest.raises(KeyboardInterrupt):
        _run(arc, "client", chunk_s=10.0, executor=Interrupted(4), group_windows=0)  # a job = a unit
    journal = arc["out"] / "client" / "journal.jsonl"
    first = [json.loads(x) for x in journal.read_text().splitlines()]
    assert len(first) == 4 and all("unit" in j for j in first)
    out, res = _run(arc, "client", chunk_s=10.0, group_windows=0)
    second = [json.loads(x) for x in journal.read_text().splitlines()][4:]
    unit = lambda j: (j["file"], *j["unit"])  # noqa: E731
    done_first = {unit(j) for j in first if j["status"] == "done"}
    run_second = {unit(j) for j in second if "unit" in j}
    assert done_first and not done_first & run_second  # nothing finished is run again
    # everything else ran again, except the unit that finished as the client died (its output was
    # written atomically, its journal line never was)
    assert run_second <= _units(arc, 10.0) and len(_units(arc, 10.0) - run_second - done_first) == 1
    assert res.record["n_units_run"] == len(run_second)
    _same_outputs(arc["out"] / "ref", out)


class KillsAWorker:
    """The Dask executor; after the first finished unit it SIGKILLs a worker process that is busy."""

    def __init__(self, ex):
        self.ex, self.killed = ex, None

    def __getattr__(self, name):
        return getattr(self.ex, name)

    def map_unordered(self, fn, items):
        for i, pair in enumerate(self.ex.map_unordered(fn, items)):
            if self.killed is None:
                import time

                for _ in range(50):  # a worker with a unit in hand (there is one unless the run is ending)
                    busy = [w for w, keys in self.ex.client.processing().items() if keys]
                    if busy:
                        break
                    time.sleep(0.1)
                pids = self.ex.worker_pids()
                self.killed = pids[busy[0] if busy else sorted(pids)[0]]
                os.kill(self.killed, signal.SIGKILL)
            yield pair

    def close(self):
        pass


def test_local_cluster_gives_the_in_process_results_even_when_a_worker_is_killed(arc, cluster):
    from clapnb.gpu_workers import worker_device

    assert cluster.workers == 2 and cluster.dashboard_link
    assert sorted(cluster.devices.values()) == ["0", "1"]  # one device per worker
    killer = KillsAWorker(cluster)
    out, res = _run(arc, "dask", chunk_s=10.0, executor=killer)
    # the worker that replaced the killed one got its device too
    assert sorted(cluster.client.run(worker_device).values()) == ["0", "1"]
    assert killer.killed is not None
    with pytest.raises(ProcessLookupError):
        os.kill(killer.killed, 0)
    _same_outputs(arc["out"] / "ref", out)
    assert res.record["n_skipped"] == 1  # only the corrupt file
    pids = {j["pid"] for j in map(json.loads, (out / "journal.jsonl").read_text().splitlines()) if "pid" in j}
    assert pids and os.getpid() not in pids  # the workers did the units, not the client


def test_cli_dry_run_prints_only_the_estimate(arc, capsys):
    out = arc["out"] / "dry"
    assert main(["detect", "--probe", str(arc["probe"]), "--out", str(out), "--hop", "1", "--dry-run",
                 "--cache", str(arc["out"] / "dry-cache"), "--workers", "2", "--no-progress", str(arc["archive"])]) == 0
    text = capsys.readouterr()
    assert "estimate:" in text.out and "/ 2 worker(s)" in text.out and "storage" in text.out
    assert not (out / "events.csv").exists() and not (out / "journal.jsonl").exists()


def test_two_processes_on_one_cache_embed_each_window_once(arc):
    """Two `clapnb detect` processes on the same file and cache at once: no key twice, each window embedded once."""
    import subprocess
    import sys

    cache = arc["out"] / "shared-cache"
    f = str(arc["archive"] / "long_44k.wav")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(__import__("pathlib").Path(__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # as the reference
    procs = [subprocess.Popen([sys.executable, "-m", "clapnb.cli", "detect", "--probe", str(arc["probe"]), "--out",
                               str(arc["out"] / f"twin{k}"), "--cache", str(cache), "--hop", "1", "--chunk", "10s",
                               "--no-estimate", "--no-progress", "--batch-size", "2", f], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    recs = [json.loads((arc["out"] / f"twin{k}" / "detect.json").read_text())["files"][0] for k in range(2)]
    c = detect.window_cache(arc["backbone"], arc["ref"].record["backbone"], recs[0]["sha256"], cache)
    keys = c.keys_on_disk()
    assert len(keys) == len(set(keys)) == recs[0]["n_windows"]
    assert recs[0]["n_computed"] + recs[1]["n_computed"] == recs[0]["n_windows"]
    ref = [r for r in arc["ref"].record["files"] if r["file"] == f][0]
    for k in range(2):
        pd.testing.assert_frame_equal(pd.read_parquet(arc["out"] / f"twin{k}" / recs[k]["output"]),
                                      pd.read_parquet(arc["out"] / "ref" / ref["output"]), check_exact=True)


def test_local_processes_executor_gives_the_same_results(arc):
    """The pipeline layer's -j N executor (spawned processes, backbone loaded once in each)."""
    from clapnb.dask_executor import make_executor

    with make_executor(None, 2) as ex:
        out, res = _run(arc, "procs", chunk_s=20.0, executor=ex)
    _same_outputs(arc["out"] / "ref", out)
    pids = {j["pid"] for j in map(json.loads, (out / "journal.jsonl").read_text().splitlines()) if "pid" in j}
    assert os.getpid() not in pids


# --- the sweep's embedding units and levels on the same cluster ---------------------------------------

SWEEP_LABELS = ["church_bells", "dog", "gun_shot"]


@pytest.fixture(scope="module")
def study(envsounds, envsounds_meta, tmp_path_factory):
    from conftest import small_manifest

    from clapnb import config

    path = tmp_path_factory.mktemp("study") / "tiny.csv"
    small_manifest(envsounds_meta, envsounds, 6, SWEEP_LABELS).to_csv(path, index=False)
    return config.StudyConfig(data=str(path), label_column="original_label", counts="4,2,2,2", backbone="mfcc",
                              lengths="1,3", probe_max_epochs=5)


def test_sweep_embedding_units_on_the_cluster_equal_the_in_process_stage(study, cluster, tmp_path, monkeypatch):
    """Units of 16 segments on 2 Dask workers, one of them killed after the first unit: the same bytes as
    the in-process stage; a rerun runs no unit."""
    from dataclasses import replace

    from clapnb import store, sweep
    from clapnb.embeddings import EmbeddingCache, cache_namespace, load_run_embeddings

    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache-ref"))
    ref = sweep.run_sweep(study, tmp_path / "ref", log=lambda s: None, views=False)
    assert ref.ok and ref.embedding_units is None
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache-dask"))  # the units get it from the client
    cfg = replace(study, scheduler="local", unit_segments=16)
    killer = KillsAWorker(cluster)
    out = sweep.run_sweep(cfg, tmp_path / "dask", log=lambda s: None, views=False, embed_executor=killer)
    assert out.ok and killer.killed is not None
    units = out.embedding_units
    # a unit finished on the killed worker is rerun (its result died with it) and finds its rows cached
    assert units["n_units"] >= 4 and units["n_failed_units"] == 0 and 0 < units["n_computed"] <= units["n_segments"]
    assert units["pids"] and os.getpid() not in units["pids"]  # the workers embedded, not the client
    assert out.estimate is not None and out.estimate["segments_todo"] == units["n_segments"]
    for n in study.length_list:
        a = load_run_embeddings(store.RunFolder(tmp_path / "ref").length(n).root)
        b = load_run_embeddings(store.RunFolder(tmp_path / "dask").length(n).root)
        np.testing.assert_array_equal(a.X, b.X)  # bit-identical embeddings
        assert b.meta["n_computed"] == 0  # the stage found every row the units wrote
    bmeta = b.meta["backbone"]
    keys = EmbeddingCache(b.meta["cache_dir"], cache_namespace(bmeta, bmeta.get("lowpass_hz"))).keys_on_disk()
    assert len(keys) == len(set(keys)) == units["n_segments"] == 60  # every row once, none twice
    # the run folder records no trace of where it ran (no stage record, no sweep.json entry)
    run = store.RunFolder(tmp_path / "dask")
    for record in [run.config_file, *run.stages_dir.glob("*.json"), *run.length(1).stages_dir.glob("*.json"),
                   run.length(1).dataset]:
        assert "scheduler" not in record.read_text(), record
    again = sweep.run_sweep(cfg, tmp_path / "dask", log=lambda s: None, views=False, embed_executor=cluster)
    assert again.embedding_units["n_units"] == 0 and all(o.status == "skipped" for o in again.lengths)


def test_levels_on_the_cluster_equal_the_in_process_levels(arc, cluster, tmp_path):
    from clapnb import levels

    files = [str(arc["archive"] / "long_44k.wav"), *map(str, sorted(arc["archive"].glob("clip_*.wav")))]
    kw = {"events_path": str(arc["out"] / "ref" / "events.csv"), "exclude": "all", "interval_s": 10.0}
    levels.run_levels(files, tmp_path / "here", **kw)
    levels.run_levels(files, tmp_path / "dask", executor=cluster, **kw)
    for name in ("levels.csv", "events_levels.csv"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "here" / "levels.parquet"),
                                  pd.read_parquet(tmp_path / "dask" / "levels.parquet"), check_exact=True)


def test_sweep_dry_run_prints_only_the_estimate(study, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["sweep", "--data", study.data, "--label-column", "original_label", "--counts", study.counts,
                 "--backbone", "mfcc", "--lengths", study.lengths, "--scheduler", "local", "--workers", "2",
                 "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("estimate: ") and " of 60 segment(s) to embed" in text and "/ 2 worker(s)" in text
    assert "storage" in text and "ms at 1 s" in text and "ms at 3 s" in text
    assert not out.exists() and not (tmp_path / "cache").exists()  # no stage output, no cache row
