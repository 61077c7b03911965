"""score-events against a hand-computed example; PSDS of a perfect and a useless timeline; CLI on a detection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clapnb import event_metrics as em

REF = pd.DataFrame({"file": ["a"] * 3, "onset_s": [1.0, 10.0, 20.0], "offset_s": [5.0, 12.0, 25.0],
                    "class": ["dogs", "dogs", "cats"]})
EST = pd.DataFrame({"file": ["a"] * 3, "onset_s": [1.5, 10.0, 20.5], "offset_s": [5.5, 12.0, 24.0],
                    "class": ["dogs", "cats", "cats"], "score": [0.9, 0.8, 0.7]})


def test_event_and_segment_based_f1_match_a_hand_computation():
    """By hand (collar 1 s, offset tolerance max(1 s, 50 %)): dogs 1.5-5.5 matches 1-5 (onset 0.5, offset
    0.5 <= 2); cats 20.5-24 matches 20-25 (offset 1 <= 2.5); cats 10-12 is a false alarm, dogs 10-12 is
    missed: TP 2, FP 1, FN 1 -> P = R = F1 = 2/3; per class dogs P 1 R 1/2, cats P 1/2 R 1: F1 2/3 each.
    1-s segments: TP 4 (dogs 1-4) + 4 (cats 20-23) = 8, FP dogs 5 + cats 10, 11 = 3, FN dogs 10, 11 +
    cats 24 = 3 -> F1 = 16 / 22."""
    eb = em.event_based(REF, EST, ["cats", "dogs"], collar_s=1.0, offset_tolerance=0.5)
    assert eb["micro"]["f_measure"] == pytest.approx(2 / 3) and eb["macro"]["f_measure"] == pytest.approx(2 / 3)
    assert eb["per_class"]["dogs"]["precision"] == 1.0 and eb["per_class"]["dogs"]["recall"] == 0.5
    assert eb["per_class"]["cats"]["precision"] == 0.5 and eb["per_class"]["cats"]["recall"] == 1.0
    strict = em.event_based(REF, EST, ["cats", "dogs"], collar_s=0.2, offset_tolerance=0.2)
    assert strict["micro"]["f_measure"] == 0.0  # 0.5-s onset errors are outside a 200-ms collar
    sb = em.segment_based(REF, EST, ["cats", "dogs"], {"a": 30.0}, segment_s=1.0)
    assert sb["micro"]["f_measure"] == pytest.approx(16 / 22)
    # nothing detected: recall 0, precision undefined -> F1 0 (not "undefined")
    none = em.event_based(REF, EST.iloc[:0], ["cats", "dogs"])
    assert none["micro"] == {"f_measure": 0.0, "precision": None, "recall": 0.0}
    assert none["per_class"]["dogs"]["f_measure"] == 0.0
    with_birds = em.event_based(REF, EST, ["cats", "dogs", "birds"])
    assert with_birds["per_class"]["birds"]["f_measure"] is None and with_birds["per_class"]["birds"]["n_reference"] == 0
    assert with_birds["macro"]["f_measure"] == pytest.approx(2 / 3)  # a class absent on both sides is left out
    missed = em.event_based(pd.concat([REF, REF.iloc[:1].assign(file="b", **{"class": "birds"})]), EST,
                            ["cats", "dogs", "birds"])
    assert missed["per_class"]["birds"]["f_measure"] == 0.0
    assert missed["macro"]["f_measure"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # a missed class counts 0
    # class-agnostic: all three estimates match a reference event -> F1 = 1
    assert em.class_agnostic(REF, EST)["f_measure"] == pytest.approx(1.0)


def _timeline(events_df, duration, classes, on=1.0, off=0.0):
    t = np.arange(0, duration, 1.0)
    df = pd.DataFrame({"file": "a", "onset_s": t, "offset_s": t + 1})
    for c in classes:
        v = np.full(len(t), off)
        for r in events_df[events_df["class"] == c].itertuples():
            v[(t >= r.onset_s) & (t + 1 <= r.offset_s)] = on
        df[c] = v
    return df


def test_psds_of_perfect_and_inverted_timelines():
    classes = ["cats", "dogs"]
    perfect = em.psds(_timeline(REF, 30, classes), REF, classes, {"a": 30.0})["psds"]
    assert perfect == pytest.approx(1.0)
    useless = em.psds(_timeline(REF, 30, classes, on=0.0, off=1.0), REF, classes, {"a": 30.0})["psds"]
    assert useless < 0.2


def test_score_events_cli_on_a_detection_folder(tmp_path, capsys):
    from clapnb import events, io
    from clapnb.cli import main

    det = tmp_path / "det"
    events.write_events(EST.assign(file="/x/a.wav"), det)
    io.atomic_write_parquet(det / "scores.parquet", _timeline(REF, 30, ["cats", "dogs"]).assign(file="/x/a.wav"))
    io.atomic_write_json(det / "detect.json", {"probe": {"classes": ["cats", "dogs", "background"]},
                                               "files": [{"file": "/x/a.wav", "status": "done", "duration_s": 30.0}],
                                               "random_weights": False})
    (tmp_path / "a.txt").write_text("1\t5\tdogs\n10\t12\tdogs\n20\t25\tcats\n")  # Audacity labels of a.wav
    assert main(["score-events", "--events", str(det), "--reference", str(tmp_path / "a.txt")]) == 0
    res = json.loads((det / "score_events.json").read_text())
    assert res["event_based"]["micro"]["f_measure"] == pytest.approx(2 / 3)
    assert res["psds"]["psds"] == pytest.approx(1.0) and res["classes"] == ["cats", "dogs"]
    assert "event-based F1    micro 0.667" in capsys.readouterr().out
    (tmp_path / "bad.csv").write_text("file,onset_s,offset_s,class\na.wav,1,2,unicorn\n")
    assert main(["score-events", "--events", str(det), "--reference", str(tmp_path / "bad.csv")]) == 2
    assert "unicorn" in capsys.readouterr().err


def test_soundfile_is_the_real_build_next_to_sed_eval(tmp_path):
    """sed_eval's dependency chain can install PySoundFile 0.9.0.post1 over soundfile.py (scripts/setup.sh undoes it)."""
    import importlib.metadata as md

    import soundfile as sf

    with pytest.raises(md.PackageNotFoundError):
        md.version("PySoundFile")
    assert tuple(int(x) for x in sf.__version__.split(".")[:2]) >= (0, 12)
    sf.write(tmp_path / "x.flac", np.zeros(800, np.float32), 8000)
    assert sf.info(str(tmp_path / "x.flac")).frames == 800
    import sed_eval  # noqa: F401  (imports together with the real soundfile)
    import sed_scores_eval  # noqa: F401
