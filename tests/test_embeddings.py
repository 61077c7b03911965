"""Embedding extraction over segments tables: recipe, cache hits, resume, bad input, run folders, CLI.

CLAP runs use the random-weights stand-in through msclap's unchanged loading path; feature
baselines (fast) cover the cache semantics that do not depend on the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapnb import audio, backbones, cli, embeddings, io
from clapnb.embeddings import EmbeddingError
from clapnb.errors import InputError

LENGTH_S = 2.0


def make_segments(paths: list[str], length_s: float = LENGTH_S, per_clip: int = 2) -> pd.DataFrame:
    """A segments table in the architecture.md schema, plus one noise-augmented copy."""
    rows = []
    for p in paths:
        sha = io.file_sha256(p)
        for k in range(per_clip):
            start = k * length_s
            rows.append({"segment_id": f"{sha[:12]}:{int(start * 1000)}", "path": p, "sha256": sha,
                         "source": "test", "label": Path(p).parent.name, "class": "dogs", "split": "train",
                         "group": Path(p).stem, "start_s": start, "end_s": start + length_s,
                         "length_s": length_s, "augmented": False, "source_segment": "",
                         "snr_db": np.nan, "noise_seed": pd.NA})
    aug = dict(rows[0], segment_id=rows[0]["segment_id"] + "+aug0", augmented=True,
               source_segment=rows[0]["segment_id"], snr_db=10.0, noise_seed=1234)
    df = pd.DataFrame(rows + [aug])
    df["noise_seed"] = df["noise_seed"].astype("Int64")
    return df


def recipe(row) -> np.ndarray:
    """architecture.md: cut(load(path)), then add_noise if augmented."""
    seg = audio.cut(audio.load(row["path"]), audio.TARGET_SR, row["start_s"], row["end_s"])
    return audio.add_noise(seg, row["snr_db"], int(row["noise_seed"])) if row["augmented"] else seg


class Counting:
    """Delegates to a real backbone and counts embed_audio calls (optionally interrupting one)."""

    def __init__(self, inner, interrupt_at: int | None = None):
        self.inner, self.calls, self.rows, self.interrupt_at = inner, 0, 0, interrupt_at

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_audio(self, waves):
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.rows += len(waves)
        return self.inner.embed_audio(waves)


class NaNBackbone:
    """A third-party backbone that misbehaves: NaN for silent input, or the wrong width."""

    name, dim, sample_rate, has_text, random_weights, logit_scale = "broken", 4, 44100, False, False, None
    fingerprint = "broken-1"
    metadata = {"name": "broken", "policy": "native"}

    def __init__(self, width: int = 4):
        self.width = width

    def embed_audio(self, waves):
        out = np.ones((len(waves), self.width), dtype=np.float32)
        out[[float(np.abs(w).max()) == 0 for w in waves]] = np.nan
        return out

    def embed_text(self, prompts):
        raise NotImplementedError


@pytest.fixture(scope="module")
def clips(envsounds_meta, envsounds) -> list[str]:
    """Three 5-s 44.1 kHz ESC-50 clips and one 4-s 22.05 kHz UrbanSound8K clip."""
    meta = envsounds_meta.sort_values("path")
    esc = meta[meta["source_dataset"] == "ESC-50"].groupby("original_label").head(1).head(3)
    us8k = meta[(meta["source_dataset"] == "UrbanSound8K") & (meta["sample_rate"] == 22050)
                & (meta["duration_s"] >= 4)].head(1)
    return [str(envsounds / p) for p in pd.concat([esc, us8k])["path"]]


@pytest.fixture(scope="module")
def segments(clips) -> pd.DataFrame:
    return make_segments(clips)


@pytest.fixture(scope="module")
def clap(clap_2023):
    return clap_2023  # the session's stand-in: one load less


@pytest.fixture(scope="module")
def reference(clap, segments, tmp_path_factory):
    """Uninterrupted run, batch size 2, in its own cache."""
    cache = tmp_path_factory.mktemp("cache-ref")
    return cache, embeddings.compute_embeddings(segments, clap, cache_dir=cache, batch_size=2, progress=False)


# --- audio ------------------------------------------------------------------------------------

def test_iter_segment_audio_follows_the_recipe_and_decodes_each_file_once(segments, monkeypatch):
    decoded = []
    real_decode = audio.decode
    monkeypatch.setattr(audio, "decode", lambda p, *a: decoded.append(p) or real_decode(p, *a))
    got = dict(embeddings.iter_segment_audio(segments, audio.TARGET_SR))
    assert sorted(got) == list(range(len(segments)))
    assert sorted(decoded) == sorted(set(segments["path"]))  # once per recording
    monkeypatch.setattr(audio, "decode", real_decode)
    for pos, row in segments.iterrows():
        np.testing.assert_array_equal(got[pos], recipe(row))
        assert len(got[pos]) == int(LENGTH_S * audio.TARGET_SR)
    assert not np.array_equal(got[len(segments) - 1], got[0])  # the augmented copy is noisy


# --- the stand-in CLAP ------------------------------------------------------------------------

def test_embeddings_through_msclap_standin(clap, segments, reference):
    _, emb = reference
    assert emb.X.shape == (len(segments), 1024) and emb.X.dtype == np.float32
    direct = clap.embed_audio([recipe(row) for _, row in segments.iterrows()])
    np.testing.assert_allclose(emb.X, direct, rtol=1e-4, atol=1e-5)
    assert emb.meta["n_computed"] == len(segments) and emb.meta["n_cached"] == 0
    assert emb.meta["random_weights"] is True and "NOT CLAP results" in emb.meta["warning"]
    assert emb.meta["backbone"]["policy"] == "msclap" and emb.meta["backbone"]["fingerprint"] == clap.fingerprint


def test_second_run_is_a_cache_hit(clap, segments, reference):
    cache, first = reference
    counting = Counting(clap)
    again = embeddings.compute_embeddings(segments, counting, cache_dir=cache, batch_size=2, progress=False)
    assert counting.calls == 0 and again.meta["n_computed"] == 0 and again.meta["n_cached"] == len(segments)
    np.testing.assert_array_equal(again.X, first.X)
    assert again.meta["x_sha256"] == first.meta["x_sha256"]


def test_interrupted_run_resumes_and_ends_with_identical_arrays(clap, segments, reference, tmp_path):
    _, first = reference
    cache = tmp_path / "cache"
    stopper = Counting(clap, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        embeddings.compute_embeddings(segments, stopper, cache_dir=cache, batch_size=2, progress=False,
                                      shard_rows=100)
    assert stopper.rows == 4  # two batches finished before the interruption ...
    assert len(list(cache.rglob("shard-*.npz"))) == 1  # ... and were saved on the way out
    resumed = Counting(clap)
    emb = embeddings.compute_embeddings(segments, resumed, cache_dir=cache, batch_size=2, progress=False)
    assert resumed.rows == len(segments) - 4 and emb.meta["n_cached"] == 4
    np.testing.assert_array_equal(emb.X, first.X)


def test_cli_embed_with_the_standin_labels_random_weights(segments, tmp_path, capsys, standin_dir):
    run = tmp_path / "run"
    run.mkdir()
    io.atomic_write_parquet(run / "segments.parquet", segments.head(3))
    code = cli.main(["embed", "--segments", str(run / "segments.parquet"), "--backbone", "msclap-2023",
                     "--device", "cpu", "--cache", str(tmp_path / "cache"), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0 and "3 computed" in out.out and "RANDOM WEIGHTS" in out.err
    summary = next(line for line in out.out.splitlines() if "3 computed" in line)
    assert "RANDOM WEIGHTS" in summary  # the line a user copies into notes says it too
    meta = json.loads((run / "embeddings.json").read_text())
    assert meta["random_weights"] is True and meta["backbone"]["random_weights"] is True
    assert meta["backbone"]["weights_path"] == str((standin_dir / "CLAP_weights_2023_random.pth").resolve())
    assert embeddings.load_run_embeddings(run).X.shape == (3, 1024)


# --- cache keys (fast, with MFCC) -------------------------------------------------------------

def test_keys_follow_content_not_paths(segments, clips, tmp_path):
    mfcc = backbones.load_backbone("mfcc")
    cache = tmp_path / "cache"
    first = embeddings.compute_embeddings(segments, mfcc, cache_dir=cache, progress=False)
    moved = segments.copy()
    copy = tmp_path / "renamed.flac"
    shutil.copy(clips[0], copy)
    moved.loc[moved["path"] == clips[0], "path"] = str(copy)
    counting = Counting(mfcc)
    again = embeddings.compute_embeddings(moved, counting, cache_dir=cache, progress=False)
    assert counting.calls == 0
    np.testing.assert_array_equal(again.X, first.X)
    # a different noise seed, bounds or input policy is a different embedding
    reseeded = segments.copy()
    reseeded.loc[reseeded["augmented"], "noise_seed"] = 99
    shifted = segments.assign(start_s=segments["start_s"] + 0.5, end_s=segments["end_s"] + 0.5)
    k0, k1, k2 = (embeddings.segment_keys(t) for t in (segments, reseeded, shifted))
    assert [a == b for a, b in zip(k0, k1)] == [not r for r in segments["augmented"]]
    assert not set(k0) & set(k2)
    native = embeddings.compute_embeddings(segments, backbones.load_backbone("mfcc", policy="native"),
                                           cache_dir=cache, progress=False)
    assert native.meta["n_computed"] == len(segments) and native.meta["cache_namespace"] != first.meta["cache_namespace"]
    assert not np.allclose(native.X, first.X)


def test_duplicate_rows_are_computed_once(segments, tmp_path):
    doubled = pd.concat([segments, segments.head(2)], ignore_index=True)
    counting = Counting(backbones.load_backbone("mfcc"))
    emb = embeddings.compute_embeddings(doubled, counting, cache_dir=tmp_path, progress=False)
    assert counting.rows == len(segments)
    np.testing.assert_array_equal(emb.X[-2:], emb.X[:2])


# --- bad input ----------------------------------------------------------------------------------

def test_nan_or_misshapen_embeddings_are_refused(segments, tmp_path):
    silent = tmp_path / "silence.wav"
    import soundfile as sf

    sf.write(silent, np.zeros(3 * 44100, dtype=np.float32), 44100)
    table = pd.concat([segments.head(1), make_segments([str(silent)], per_clip=1).head(1)], ignore_index=True)
    with pytest.raises(EmbeddingError, match=r"1 embeddings contain NaN or infinite values \(rows \[1\]\)"):
        embeddings.compute_embeddings(table, NaNBackbone(), cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(EmbeddingError, match=r"returned shape \(1, 3\), expected \(1, 4\)"):
        embeddings.compute_embeddings(segments.head(1), NaNBackbone(width=3), cache_dir=tmp_path / "c",
                                      progress=False)


def test_empty_table_missing_columns_and_changed_file(segments, clips, tmp_path):
    mfcc = backbones.load_backbone("mfcc")
    with pytest.raises(InputError, match="empty"):
        embeddings.compute_embeddings(segments.head(0), mfcc, cache_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match=r"lacks columns \['sha256'\]"):
        embeddings.compute_embeddings(segments.drop(columns="sha256"), mfcc, cache_dir=tmp_path, progress=False)
    f = tmp_path / "clip.flac"
    shutil.copy(clips[0], f)
    table = make_segments([str(f)])
    shutil.copy(clips[1], f)  # the file changes after the table was built
    with pytest.raises(InputError, match="changed since the segments table was built"):
        embeddings.compute_embeddings(table, mfcc, cache_dir=tmp_path, progress=False)


# --- run folders ----------------------------------------------------------------------------------

def test_run_folder_round_trip_and_its_errors(segments, tmp_path, capsys):
    run = tmp_path / "L02"
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="clapnb embed"):
        embeddings.load_run_embeddings(run)
    io.atomic_write_parquet(run / "segments.parquet", segments)
    args = ["embed", "--segments", str(run / "segments.parquet"), "--backbone", "mfcc", "--cache", str(cache),
            "--no-progress"]
    assert cli.main(args) == 0
    assert f"{len(segments)} computed" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert f"0 computed, {len(segments)} from cache" in capsys.readouterr().out
    meta = json.loads((run / "embeddings.json").read_text())
    for k in ("backbone", "cache_dir", "n_rows", "seconds", "x_sha256", "segments_sha256", "random_weights"):
        assert k in meta, k
    assert meta["backbone"]["name"] == "mfcc" and meta["random_weights"] is False
    loaded = embeddings.load_run_embeddings(run)
    assert loaded.X.shape == (len(segments), 80)
    direct = backbones.load_backbone("mfcc").embed_audio([recipe(r) for _, r in segments.iterrows()])
    np.testing.assert_allclose(loaded.X, direct, rtol=1e-5, atol=1e-4)
    pd.testing.assert_frame_equal(loaded.segments, pd.read_parquet(run / "segments.parquet"))
    # segments changed after embedding
    io.atomic_write_parquet(run / "segments.parquet", segments.head(3))
    with pytest.raises(InputError, match="changed after the embeddings were computed"):
        embeddings.load_run_embeddings(run)
    io.atomic_write_parquet(run / "segments.parquet", segments)
    # cache cleared
    shutil.rmtree(cache)
    with pytest.raises(InputError, match=r"lacks \d+ of \d+ rows"):
        embeddings.load_run_embeddings(run)
    assert cli.main(["embed", "--segments", str(tmp_path / "nope" / "segments.parquet"), "--backbone", "mfcc"]) == 2
    assert "expected an existing DIR/segments.parquet" in capsys.readouterr().err



def test_decoding_workers_do_not_change_what_is_yielded(segments):
    one = list(embeddings.iter_segment_audio(segments, workers=1))
    four = list(embeddings.iter_segment_audio(segments, workers=4))
    assert [p for p, _ in one] == [p for p, _ in four]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, four))
