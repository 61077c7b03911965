"""The linear probe: early stopping, training, selection, save/load, and real audio with MFCC."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clapnb import metrics, probe
from clapnb.errors import InputError
from clapnb.probe import EarlyStopping, ProbeConfig


# --- early stopping on scripted score sequences ---------------------------------------------

def run_stopper(scores, patience):
    stopper = EarlyStopping(patience)
    for epoch, s in enumerate(scores, start=1):
        if stopper.step(s, state=f"weights@{epoch}"):
            return stopper, epoch
    return stopper, None


def test_early_stopping_stops_exactly_at_patience_and_keeps_best():
    # best 0.6 at epoch 3; 0.6 again at epoch 5 is a plateau, not an improvement
    scores = [0.2, 0.5, 0.6, 0.55, 0.6, 0.4, 0.59, 0.1, 0.9]
    stopper, stopped_at = run_stopper(scores, patience=4)
    assert stopped_at == 3 + 4
    assert stopper.best_epoch == 3 and stopper.best_score == 0.6
    assert stopper.best_state == "weights@3"


def test_early_stopping_never_stops_while_improving():
    stopper, stopped_at = run_stopper([0.1 * i for i in range(30)], patience=10)
    assert stopped_at is None and stopper.best_epoch == 30


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.integers(1, 8))
def test_early_stopping_matches_window_definition(scores, patience):
    """Independent definition: stop after epoch e when none of the last `patience` scores beats
    every score before them."""
    expected = None
    for e in range(patience + 1, len(scores) + 1):
        if max(scores[e - patience:e]) <= max(scores[:e - patience]):
            expected = e
            break
    stopper, stopped_at = run_stopper(scores, patience)
    assert stopped_at == expected
    seen = scores[:stopped_at] if stopped_at else scores
    assert stopper.best_epoch == seen.index(max(seen)) + 1


def test_invalid_patience_and_config_are_rejected():
    with pytest.raises(InputError):
        EarlyStopping(0)
    with pytest.raises(InputError, match="lr=-1"):
        ProbeConfig(lr=-1)


# --- training on synthetic problems ----------------------------------------------------------

def blobs(n, k=4, d=16, seed=0, spread=0.3):
    """k well-separated Gaussian blobs: a linearly separable problem."""
    rng = np.random.default_rng(seed)
    centers = np.eye(k, d) * 5.0
    y = np.arange(n) % k
    return (centers[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


CLS4 = ["c0", "c1", "c2", "c3"]


def test_probe_reaches_100_percent_on_linearly_separable_data():
    Xtr, ytr = blobs(200, seed=1)
    Xes, yes = blobs(40, seed=2)
    Xte, yte = blobs(40, seed=3)
    res = probe.train_probe(Xtr, ytr, Xes, yes, CLS4, ProbeConfig(lr=1e-2, seed=0))
    assert metrics.accuracy(ytr, res.probe.logits(Xtr).argmax(1)) == 1.0
    assert metrics.accuracy(yte, res.probe.logits(Xte).argmax(1)) == 1.0


def noisy_problem(seed=0):
    rng = np.random.default_rng(seed)
    k, d = 5, 30
    centers = rng.normal(size=(k, d))
    def make(n):
        y = rng.integers(0, k, n)
        return (centers[y] + 1.5 * rng.normal(size=(n, d))).astype(np.float32), y
    return [make(n) for n in (300, 80, 80)]


def test_best_weights_are_restored_and_stop_is_at_patience():
    (Xtr, ytr), (Xes, yes), _ = noisy_problem()
    cfg = ProbeConfig(lr=5e-2, batch_size=16, patience=5, max_epochs=200, seed=3)
    res = probe.train_probe(Xtr, ytr, Xes, yes, [f"k{i}" for i in range(5)], cfg)
    h = res.history
    assert res.stopped_early and res.epochs_run == len(h) == res.best_epoch + cfg.patience
    best = h["early_stop_accuracy"].max()
    assert res.best_epoch == int(h.loc[h["early_stop_accuracy"] == best, "epoch"].min())
    # the returned weights are the best epoch's, not the last epoch's
    assert metrics.accuracy(yes, res.probe.logits(Xes).argmax(1)) == pytest.approx(best)
    assert metrics.cross_entropy(res.probe.logits(Xes), yes) == pytest.approx(
        h.loc[h["epoch"] == res.best_epoch, "early_stop_loss"].iloc[0], rel=1e-5)


def test_head_is_one_affine_map_on_standardised_features():
    (Xtr, ytr), (Xes, yes), (Xv, yv) = noisy_problem(1)
    p = probe.train_probe(Xtr, ytr, Xes, yes, list("abcde"), ProbeConfig(max_epochs=5)).probe
    assert p.weight.shape == (5, 30) and p.bias.shape == (5,)
    np.testing.assert_allclose(p.mean, Xtr.mean(0), rtol=1e-5, atol=1e-6)
    expected = ((Xv - Xtr.mean(0)) / Xtr.std(0)) @ p.weight.T + p.bias
    np.testing.assert_allclose(p.logits(Xv), expected, rtol=1e-4, atol=1e-4)


def test_same_seed_gives_identical_results_and_other_seed_differs():
    (Xtr, ytr), (Xes, yes), _ = noisy_problem(2)
    run = lambda seed: probe.train_probe(Xtr, ytr, Xes, yes, list("abcde"),
                                         ProbeConfig(max_epochs=15, patience=20, seed=seed))
    a, b, c = run(7), run(7), run(8)
    assert a.history.equals(b.history)
    assert np.array_equal(a.probe.weight, b.probe.weight) and np.array_equal(a.probe.bias, b.probe.bias)
    assert not np.array_equal(a.probe.weight, c.probe.weight)


def test_nan_features_and_empty_splits_are_clear_errors():
    X, y = blobs(20)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(InputError, match=r"1 row\(s\) hold NaN.*rows \[3\]"):
        probe.train_probe(Xn, y, X, y, CLS4)
    with pytest.raises(InputError, match="early-stop"):
        probe.train_probe(X, y, X[:0], y[:0], CLS4)
    data = {"train": (X, y), "early_stop": (X, y), "validation": (X[:0], y[:0])}
    with pytest.raises(InputError, match="'validation' split is empty"):
        probe.select_and_train(data, CLS4)


def test_grid_parsing_and_selection_on_validation():
    assert probe.parse_grid("lr=1e-3,1e-2; weight_decay=0,1e-4") == {
        "lr": [1e-3, 1e-2], "weight_decay": [0.0, 1e-4]}
    assert probe.parse_grid("batch-size=8,16;standardize=false")["batch_size"] == [8, 16]
    for bad in ("lr", "nope=1", "lr=abc", "lr="):
        with pytest.raises(InputError):
            probe.parse_grid(bad)
    assert len(probe.grid_configs(ProbeConfig(), probe.parse_grid("lr=1,2;seed=1,2,3"))) == 6

    (Xtr, ytr), (Xes, yes), (Xv, yv) = noisy_problem(4)
    data = {"train": (Xtr, ytr), "early_stop": (Xes, yes), "validation": (Xv, yv)}
    # a learning rate of 1e-7 cannot move the random initialisation in 5 epochs
    res, table = probe.select_and_train(data, list("abcde"), ProbeConfig(max_epochs=5),
                                        {"lr": [1e-7, 5e-2]})
    assert table["selected"].tolist() == [False, True]
    assert res.probe.config.lr == 5e-2
    assert table.loc[1, "validation_accuracy"] > table.loc[0, "validation_accuracy"]


def test_save_load_roundtrip_and_bad_files(tmp_path):
    (Xtr, ytr), (Xes, yes), (Xv, _) = noisy_problem(5)
    p = probe.train_probe(Xtr, ytr, Xes, yes, list("abcde"), ProbeConfig(max_epochs=3)).probe
    p.backbone = {"name": "mfcc", "random_weights": False, "dim": 30}
    p.length_s = 4.0
    path = probe.save_probe(tmp_path / "probe.pt", p)
    q = probe.load_probe(path)
    assert q.classes == p.classes and q.config == p.config and q.length_s == 4.0
    assert q.backbone == p.backbone
    np.testing.assert_array_equal(q.logits(Xv), p.logits(Xv))

    with pytest.raises(InputError, match="does not exist"):
        probe.load_probe(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="not a clapnb probe"):
        probe.load_probe(junk)
    import torch
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a clapnb probe"):
        probe.load_probe(tmp_path / "other.pt")


def test_file_windows():
    assert probe.file_windows(10.0, 4.0) == [(0.0, 4.0), (4.0, 8.0)]
    assert probe.file_windows(2.5, 4.0) == [(0.0, 4.0)]  # short file: one window, audio repeats
    assert len(probe.file_windows(12.0, 4.0)) == 3


# --- real audio: MFCC features of held-out recordings, through the CLI -----------------------

def test_training_reports_progress_lines_that_match_the_history():
    (Xtr, ytr), (Xes, yes), _ = noisy_problem()
    cfg = ProbeConfig(lr=5e-2, batch_size=16, patience=5, max_epochs=200, seed=3)
    lines: list[str] = []
    res = probe.train_probe(Xtr, ytr, Xes, yes, [f"k{i}" for i in range(5)], cfg, progress=lines.append)
    h = res.history.set_index("epoch")
    shown = [int(line.split("/")[0].split()[-1]) for line in lines]
    assert shown[0] == 1 and shown[-1] == res.epochs_run
    assert all(e % probe.PROGRESS_EVERY == 0 for e in shown[1:-1]) and len(shown) >= 1 + res.epochs_run // 10
    assert f"train loss {h.loc[1, 'train_loss']:.3f}" in lines[0]
    assert lines[-1].endswith("stopping") and f"at epoch {res.best_epoch})" in lines[-1]
    same = probe.train_probe(Xtr, ytr, Xes, yes, [f"k{i}" for i in range(5)], cfg)
    np.testing.assert_array_equal(same.probe.weight, res.probe.weight)  # reporting changes nothing


@pytest.fixture(scope="module")
def mfcc_run(mfcc_probe_run):
    """6 classes x 12 independent recordings, 2-s segments split by recording, MFCC features
    (conftest's session run, shared with tests/test_birdnet.py)."""
    return mfcc_probe_run


def test_mfcc_probe_beats_chance_on_held_out_recordings(mfcc_run):
    import json

    import pandas as pd

    record = json.loads((mfcc_run / "probe.json").read_text())
    # the data's classes in the paper's (taxonomy) order
    assert record["classes"] == ["bells", "chicken_coop", "cicadas_crickets", "dogs", "helicopter",
                                 "sirens_alarms"]
    assert record["random_weights"] is False and record["backbone"]["name"] == "mfcc"
    segs = pd.read_parquet(mfcc_run / "segments.parquet")
    held_out = segs[segs["split"].isin(["validation", "test"])]
    assert set(held_out["group"]).isdisjoint(set(segs.loc[segs["split"] == "train", "group"]))
    # Measured (seeds 0-4): pooled validation+test accuracy 0.52-0.65 over 48 segments; chance is 1/6.
    preds = pd.read_parquet(mfcc_run / "probe_predictions.parquet")
    pooled = preds[preds["split"].isin(["validation", "test"])]
    assert len(pooled) == 48
    assert pooled["correct"].mean() >= 0.35
    for split in ("validation", "test"):
        m = record["metrics"][split]
        assert m["accuracy"] == pytest.approx(preds.loc[preds["split"] == split, "correct"].mean())
        assert m["accuracy_ci"]["resampled"] == "group"
        real = preds[(preds["split"] == split) & ~preds["segment_id"].str.contains("+aug", regex=False)]
        assert m["n_real"] == len(real) and m["accuracy_real"] == pytest.approx(real["correct"].mean())
    # early stopping really happened with the paper's patience
    assert record["stopped_early"] and record["epochs_run"] == record["best_epoch"] + 10


def test_run_probe_is_byte_reproducible(mfcc_run, tmp_path):
    import shutil

    before = {n: (mfcc_run / n).read_bytes() for n in ("probe.json", "probe_predictions.parquet")}
    copy = tmp_path / "again"
    shutil.copytree(mfcc_run, copy)
    for n in ("probe.json", "probe.pt", "probe_predictions.parquet"):
        (copy / n).unlink()
    probe.run_probe(copy, ProbeConfig())
    for n, data in before.items():
        assert (copy / n).read_bytes() == data, n


def test_predict_files_reproduces_the_run_pipeline(mfcc_run, capsys):
    """A held-out recording through `predict` gets the mean of the probe's probabilities over the
    embeddings of its 2-s windows, exactly as computed for the run."""
    from clapnb.cli import main
    from clapnb.embeddings import load_run_embeddings

    emb = load_run_embeddings(mfcc_run)
    segs = emb.segments
    real = segs[~segs["augmented"] & segs["split"].isin(["test"])]
    # a 5-s recording whose two full windows [0, 2) and [2, 4) are both in the table
    starts = real.groupby("path")["start_s"].apply(lambda s: sorted(s.tolist()))
    path = next(p for p, s in starts.items() if s == [0.0, 2.0])
    p = probe.load_probe(mfcc_run / "probe.pt")
    rows = real.index[real["path"] == path]
    expected = p.probabilities(emb.X[rows]).mean(axis=0)

    table = probe.predict_files(mfcc_run / "probe.pt", [path])
    assert table.loc[0, "n_segments"] == 2
    np.testing.assert_allclose(table.loc[0, "probs"], expected, rtol=1e-5, atol=1e-6)
    assert table.loc[0, "pred"] == p.classes[int(expected.argmax())]

    assert main(["predict", "--probe", str(mfcc_run / "probe.pt"), path, "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert path in out and table.loc[0, "pred"] in out


def test_run_probe_refuses_a_run_without_test_segments(mfcc_run, tmp_path):
    from clapnb import backbones, embeddings, io

    segs = embeddings.load_run_embeddings(mfcc_run).segments
    run = tmp_path / "no_test"
    io.atomic_write_parquet(run / "segments.parquet", segs[segs["split"] != "test"])
    cache = io.read_json(mfcc_run / "embeddings.json")["cache_dir"]
    embeddings.embed_run(run, backbones.load_backbone("mfcc"), cache_dir=cache, progress=False)
    with pytest.raises(InputError, match=r"split\(s\) test hold no segments"):
        probe.run_probe(run)


def test_probe_command_prints_progress_on_stderr(mfcc_run, tmp_path, capsys):
    import shutil

    from clapnb.cli import main

    copy = tmp_path / "again"
    shutil.copytree(mfcc_run, copy)
    capsys.readouterr()
    assert main(["probe", "--run", str(copy)]) == 0
    out = capsys.readouterr()
    assert "probe: training nn.Linear(" in out.err and "probe: epoch   1/300" in out.err
    assert "stopping" in out.err and "bootstrap" in out.err
    assert "epoch" not in out.out.split("\n")[0]  # stdout keeps the summary only
    assert main(["probe", "--run", str(copy), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
