"""Official folds (--protocol folds) and repeated seeded splits on real ESC-50 clips."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from clapnb import datasets, folds, segments
from clapnb.errors import InputError

LABELS = ["dog", "rooster", "siren"]
COUNTS = (4, 2, 2, 2)


@pytest.fixture(scope="module")
def esc_subset(envsounds, envsounds_meta, tmp_path_factory):
    """Two clips (of two freesound sources) per ESC-50 fold for three labels (30 clips), through load_recordings."""
    m = envsounds_meta[(envsounds_meta["source_dataset"] == "ESC-50") & envsounds_meta["original_label"].isin(LABELS)]
    m = m.sort_values("path").drop_duplicates("freesound_id")
    m = m.groupby(["original_label", "fold"], group_keys=False).head(2).copy()
    m["path"] = [str(envsounds / p) for p in m["path"]]
    csv = tmp_path_factory.mktemp("folds") / "meta.csv"
    m.to_csv(csv, index=False)
    table, _ = datasets.load_recordings(str(csv), label_column="original_label")
    assert len(table) == 30 and sorted(table["fold"].unique()) == [1, 2, 3, 4, 5]
    return table


def _by_recording(seg: pd.DataFrame) -> pd.Series:
    return seg.drop_duplicates("path").set_index("path")["split"]


def test_each_fold_is_test_exactly_once_and_groups_never_cross(esc_subset):
    tested: list[str] = []
    for k in range(1, 6):
        seg = segments.build_segments(esc_subset, 1.0, counts=COUNTS, test_fold=k)
        split = _by_recording(seg)
        fold = esc_subset.set_index("path")["fold"]
        assert set(fold[split[split == "test"].index]) == {k}
        held = set(fold[split[split.isin(["validation", "early_stop"])].index])
        assert held == {k % 5 + 1}  # validation and early stop come from the next fold, as in HEAR
        assert set(fold[split[split == "train"].index]) == set(range(1, 6)) - {k, k % 5 + 1}
        assert seg.groupby("group")["split"].nunique().max() == 1
        assert set(seg["split"]) == set(segments.SPLITS)
        tested += list(split[split == "test"].index)
    assert sorted(tested) == sorted(esc_subset["path"])  # every recording tested once, none twice


def test_seeded_repeats_draw_different_recordings_without_leakage(esc_subset):
    draws = {}
    for seed in range(4):
        seg = segments.build_segments(esc_subset, 1.0, counts=COUNTS, seed=seed)
        assert seg.groupby("group")["split"].nunique().max() == 1
        draws[seed] = frozenset(_by_recording(seg).pipe(lambda s: s[s == "test"]).index)
    assert len(set(draws.values())) == 4  # each seed tests on other recordings
    again = segments.build_segments(esc_subset, 1.0, counts=COUNTS, seed=2)
    assert frozenset(_by_recording(again).pipe(lambda s: s[s == "test"]).index) == draws[2]


def _synthetic(rows):
    return pd.DataFrame({"path": [r[0] for r in rows], "sha256": [hashlib.sha256(r[0].encode()).hexdigest() for r in rows],
                         "source": [r[1] for r in rows], "label": "dog", "class": "dog",
                         "group": [r[2] for r in rows], "fold": pd.array([r[3] for r in rows], dtype="Int64"),
                         "duration_s": 4.0})


def test_sources_with_different_fold_counts_are_merged_onto_the_smaller():
    rows = [(f"/e/{f}.wav", "ESC-50", f"e{f}", f) for f in range(1, 6)]
    rows += [(f"/u/{f}.wav", "UrbanSound8K", f"u{f}", f) for f in range(1, 11)]
    number, n, notes = folds.fold_numbers(_synthetic(rows))
    assert n == 5 and "UrbanSound8K (10 folds)" in notes[0]
    assert number.tolist()[5:] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]



def test_a_recording_giving_two_classes_to_two_official_folds_is_kept_with_a_notice(envsounds_meta):
    """ESC-50's own folds do this (hen / rooster from one freesound recording): keep them, say so."""
    esc = envsounds_meta[envsounds_meta["source_dataset"] == "ESC-50"]
    spans = esc.groupby("freesound_id")["fold"].nunique()
    assert (spans > 1).any()  # the shared clips hold such a recording (134049: hen fold 2, rooster fold 3)
    rows = [(f"/e/{f}.wav", "ESC-50", f"e{f}", f) for f in range(1, 6)]
    table = _synthetic(rows + [("/e/r.wav", "ESC-50", "e1", 3)])
    table["label"] = ["dog"] * 5 + ["rooster"]  # one class of ours (as hen/rooster -> chicken_coop), two labels
    number, n, notes = folds.fold_numbers(table)
    assert n == 5 and number.tolist() == [1, 2, 3, 4, 5, 3]
    assert "e1 (folds 1, 3)" in notes[-1] and "shared between test and train" in notes[-1]
    # the same recording in two data sets (freesound 106014: ESC-50 fold 2, UrbanSound8K fold 10): one fold
    rows += [(f"/u/{f}.wav", "UrbanSound8K", f"u{f}", f) for f in range(1, 11)] + [("/u/x.wav", "UrbanSound8K", "e2", 9)]
    number, n, notes = folds.fold_numbers(_synthetic(rows))
    assert n == 5 and number.iloc[-1] == 2 and "e2 -> fold 2" in notes[-1]

def test_fold_errors_are_one_line():
    rows = [(f"/e/{f}.wav", "ESC-50", f"e{f}", f) for f in range(1, 6)]
    with pytest.raises(InputError, match="leaks between test and train"):
        folds.fold_numbers(_synthetic(rows + [("/e/x.wav", "ESC-50", "e1", 3)]))
    with pytest.raises(InputError, match="no official fold"):
        folds.fold_numbers(_synthetic(rows + [("/e/y.wav", "ESC-50", "e9", None)]))
    with pytest.raises(InputError, match="not one of the 5 folds"):
        folds.assign_fold_splits(_synthetic(rows), test_fold=6)
    assert folds.parse_seeds("0-2,7") == (0, 1, 2, 7) and folds.parse_seeds(None, 3) == (0, 1, 2)
    with pytest.raises(InputError, match="--seeds"):
        folds.parse_seeds("4-1")
    with pytest.raises(InputError, match="not both"):
        folds.parse_seeds("0-4", 3)
