"""Repeat statistics against independent computations (scipy.stats, hand formulas)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clapnb import repeats
from clapnb.errors import InputError


def test_spread_matches_hand_formula_and_keeps_values():
    vals = {0: 0.61, 1: 0.55, 2: 0.66, 3: 0.58, 4: 0.60}
    s = repeats.spread(vals)
    x = np.array(list(vals.values()))
    assert s.mean == pytest.approx(x.sum() / 5)
    assert s.std == pytest.approx(np.sqrt(((x - x.mean()) ** 2).sum() / 4))
    assert s.values == vals and s.n == 5
    assert s.text() == f"{x.mean() * 100:.1f} ± {s.std * 100:.1f} (n=5)"
    one = repeats.spread([0.5])
    assert np.isnan(one.std) and one.as_dict()["std"] is None and "n=1" in one.text()


def test_paired_difference_equals_scipy_paired_t():
    rng = np.random.default_rng(3)
    a = {k: v for k, v in enumerate(0.7 + rng.normal(0, 0.03, 6))}
    b = {k: a[k] - 0.02 + rng.normal(0, 0.01) for k in a}
    b[99] = 0.1  # not in a: must be ignored, not paired with anything
    d = repeats.paired_difference(a, b)
    diffs = np.array([a[k] - b[k] for k in range(6)])
    ref = stats.ttest_rel(list(a.values()), [b[k] for k in range(6)])
    ci = stats.t.interval(0.95, 5, loc=diffs.mean(), scale=stats.sem(diffs))
    assert d.n == 6 and d.mean == pytest.approx(diffs.mean())
    assert d.p_value == pytest.approx(ref.pvalue)
    assert (d.low, d.high) == pytest.approx(ci)
    assert d.verdict == ("a > b" if ci[0] > 0 else "not distinguishable")


def test_paired_is_tighter_than_unpaired_when_draws_are_shared():
    rng = np.random.default_rng(0)
    draw = rng.normal(0, 0.05, 8)  # split difficulty shared by both configurations
    a = dict(enumerate(0.70 + draw + rng.normal(0, 0.005, 8)))
    b = dict(enumerate(0.68 + draw + rng.normal(0, 0.005, 8)))
    d = repeats.paired_difference(a, b)
    assert d.verdict == "a > b"
    assert stats.ttest_ind(list(a.values()), list(b.values())).pvalue > 0.05  # unpaired cannot tell


def test_paired_difference_refuses_disjoint_repeats():
    with pytest.raises(InputError, match="share no repeat"):
        repeats.paired_difference({0: 0.5}, {1: 0.5})
    single = repeats.paired_difference({0: 0.6}, {0: 0.5})
    assert single.n == 1 and np.isnan(single.low) and "one repeat" in single.verdict


def test_paired_bootstrap_over_groups_matches_a_direct_loop():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 4)
    ca = rng.random(120) < 0.7
    cb = rng.random(120) < 0.6
    got = repeats.paired_bootstrap(ca, cb, groups=groups, n_resamples=300, seed=5)
    # independent: draw groups with the same generator, concatenate their samples, difference of means
    r = np.random.default_rng(5)
    idx = r.integers(0, 30, size=(300, 30))
    boot = [np.mean(np.concatenate([(ca.astype(float) - cb)[groups == g] for g in row])) for row in idx]
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert got.mean == pytest.approx(ca.mean() - cb.mean())
    assert "recordings" in got.method and got.n == 30


def test_summarise_groups_rows_and_keeps_seeds():
    t = pd.DataFrame({"length_s": [1, 1, 1, 4, 4, 4], "seed": [0, 1, 2, 0, 1, 2],
                      "accuracy": [0.3, 0.4, 0.5, 0.6, 0.6, 0.9]})
    s = repeats.summarise(t, by=["length_s"], value="accuracy")
    assert s["n"].tolist() == [3, 3]
    assert s["mean"].tolist() == pytest.approx([0.4, 0.7])
    assert s["std"].tolist() == pytest.approx([0.1, np.std([0.6, 0.6, 0.9], ddof=1)])
    assert s.loc[1, "values"] == {0: 0.6, 1: 0.6, 2: 0.9}
    with pytest.raises(InputError, match="lacks columns"):
        repeats.summarise(t, by=["backbone"], value="accuracy")


def _rows(seed_offsets):
    rows = []
    for seed, off in seed_offsets.items():
        for L, base in ((1, 0.40), (4, 0.60), (7, 0.58)):
            rows.append({"repeat": f"seed-{seed}", "length_s": L, "zeroshot_accuracy": base - 0.1 + off,
                         "zeroshot_ci_low": base - 0.15, "zeroshot_ci_high": base - 0.05,
                         "probe_validation_accuracy": base + off + 0.01 * seed,
                         "probe_validation_ci_low": base - 0.05, "probe_validation_ci_high": base + 0.05,
                         "probe_test_accuracy": base - 0.1 + off, "probe_test_ci_low": 0.1, "probe_test_ci_high": 0.9})
    return pd.DataFrame(rows)


def test_spread_table_and_headline_comparisons_from_results_rows():
    long = _rows({0: 0.0, 1: 0.05, 2: -0.03, 3: 0.02})
    table = repeats.spread_table(long)
    row = table[(table["length_s"] == 4) & (table["metric"] == "probe_validation_accuracy")].iloc[0]
    vals = [0.60, 0.66, 0.59, 0.65]
    assert row["mean"] == pytest.approx(np.mean(vals)) and row["std"] == pytest.approx(np.std(vals, ddof=1))
    assert row["first_repeat"] == "seed-0" and row["first_ci_low"] == pytest.approx(0.55)
    shown = repeats.format_spread(table)
    assert shown.loc[shown["length (s)"] == 4, "probe (validation): per repeat"].iloc[0].startswith("seed-0: 60.0")
    comp = repeats.headline_comparisons(long)
    best_vs_1 = comp[comp["comparison"] == "probe: 4 s (best) vs 1 s"].iloc[0]
    assert best_vs_1["a"] == "probe 4 s" and best_vs_1["mean_difference"] == pytest.approx(0.20)
    assert best_vs_1["low"] == pytest.approx(0.20) and best_vs_1["verdict"] == "a better"  # the same offset per seed
    vs7 = comp[comp["comparison"] == "probe: 4 s (best) vs 7 s"].iloc[0]
    assert vs7["mean_difference"] == pytest.approx(0.02)
    pz = comp[comp["comparison"] == "probe vs zero-shot at 4 s"].iloc[0]
    d = np.array(vals) - np.array([0.5, 0.55, 0.47, 0.52])
    assert pz["mean_difference"] == pytest.approx(d.mean())
    assert pz["high"] - pz["low"] == pytest.approx(2 * stats.t.ppf(0.975, 3) * stats.sem(d))


def test_an_as_is_baseline_is_named_with_its_classes_in_the_comparisons():
    """BirdNET's own labels cover 10 of 20 classes: "probe vs zero-shot" would compare unlike sets."""
    long = _rows({0: 0.0, 1: 0.05, 2: -0.03}).assign(zeroshot_method="as-is", zeroshot_label="as-is, 10 of 20 classes")
    comp = repeats.headline_comparisons(long)
    assert "probe vs as-is, 10 of 20 classes at 4 s (not the same classes: the probe is on all of them)" in set(
        comp["comparison"])
    assert any(c.startswith("as-is, 10 of 20 classes: 4 s (best) vs") for c in comp["comparison"])
    assert not any("zero-shot" in c for c in comp["comparison"])


def test_resolution_note_numbers():
    text = repeats.resolution_note(2100, 0.7293)
    assert "0.048 points" in text and f"{100 * np.sqrt(0.7293 * 0.2707 / 2100):.2f} points" in text


def test_results_section_names_the_repeats_and_the_paper_resolution():
    long = _rows({0: 0.0, 1: 0.05, 2: -0.03})
    doc = {"repeats": ["seed-0", "seed-1", "seed-2"], "rows": long.assign(zeroshot_n=60).to_dict(orient="records"),
           "spread": repeats.spread_table(long).to_dict(orient="records"),
           "comparisons": repeats.headline_comparisons(long).to_dict(orient="records"), "random_weights": True}
    page = repeats.results_section(doc, segments_per_class=20)
    assert page.startswith("## Over 3 split seeds") and "Random weights" in page
    assert "probe: 4 s (best) vs 1 s" in page and "0.048 points" in page and "with 60 validation segments" in page


def test_paired_by_length_pairs_two_runs_on_shared_repeats():
    a = _rows({0: 0.0, 1: 0.05, 2: -0.03})
    b = a.assign(probe_validation_accuracy=a["probe_validation_accuracy"] - 0.03)
    b = b[b["repeat"] != "seed-2"]
    got = repeats.paired_by_length(a, b)
    assert got["length_s"].tolist() == [1, 4, 7] and got["n"].tolist() == [2, 2, 2]
    assert got["mean_difference"].tolist() == pytest.approx([0.03] * 3)
    with pytest.raises(InputError, match="share no"):
        repeats.paired_by_length(a, b.assign(repeat="fold-1"))
