"""clapnb.metrics against hand-computed cases and independent implementations (torch, scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clapnb import metrics
from clapnb.errors import InputError

CLASSES = ["a", "b", "c"]
TRUE = ["a", "a", "a", "b", "b", "c"]
PRED = ["a", "b", "b", "b", "c", "c"]


def test_accuracy_hand_case():
    assert metrics.accuracy(TRUE, PRED) == pytest.approx(3 / 6)


def test_confusion_hand_case():
    cm = metrics.confusion(TRUE, PRED, CLASSES)
    assert cm.to_numpy().tolist() == [[1, 2, 0], [0, 1, 1], [0, 0, 1]]
    assert list(cm.index) == CLASSES and list(cm.columns) == CLASSES


def test_per_class_hand_case_and_nan_for_undefined():
    table = metrics.per_class(TRUE, PRED, CLASSES + ["d"]).set_index("class")
    # a: predicted once (correct) -> P=1, recall 1/3; b: predicted 3 times, 1 right -> P=1/3, R=1/2
    assert table.loc["a", "precision"] == pytest.approx(1.0)
    assert table.loc["a", "recall"] == pytest.approx(1 / 3)
    assert table.loc["b", "precision"] == pytest.approx(1 / 3)
    assert table.loc["b", "recall"] == pytest.approx(1 / 2)
    assert table.loc["b", "f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert table.loc["c", "support"] == 1
    # 'd' never occurs and is never predicted: undefined, not zero
    assert table.loc["d", "support"] == 0
    assert math.isnan(table.loc["d", "precision"]) and math.isnan(table.loc["d", "recall"])


def test_most_confused_hand_case():
    pairs = metrics.most_confused(TRUE, PRED, CLASSES, top=5)
    assert pairs[["true", "pred", "count"]].values.tolist() == [["a", "b", 2], ["b", "c", 1]]
    assert pairs["share_of_true"].tolist() == pytest.approx([2 / 3, 1 / 2])


def test_cross_entropy_uniform_is_log_k():
    assert metrics.cross_entropy(np.zeros((4, 21)), np.arange(4)) == pytest.approx(math.log(21))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (7, 5), elements=st.floats(-1e4, 1e4)),
       st.lists(st.integers(0, 4), min_size=7, max_size=7))
def test_cross_entropy_matches_torch_even_for_huge_logits(z, y):
    import torch

    expected = torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.tensor(y)).item()
    assert metrics.cross_entropy(z, np.array(y)) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_cross_entropy_matches_naive_numpy_formula():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(10, 4))
    y = rng.integers(0, 4, 10)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert metrics.cross_entropy(z, y) == pytest.approx(-np.log(p[np.arange(10), y]).mean())


@pytest.mark.parametrize("z, y", [
    (np.zeros((3, 2)), np.array([0, 1, 2])),            # index out of range
    (np.full((2, 2), np.nan), np.array([0, 1])),         # NaN logits
    (np.zeros((0, 2)), np.array([], dtype=int)),         # nothing to score
    (np.zeros((2, 2)), np.array([0.0, 1.0])),            # labels not integers
])
def test_cross_entropy_rejects_bad_input(z, y):
    with pytest.raises(InputError):
        metrics.cross_entropy(z, y)


def test_label_length_mismatch_and_empty_are_clear_errors():
    with pytest.raises(InputError, match="3 labels but y_pred has 2"):
        metrics.accuracy([0, 1, 2], [0, 1])
    with pytest.raises(InputError, match="empty"):
        metrics.accuracy([], [])


def test_bootstrap_ci_covers_truth_at_nominal_rate():
    """Known case: each prediction is right with probability 0.7; the 95 % CI covers 0.7 ~95 % of the time."""
    truth, n, trials = 0.7, 300, 200
    rng = np.random.default_rng(123)
    covered = 0
    for k in range(trials):
        correct = rng.random(n) < truth
        y_pred = np.where(correct, 0, 1)
        ci = metrics.bootstrap_accuracy_ci(np.zeros(n, int), y_pred, seed=k, n_resamples=500)
        covered += ci.low <= truth <= ci.high
    assert 0.89 <= covered / trials <= 0.99


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(5)
    correct = (rng.random(400) < 0.8).astype(float)
    ours = metrics.bootstrap_accuracy_ci(np.ones(400, int), correct.astype(int), n_resamples=4000, seed=0)
    ref = bootstrap((correct,), np.mean, n_resamples=4000, method="percentile", random_state=1,
                    confidence_level=0.95).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=0.01)
    assert ours.high == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_is_seeded_and_groups_widen_the_interval():
    rng = np.random.default_rng(0)
    base = (rng.random(50) < 0.6).astype(int)
    # each recording contributes 10 identical copies (e.g. noise-augmented duplicates)
    y_pred = np.repeat(base, 10)
    y_true = np.ones_like(y_pred)
    groups = np.repeat(np.arange(50), 10)
    a = metrics.bootstrap_accuracy_ci(y_true, y_pred, seed=3)
    assert a == metrics.bootstrap_accuracy_ci(y_true, y_pred, seed=3)
    g = metrics.bootstrap_accuracy_ci(y_true, y_pred, groups=groups, seed=3)
    assert g.unit == "group" and a.unit == "segment"
    # 50 independent recordings, not 500 independent segments: about sqrt(10) times wider
    assert (g.high - g.low) > 2.5 * (a.high - a.low)


def test_bootstrap_with_singleton_groups_equals_plain_bootstrap():
    rng = np.random.default_rng(2)
    y_pred = (rng.random(80) < 0.5).astype(int)
    y_true = np.ones(80, int)
    plain = metrics.bootstrap_accuracy_ci(y_true, y_pred, seed=9)
    grouped = metrics.bootstrap_accuracy_ci(y_true, y_pred, groups=[f"r{i}" for i in range(80)], seed=9)
    assert (plain.low, plain.high) == (grouped.low, grouped.high)


def test_summary_reports_accuracy_ci_and_loss():
    z = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = np.array([0, 1, 1])
    s = metrics.summary(y, z, ["x", "y"], seed=0)
    assert s["n"] == 3 and s["accuracy"] == pytest.approx(2 / 3)
    assert s["loss"] == pytest.approx(metrics.cross_entropy(z, y))
    assert 0 <= s["accuracy_ci"]["low"] <= s["accuracy"] <= s["accuracy_ci"]["high"] <= 1


def test_real_only_accuracy_ignores_augmented_copies():
    out = metrics.real_only([True, False, True, True], [False, False, True, True])
    assert out == {"n_real": 2, "accuracy_real": 0.5}
    assert metrics.real_only([True], [True]) == {"n_real": 0, "accuracy_real": None}
