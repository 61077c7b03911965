"""``clapnb benchmark esc50`` on small subsets of the shared ESC-50 clips (mfcc; the stand-in for zero-shot)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapnb import benchmark, cli

FAST = ["--probe-max-epochs", "40", "--probe-patience", "5", "--no-progress"]


def _esc50_rows(meta: pd.DataFrame, root: Path, labels: list[str], per_fold: int) -> pd.DataFrame:
    esc = meta[(meta["source_dataset"] == "ESC-50") & meta["original_label"].isin(labels)]
    esc = esc.sort_values("path").groupby(["original_label", "fold"], group_keys=False).head(per_fold).copy()
    esc["path"] = [str(root / p) for p in esc["path"]]
    return esc.reset_index(drop=True)


@pytest.fixture(scope="module")
def small_manifest(envsounds, envsounds_meta, tmp_path_factory) -> Path:
    """3 ESC-50 classes x 5 folds x 2 clips, plus UrbanSound8K rows the benchmark must leave out."""
    rows = _esc50_rows(envsounds_meta, envsounds, ["dog", "crow", "siren"], 2)
    us8k = envsounds_meta[envsounds_meta["source_dataset"] == "UrbanSound8K"].head(3).copy()
    us8k["path"] = [str(envsounds / p) for p in us8k["path"]]
    path = tmp_path_factory.mktemp("bench") / "manifest.csv"
    pd.concat([rows, us8k]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def mfcc_run(small_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-mfcc")
    cache = tmp_path_factory.mktemp("bench-cache")
    argv = ["benchmark", "esc50", "--data", str(small_manifest), "--backbone", "mfcc", "--out", str(out),
            "--cache", str(cache), "--seed", "3", *FAST]
    return out, argv


def test_categories_are_esc50s_target_order(envsounds_meta):
    """The constant's order is ESC-50's target number: the last part of each shared clip's name."""
    esc = envsounds_meta[envsounds_meta["source_dataset"] == "ESC-50"]
    targets = {lab: {int(Path(p).stem.split("-")[-1]) for p in part["path"]}
               for lab, part in esc.groupby("original_label")}
    assert len(targets) >= 20
    for label, numbers in targets.items():
        assert numbers == {benchmark.ESC50_CATEGORIES.index(label)}
    assert len(set(benchmark.ESC50_CATEGORIES)) == 50


def test_each_fold_is_test_once_and_no_clip_or_recording_in_two_splits(envsounds, envsounds_meta, tmp_path):
    rows = _esc50_rows(envsounds_meta, envsounds, ["dog", "rooster"], 2)
    clips = pd.DataFrame({"path": rows["path"], "fold": rows["fold"].astype(int),
                          "group": [f"freesound:{i}" for i in rows["freesound_id"]]})
    plan = benchmark.fold_plan(sorted(set(clips["fold"])))
    assert sorted(p["test_fold"] for p in plan) == [1, 2, 3, 4, 5]
    assert sorted(p["early_stop_fold"] for p in plan) == [1, 2, 3, 4, 5]
    for p in plan:
        split = benchmark.fold_splits(clips, p["test_fold"], p["early_stop_fold"])
        assert p["early_stop_fold"] != p["test_fold"]
        assert set(split) == {"test", "early_stop", "train"}
        for name in ("test", "early_stop", "train"):
            others = clips.loc[split != name]
            mine = clips.loc[split == name]
            assert not set(mine["path"]) & set(others["path"])
            assert not set(mine["group"]) & set(others["group"])
        assert set(clips.loc[split == "test", "fold"]) == {p["test_fold"]}
        assert set(clips.loc[split == "train", "fold"]) == set(p["train_folds"])
    with pytest.raises(benchmark.InputError, match="at least 3"):
        benchmark.fold_plan([1, 2])


def test_mfcc_benchmark_folds_spread_outputs_and_rerun(mfcc_run, capsys):
    out, argv = mfcc_run
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / benchmark.RESULT_JSON).read_text())
    # only the ESC-50 rows, all 30, each fold's test clips once
    clips = pd.read_csv(out / benchmark.CLIPS_CSV)
    assert len(clips) == 30 and set(clips["source"]) == {"ESC-50"}
    per_fold = record["probe"]["per_fold"]
    assert sorted(int(f) for f in per_fold) == [1, 2, 3, 4, 5]
    assert sum(v["n_test"] for v in per_fold.values()) == 30
    for f, v in per_fold.items():
        assert v["n_test"] == v["n_early_stop"] == 6 and v["n_train"] == 18
        assert int(f) not in v["train_folds"] and v["early_stop_fold"] not in v["train_folds"]
    # per-fold accuracy from the predictions, mean/std from the CSV: independent of the record's numbers
    preds = pd.read_parquet(out / benchmark.PREDICTIONS)
    by_fold = (preds["probe_pred"] == preds["label"]).groupby(preds["fold"]).mean()
    csv = pd.read_csv(out / benchmark.RESULT_CSV)
    probe_rows = csv[csv["method"] == "probe"].sort_values("test_fold")
    np.testing.assert_allclose(probe_rows["accuracy"].to_numpy(), by_fold.sort_index().to_numpy())
    values = probe_rows["accuracy"].to_numpy()
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    assert record["probe"]["spread"]["mean"] == pytest.approx(mean)
    assert record["probe"]["spread"]["std"] == pytest.approx(std)
    assert f"yours {100 * mean:.1f} +/- {100 * std:.1f} % over 5 folds" in printed
    # labels and notices
    assert "93.9 % (published)" in printed and "97.7 +/- 0.5 % (published)" in printed
    assert "SUBSET: 3 of ESC-50's 50 classes, 30 of 2000 clips" in printed
    assert "zero-shot" in printed and "has no text encoder" in printed
    assert record["zero_shot"]["applicable"] is False
    assert record["flags"] == {**record["flags"], "subset": True, "random_weights": False,
                               "comparable_with_anchors": False}
    assert record["config"]["seed"] == 3 and record["probe"]["config"]["seed"] == 3
    assert record["data"]["selection"]["n_other_rows"] == 3
    assert record["backbone"]["fingerprint"] and record["data"]["fingerprint"]
    # a rerun takes every embedding from the cache and gives the same numbers (seeded)
    assert record["embeddings"]["n_computed"] == 30
    assert cli.main(argv) == 0
    again = json.loads((out / benchmark.RESULT_JSON).read_text())
    assert again["embeddings"]["n_computed"] == 0 and again["embeddings"]["n_cached"] == 30
    assert again["probe"]["per_fold"] == per_fold


def test_official_layout_reads_the_same_clips_as_the_manifest(envsounds, envsounds_meta, tmp_path):
    """An ESC-50 folder (meta/esc50.csv + audio/) and a manifest of the same clips: one data fingerprint."""
    rows = _esc50_rows(envsounds_meta, envsounds, ["cat", "hen"], 1)
    root = tmp_path / "ESC-50-master"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    for p in rows["path"]:
        os.symlink(p, root / "audio" / Path(p).name)
    pd.DataFrame({"filename": [Path(p).name for p in rows["path"]], "fold": rows["fold"],
                  "target": [benchmark.ESC50_CATEGORIES.index(c) for c in rows["original_label"]],
                  "category": rows["original_label"], "esc10": False, "src_file": rows["freesound_id"],
                  "take": "A"}).to_csv(root / "meta" / "esc50.csv", index=False)
    assert benchmark.resolve_data(str(root)) == f"esc50:{root}"
    official = benchmark.load_esc50(str(root), work_dir=tmp_path / "a")
    manifest = tmp_path / "m.csv"
    rows.to_csv(manifest, index=False)
    listed = benchmark.load_esc50(str(manifest), work_dir=tmp_path / "b")
    assert len(official.clips) == 10 and official.folds == [1, 2, 3, 4, 5]
    assert official.fingerprint() == listed.fingerprint()


def test_zero_shot_prompts_and_predictions_with_the_standin(clap_2023, envsounds, envsounds_meta, tmp_path):
    from clapnb.embeddings import compute_embeddings

    manifest = tmp_path / "m.csv"
    _esc50_rows(envsounds_meta, envsounds, ["chirping_birds", "vacuum_cleaner"], 1).to_csv(manifest, index=False)
    cache = tmp_path / "cache"
    record = benchmark.run_benchmark(str(manifest), tmp_path / "out", backbone=clap_2023, cache_dir=cache,
                                     probe_max_epochs=20, probe_patience=5, progress=False, log=lambda _: None)
    zs = record["zero_shot"]
    assert zs["applicable"] and len(zs["candidates"]) == 50
    assert zs["prompts"]["chirping_birds"] == "this is the sound of chirping birds"
    assert zs["prompts"]["door_wood_knock"] == "this is the sound of door wood knock"
    assert all(p == "this is the sound of " + c.replace("_", " ") for c, p in zs["prompts"].items())
    # the predictions again, by hand: cosine of the cached audio rows with the prompts' embeddings
    data = benchmark.load_esc50(str(manifest), work_dir=tmp_path / "again")
    emb = compute_embeddings(benchmark.clip_segments(data.clips), clap_2023, cache_dir=cache, progress=False)
    assert emb.meta["n_computed"] == 0
    labels = sorted(benchmark.ESC50_CATEGORIES)
    text = np.asarray(clap_2023.embed_text(["this is the sound of " + c.replace("_", " ") for c in labels]))
    a = emb.X / np.linalg.norm(emb.X, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    expected = np.asarray(labels, dtype=object)[(a @ t.T).argmax(axis=1)]
    preds = pd.read_parquet(tmp_path / "out" / benchmark.PREDICTIONS)
    assert list(preds["zero_shot_pred"]) == list(expected)
    assert zs["accuracy"] == pytest.approx(float(np.mean(expected == data.clips["label"].to_numpy())))
    assert record["flags"]["random_weights"] is True
    table = benchmark.format_table(record)
    assert "RANDOM WEIGHTS: the offline stand-in" in table
    assert all("[RANDOM WEIGHTS]" in line for line in table.splitlines() if line.startswith(("zero-shot ", "probe   ")))
    assert "probe - zero-shot" in table or record["paired"]["low"] is None


@pytest.mark.parametrize("case, message", [
    ("us8k-only", "no ESC-50 rows"),
    ("no-fold", "no 'fold' column"),
    ("unknown-backbone", "unknown backbone"),
])
def test_bad_input_one_line_exit_2(case, message, envsounds, envsounds_meta, tmp_path, capsys):
    meta = envsounds_meta.copy()
    meta["path"] = [str(envsounds / p) for p in meta["path"]]
    manifest = tmp_path / "m.csv"
    if case == "us8k-only":
        meta[meta["source_dataset"] == "UrbanSound8K"].head(5).to_csv(manifest, index=False)
    elif case == "no-fold":
        meta[meta["source_dataset"] == "ESC-50"].head(5).drop(columns=["fold"]).to_csv(manifest, index=False)
    else:
        meta.head(5).to_csv(manifest, index=False)
    backbone = "nosuch" if case == "unknown-backbone" else "mfcc"
    out = tmp_path / "out"
    code = cli.main(["benchmark", "esc50", "--data", str(manifest), "--backbone", backbone, "--out", str(out),
                     "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # refused before anything was written


def test_a_recording_in_two_official_folds_is_kept_and_reported(envsounds, envsounds_meta, tmp_path):
    """ESC-50's own folds put freesound 134049 (hen fold 2, rooster fold 3) and 234879 (hen 4, rooster 5)
    in two folds; the published figures used those folds, so the benchmark keeps them and says so."""
    meta = envsounds_meta[envsounds_meta["freesound_id"].isin([134049, 234879])].copy()
    meta["path"] = [str(envsounds / p) for p in meta["path"]]
    manifest = tmp_path / "m.csv"
    meta.to_csv(manifest, index=False)
    data = benchmark.load_esc50(str(manifest), work_dir=tmp_path)
    assert data.groups_in_two_folds() == {"freesound:134049": [2, 3], "freesound:234879": [4, 5]}
    lines = benchmark.notices(data, {"name": "mfcc"})
    assert any("2 freesound recording(s) give clips to two official folds" in line for line in lines)
