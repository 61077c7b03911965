"""From answers to better numbers: a scripted review (answers from a scene's truth) feeds the probe
(`clapnb probe --extra-labels reviewed.parquet`), which then detects better on held-out scenes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clapnb import event_metrics, events, review, scene
from clapnb.cli import main
from clapnb.errors import InputError

LABELS = ["siren", "dog", "crickets", "rooster"]  # ESC-50 only
DETECT = ["--threshold", "0.3", "--hop", "1", "--merge-gap", "2", "--min-duration", "2", "--no-progress"]


@pytest.fixture(scope="module")
def rounds(envsounds, envsounds_meta, tmp_path_factory):
    """Three disjoint sets of recordings per class: the probe's, the reviewed scenes', the held-out scenes'."""
    out = tmp_path_factory.mktemp("review_probe")
    d = envsounds_meta[envsounds_meta["original_label"].isin(LABELS)]
    d = d.drop_duplicates(["original_label", "freesound_id"]).sort_values("path").copy()
    d["path"] = [str(envsounds / p) for p in d["path"]]
    rank = d.groupby("original_label").cumcount()
    parts = {"probe": d[rank < 8], "review": d[(rank >= 8) & (rank < 20)], "held": d[rank >= 20]}
    for a in parts:
        for b in parts:
            assert a == b or set(parts[a]["freesound_id"]).isdisjoint(parts[b]["freesound_id"])
        parts[a].to_csv(out / f"{a}.csv", index=False)
    site = out / "site"
    site.mkdir()
    for k, db in enumerate(np.linspace(-50, -30, 6)):
        sf.write(site / f"site_{k}.wav", scene.noise(44100 * 10, "pink", float(db), 100 + k), 44100)
    run = out / "L02"
    cache = str(out / "cache")
    assert main(["segments", "--data", str(out / "probe.csv"), "--label-column", "original_label", "--background",
                 str(site), "--length", "2", "--counts", "12,3,3,3", "--out", str(run)]) == 0
    assert main(["embed", "--segments", str(run / "segments.parquet"), "--backbone", "mfcc", "--cache", cache,
                 "--policy", "native", "--no-progress"]) == 0
    assert main(["probe", "--run", str(run), "--no-progress"]) == 0
    for name, seed, n in (("review", 11, 4), ("held", 22, 3)):
        assert main(["scene", "--events", str(out / f"{name}.csv"), "--label-column", "original_label",
                     "--duration", "40", "--n-events", "4", "--snr", "10,25", "--noise-dbfs", "-40", "--n-scenes",
                     str(n), "--seed", str(seed), "--out", str(out / f"scenes_{name}")]) == 0
        assert main(["detect", "--probe", str(run / "probe.pt"), "--cache", cache, *DETECT, "--out",
                     str(out / f"det_{name}"), str(out / f"scenes_{name}")]) == 0
    return {"out": out, "run": run, "cache": cache}


def _segment_f1(det_dir, truth_csv, classes):
    ev = events.read_events(det_dir / "events.csv")
    truth = pd.read_csv(truth_csv)
    durations = {f["file"]: f["duration_s"] for f in json.loads((det_dir / "detect.json").read_text())["files"]}
    return event_metrics.segment_based(truth, ev, classes, durations)["micro"]["f_measure"]


def _cell_balanced_accuracy(det_dir, truth_csv):
    """Mean per-class recall of the argmax of the score timeline's cells (truth: the class of the event
    holding the cell's centre, else background): threshold-free, computed here from scores.parquet."""
    sc = pd.read_parquet(det_dir / "scores.parquet")
    truth = pd.read_csv(truth_csv)
    classes = [c for c in sc.columns if c not in ("file", "onset_s", "offset_s", "start_time")]
    centre = (sc["onset_s"] + sc["offset_s"]) / 2
    want = pd.Series("background", index=sc.index)
    for r in truth.itertuples(index=False):
        want[(sc["file"] == r.file) & (centre >= r.onset_s) & (centre < r.offset_s)] = r[3]
    pred = np.asarray(classes)[sc[classes].to_numpy().argmax(axis=1)]
    return float(np.mean([(pred[want == c] == c).mean() for c in sorted(set(want))]))


def test_probe_retrained_with_scripted_review_beats_the_original_on_held_out_scenes(rounds):
    out, run = rounds["out"], rounds["run"]
    r = review.Review(out / "det_review", "script")
    truth = pd.read_csv(out / "scenes_review" / "truth.csv")
    counts = review.answer_from_reference(r, truth)
    assert r.progress()[0] == r.progress()[1] and sum(counts.values()) >= len(truth)
    before = review.precision_by_class(r.table)
    run2 = out / "L02_reviewed"
    shutil.copytree(run, run2)
    assert main(["probe", "--run", str(run2), "--no-progress", "--extra-labels",
                 str(out / "det_review" / "reviewed.parquet")]) == 0
    rec = json.loads((run2 / "probe.json").read_text())
    x = rec["extra_labels"]
    assert x["n_windows"] > 0 and {f["path"] for f in x["files"]} == set(truth["file"])
    assert x["n_answers"] == {k: v for k, v in counts.items() if v}
    assert rec["n_per_split"] == json.loads((run / "probe.json").read_text())["n_per_split"]  # val/test untouched
    assert main(["detect", "--probe", str(run2 / "probe.pt"), "--cache", rounds["cache"], *DETECT, "--out",
                 str(out / "det_held_after"), str(out / "scenes_held")]) == 0
    held_truth = out / "scenes_held" / "truth.csv"
    classes = sorted(set(pd.read_csv(held_truth)["class"]) | set(truth["class"]))
    f1_before = _segment_f1(out / "det_held", held_truth, classes)
    f1_after = _segment_f1(out / "det_held_after", held_truth, classes)
    after_review = review.Review(out / "det_held_after", "script")
    review.answer_from_reference(after_review, pd.read_csv(held_truth))
    held_before = review.Review(out / "det_held", "script")
    review.answer_from_reference(held_before, pd.read_csv(held_truth))
    p0 = review.judged(held_before.table)["correct"].mean()
    p1 = review.judged(after_review.table)["correct"].mean()
    acc0 = _cell_balanced_accuracy(out / "det_held", held_truth)
    acc1 = _cell_balanced_accuracy(out / "det_held_after", held_truth)
    print(f"\nheld-out cell balanced accuracy {acc0:.3f} -> {acc1:.3f}; segment F1 {f1_before} -> {f1_after}; "
          f"precision {p0:.3f} -> {p1:.3f}; "
          f"review-round precision per class:\n{before}\n"
          f"held-out before:\n{review.precision_by_class(held_before.table)}\n"
          f"held-out after:\n{review.precision_by_class(after_review.table)}")
    assert acc1 > acc0 + 0.05
    assert (f1_after or 0.0) >= (f1_before or 0.0)


def test_extra_labels_from_a_recording_of_the_validation_split_are_refused(rounds, tmp_path):
    out, run = rounds["out"], rounds["run"]
    seg = pd.read_parquet(run / "segments.parquet")
    held = seg[seg["split"] == "validation"]["path"].iloc[0]
    d = tmp_path / "det"
    events.write_events(pd.DataFrame({"file": [held], "onset_s": [0.0], "offset_s": [4.0], "class": ["dogs"],
                                      "score": [0.9]}), d)
    review.Review(d, "op").accept()
    run2 = tmp_path / "L02"
    shutil.copytree(run, run2)
    with pytest.raises(InputError, match="validation/early-stop/test"):
        from clapnb import probe

        probe.run_probe(run2, extra_labels=d / "reviewed.parquet")
    assert main(["probe", "--run", str(run2), "--no-progress", "--extra-labels", str(d / "reviewed.parquet")]) == 2


def test_answers_on_scenes_mixing_held_out_clips_are_dropped_by_their_truth_source(rounds, tmp_path, capsys):
    """A scene's truth names its source clips: answers over a validation/test clip of the run (same file,
    or another take of the same freesound recording) must not reach the train split."""
    from clapnb import probe

    out, run = rounds["out"], rounds["run"]
    seg = pd.read_parquet(run / "segments.parquet")
    held = seg[(seg["split"] != "train") & (seg["class"] != "background")].drop_duplicates("path")
    held_a, held_b = held.iloc[0], held[held["class"] != held.iloc[0]["class"]].iloc[0]
    assert held_b["group"].startswith("freesound:")
    # another take of held_b's recording: other bytes, other path, the ESC-50 name of its freesound id
    x, sr = sf.read(held_b["path"])
    take = tmp_path / "takes" / f"1-{held_b['group'].split(':')[1]}-Z-0.wav"
    take.parent.mkdir()
    sf.write(take, 0.5 * x[::-1], sr)
    rev = pd.read_csv(out / "review.csv")
    rev = rev[~rev["original_label"].isin([held_a["label"], held_b["label"]])].groupby("original_label").head(1)
    clips = pd.DataFrame({"path": [held_a["path"], str(take), *rev["path"].iloc[:2]],
                          "original_label": [held_a["label"], held_b["label"], *rev["original_label"].iloc[:2]]})
    assert len(clips) == 4  # two held-out sources (one by its recording group only), two clean ones
    clips.to_csv(tmp_path / "clips.csv", index=False)
    assert main(["scene", "--events", str(tmp_path / "clips.csv"), "--label-column", "original_label", "--duration",
                 "40", "--n-events", "4", "--snr", "15,15", "--seed", "3", "--out", str(tmp_path / "scenes")]) == 0
    truth = pd.read_csv(tmp_path / "scenes" / "truth.csv")
    d = tmp_path / "det"
    events.write_events(truth.assign(score=0.9)[["file", "onset_s", "offset_s", "class", "score"]], d)
    assert review.answer_from_reference(review.Review(d, "op"), truth, add_missed=False)["accepted"] == 4
    run2 = tmp_path / "L02"
    shutil.copytree(run, run2)
    assert main(["probe", "--run", str(run2), "--no-progress", "--extra-labels", str(d / "reviewed.parquet")]) == 0
    printed = capsys.readouterr().out
    assert "2 answer(s) dropped" in printed and "held-out splits" in printed
    x = json.loads((run2 / "probe.json").read_text())["extra_labels"]
    got = {(r["source_path"], r["split"]) for r in x["dropped"]}
    assert got == {(held_a["path"], held_a["split"]), (str(take), held_b["split"])}
    kept = truth[~truth["source_path"].isin([held_a["path"], str(take)])]
    assert sorted(r["onset_s"] for r in x["dropped"]) == sorted(truth.loc[~truth.index.isin(kept.index), "onset_s"])
    n_kept = sum(len(review.label_windows(r.onset_s, r.offset_s, 2.0, 40.0)) for r in kept.itertuples())
    assert x["n_windows"] == n_kept and x["n_answers"] == {"accepted": 2}
    only_held = tmp_path / "det_held"
    bad = truth[~truth.index.isin(kept.index)]
    events.write_events(bad.assign(score=0.9)[["file", "onset_s", "offset_s", "class", "score"]], only_held)
    review.answer_from_reference(review.Review(only_held, "op"), bad, add_missed=False)
    with pytest.raises(InputError, match="every answer's windows hold audio of a held-out clip"):
        probe.run_probe(run2, extra_labels=only_held / "reviewed.parquet")


def test_label_windows_by_hand():
    assert review.label_windows(3.0, 4.0, 2.0, 10.0) == [2.5]
    assert review.label_windows(0.2, 0.8, 2.0, 10.0) == [0.0]  # kept inside the file
    assert review.label_windows(9.5, 10.0, 2.0, 10.0) == [8.0]
    assert review.label_windows(2.0, 8.0, 2.0, 20.0) == [2.0, 4.0, 6.0]
    assert len(review.label_windows(0.0, 100.0, 2.0, 100.0)) == review.EXTRA_MAX_WINDOWS
