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
