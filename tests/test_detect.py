"""clapnb detect on scenes composed from held-out real clips; post-processing by hand; resume; bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clapnb import detect, events, scene
from clapnb.cli import main

LABELS = ["siren", "dog", "helicopter", "crickets"]  # ESC-50 only


@pytest.fixture(scope="module")
def setup(envsounds, envsounds_meta, tmp_path_factory):
    """MFCC probe (4 classes + background) on 10 recordings per class; scenes from the *other* recordings."""
    out = tmp_path_factory.mktemp("detect")
    d = envsounds_meta[envsounds_meta["original_label"].isin(LABELS)]
    d = d.drop_duplicates(["original_label", "freesound_id"]).sort_values("path").copy()
    d["path"] = [str(envsounds / p) for p in d["path"]]
    for_probe = d.groupby("original_label").head(10)
    held_out = d.drop(for_probe.index)
    assert set(for_probe["freesound_id"]).isdisjoint(held_out["freesound_id"])
    for_probe.to_csv(out / "probe.csv", index=False)
    held_out[held_out["original_label"] == "siren"].to_csv(out / "sirens.csv", index=False)
    bg = out / "site"
    bg.mkdir()
    for k, db in enumerate(np.linspace(-50, -30, 8)):  # the "site": pink noise at several levels
        sf.write(bg / f"site_{k}.wav", scene.noise(44100 * 10, "pink", float(db), 100 + k), 44100)
    run = out / "L02"
    assert main(["segments", "--data", str(out / "probe.csv"), "--label-column", "original_label",
                 "--background", str(bg), "--length", "2", "--counts", "16,4,4,4", "--out", str(run)]) == 0
    assert main(["embed", "--segments", str(run / "segments.parquet"), "--backbone", "mfcc",
                 "--cache", str(out / "cache"), "--policy", "native", "--no-progress"]) == 0
    assert main(["probe", "--run", str(run)]) == 0
    # a loud (30 dB), long (20 s, tiled) siren in a quiet pink-noise background (scene seeds differ from the site's)
    assert main(["scene", "--events", str(out / "sirens.csv"), "--label-column", "original_label", "--duration", "60",
                 "--n-events", "1", "--snr", "30", "--event-duration", "20", "--n-scenes", "2", "--seed", "1",
                 "--out", str(out / "scenes")]) == 0
    return {"out": out, "probe": run / "probe.pt", "scenes": out / "scenes", "cache": out / "cache"}


def _detect(setup, out, *extra, inputs=None):
    return main(["detect", "--probe", str(setup["probe"]), "--out", str(out), "--cache", str(setup["cache"]),
                 "--no-progress", "--threshold", "0.4", "--merge-gap", "2", "--min-duration", "3", *extra,
                 *(inputs or [str(setup["scenes"])])])


def test_probe_has_a_background_class_reported_apart(setup):
    record = json.loads((setup["probe"].parent / "probe.json").read_text())
    assert record["classes"][-1] == "background"
    assert record["background"]["test"]["n_background"] == 4 and record["background"]["test"]["n_events"] == 16


@pytest.fixture(scope="module")
def detected(setup):
    out = setup["out"] / "det"
    assert _detect(setup, out) == 0
    return out


def test_loud_long_event_found_with_the_right_times_and_exports_agree(setup, detected):
    out = detected
    truth = pd.read_csv(setup["scenes"] / "truth.csv")
    ev = events.read_events(out / "events.csv")
    assert "background" not in set(ev["class"])
    first = truth.iloc[0]
    hits = ev[(ev["file"] == first["file"]) & (ev["class"] == "sirens_alarms")]
    # measured: one 20-s sirens_alarms event for the siren at 36.2-56.2 s (1-s grid, 2-s windows, native policy)
    assert len(hits) == 1
    assert abs(hits["onset_s"].iloc[0] - first["onset_s"]) <= 1.5
    assert abs(hits["offset_s"].iloc[0] - first["offset_s"]) <= 1.5
    assert 0.4 <= hits["score"].iloc[0] <= 1
    # every export says the same
    pd.testing.assert_frame_equal(ev, events.read_events(out / "events.parquet"))
    rec = json.loads((out / "detect.json").read_text())
    for f, rel in rec["outputs"]["audacity"].items():
        back = events.read_audacity(out / rel, file=f)
        np.testing.assert_allclose(back[["onset_s", "offset_s"]], ev[ev["file"] == f][["onset_s", "offset_s"]], atol=1e-6)
        assert back["class"].tolist() == ev[ev["file"] == f]["class"].tolist()
    raven = events.read_raven(out / "raven_selections.txt", folder=setup["scenes"])
    np.testing.assert_allclose(raven[["onset_s", "offset_s"]], ev[["onset_s", "offset_s"]], atol=1e-5)
    assert [str(p) for p in raven["file"]] == ev["file"].tolist()
    scores = pd.read_parquet(out / "scores.parquet")
    assert list(scores.columns) == ["file", "onset_s", "offset_s", *rec["probe"]["classes"]]
    assert len(scores) == 120 and np.allclose(scores[rec["probe"]["classes"]].sum(axis=1), 1.0)
    p = rec["parameters"]
    assert (p["hop_s"], p["grid_s"], p["threshold"], p["merge_gap_s"], p["aggregate"]) == (1.0, 1.0, 0.4, 2.0, "mean")
    assert rec["background"]["in_probe"] and rec["random_weights"] is False and rec["mode"] == "fp32"
    assert [f["status"] for f in rec["files"]] == ["done", "done"]


class Interrupting:
    """The real backbone, killed (KeyboardInterrupt) after ``calls`` forward passes: a crash mid-run."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls
        self.seen = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_audio(self, waves):
        self.seen += 1
        if self.seen > self.calls:
            raise KeyboardInterrupt
        return self.inner.embed_audio(waves)


def test_interrupted_run_resumes_to_identical_outputs_without_reembedding(setup, tmp_path):
    from clapnb.backbones import load_backbone

    cache = tmp_path / "cache"
    post = detect.PostConfig(threshold=0.4, merge_gap_s=2.0, min_duration_s=3.0)
    files = sorted(str(p) for p in setup["scenes"].glob("*.wav"))
    ref = detect.detect_files(setup["probe"], files, tmp_path / "ref", post=post, cache_dir=tmp_path / "refcache",
                              backbone=load_backbone("mfcc", policy="native"), batch_size=8)
    crashing = Interrupting(load_backbone("mfcc", policy="native"), calls=10)  # 59 windows per file, 8 per batch: dies in file 2
    with pytest.raises(KeyboardInterrupt):
        detect.detect_files(setup["probe"], files, tmp_path / "run", post=post, cache_dir=cache, backbone=crashing,
                            batch_size=8)
    assert len(list((tmp_path / "run" / "files").glob("*.parquet"))) == 1  # file 1 finished and kept
    counting = Interrupting(load_backbone("mfcc", policy="native"), calls=10 ** 6)
    again = detect.detect_files(setup["probe"], files, tmp_path / "run", post=post, cache_dir=cache,
                                backbone=counting, batch_size=8)
    st = again.record["files"]
    assert st[0]["status"] == "reused" and st[1]["status"] == "done"
    assert 0 < st[1]["n_cached"] < st[1]["n_windows"]  # windows embedded before the crash were kept
    assert counting.seen == int(np.ceil(st[1]["n_computed"] / 8))
    for name in ("events.csv", "events.parquet", "scores.parquet", "raven_selections.txt"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    # a new threshold on the same folder: nothing embedded, only post-processing
    counting.seen = 0
    stricter = detect.detect_files(setup["probe"], files, tmp_path / "run", post=detect.PostConfig(threshold=0.9),
                                   cache_dir=cache, backbone=counting)
    assert counting.seen == 0 and len(stricter.events) <= len(again.events)
    # a fresh output folder (e.g. a retrained probe) reads every window from the cache
    detect.detect_files(setup["probe"], files, tmp_path / "fresh", post=post, cache_dir=cache, backbone=counting)
    assert counting.seen == 0


def test_bad_files_are_skipped_with_reasons_and_the_rest_goes_on(setup, tmp_path, capsys):
    good = sorted(setup["scenes"].glob("*.wav"))[0]
    x, sr = sf.read(good, dtype="float32")
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "stereo48k_24bit.wav", np.stack([x[:sr * 12], x[:sr * 12]], axis=1), sr, subtype="PCM_24")
    import soxr

    sf.write(d / "rate48k.wav", soxr.resample(x[:sr * 10], sr, 48000), 48000, subtype="PCM_24")
    sf.write(d / "rate8k.wav", soxr.resample(x[:sr * 10], sr, 8000), 8000)
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "short.wav", x[:sr], sr)
    sf.write(d / "corrupt.flac", x[:sr * 10], sr)
    raw = bytearray((d / "corrupt.flac").read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 4000] = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (d / "corrupt.flac").write_bytes(bytes(raw))
    (d / "notes.txt").write_text("not audio")
    out = tmp_path / "det"
    assert _detect(setup, out, inputs=[str(d)]) == 1  # some skipped
    text = capsys.readouterr().out
    assert "3 of 6 file(s) analysed, 3 skipped" in text
    rec = json.loads((out / "detect.json").read_text())
    status = {f["file"].split("/")[-1]: f for f in rec["files"]}
    assert {k for k, f in status.items() if f["status"] == "done"} == {"stereo48k_24bit.wav", "rate48k.wav", "rate8k.wav"}
    assert "empty" in status["empty.wav"]["reason"] and "shorter than one 2-s window" in status["short.wav"]["reason"]
    assert "corrupt.flac" in status["corrupt.flac"]["reason"]
    assert status["stereo48k_24bit.wav"]["channels"] == 2 and status["rate8k.wav"]["sample_rate"] == 8000
    assert main(["detect", "--probe", str(setup["probe"]), "--out", str(tmp_path / "bad"), "--no-progress",
                 "--cache", str(setup["cache"]), str(d / "empty.wav")]) == 2
    assert main(["detect", "--probe", str(setup["probe"]), "--out", str(tmp_path / "bad"), "--no-progress",
                 "--hop", "5", str(good)]) == 2


def test_scene_exclude_segments_keeps_the_probes_recordings_out(setup, tmp_path):
    both = pd.concat([pd.read_csv(setup["out"] / "probe.csv"), pd.read_csv(setup["out"] / "sirens.csv")])
    both = both[both["original_label"] == "siren"]
    both.to_csv(tmp_path / "all_sirens.csv", index=False)
    segs = pd.read_parquet(setup["probe"].parent / "segments.parquet")
    assert main(["scene", "--events", str(tmp_path / "all_sirens.csv"), "--label-column", "original_label",
                 "--exclude-segments", str(setup["probe"].parent / "segments.parquet"), "--duration", "30",
                 "--n-events", "4", "--n-scenes", "3", "--out", str(tmp_path / "s")]) == 0
    used = set(pd.read_csv(tmp_path / "s" / "truth.csv")["source_path"])
    assert len(used) >= 4 and used.isdisjoint(set(segs["path"]))
    assert used <= set(pd.read_csv(setup["out"] / "sirens.csv")["path"])


def test_a_second_detect_on_a_busy_folder_is_refused(setup, tmp_path, capsys):
    import subprocess
    import sys
    import time

    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom clapnb.locks import run_lock\n"
                               f"with run_lock({str(out)!r}, command='clapnb detect'):\n"
                               "    print('held', flush=True)\n    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _detect(setup, out) == 2
        assert "in use by" in capsys.readouterr().err
        assert not (out / "events.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert _detect(setup, out) == 0 and (out / "events.csv").is_file()


def test_start_time_from_name_gives_clock_times(setup, tmp_path):
    src = sorted(setup["scenes"].glob("*.wav"))[0]
    named = tmp_path / "SITE_20240501_120000.wav"
    shutil.copy(src, named)
    out = tmp_path / "det"
    assert _detect(setup, out, "--start-time-from-name", "%Y%m%d_%H%M%S", inputs=[str(named)]) == 0
    ev = events.read_events(out / "events.parquet")
    assert len(ev) and (ev["start_time"] == pd.Timestamp("2024-05-01 12:00:00") + pd.to_timedelta(ev["onset_s"], "s")).all()
    assert (ev["end_time"] - ev["start_time"]).dt.total_seconds().round(6).tolist() == (ev["offset_s"] - ev["onset_s"]).round(6).tolist()


def test_score_events_of_a_detection_against_its_own_exports_is_perfect(setup, detected, tmp_path):
    """Raven and Audacity exports read back as references match the events one to one (files matched by name)."""
    from clapnb.event_metrics import score_events

    res = score_events(detected, detected / "raven_selections.txt")
    assert res["event_based"]["micro"]["f_measure"] == 1.0 and res["class_agnostic"]["f_measure"] == 1.0
    assert res["event_based"]["n_reference"] == res["event_based"]["n_estimated"] >= 1
    truth = pd.read_csv(setup["scenes"] / "truth.csv")
    first = json.loads((detected / "detect.json").read_text())["outputs"]["audacity"][truth["file"].iloc[0]]
    res = score_events(detected, detected / first)  # labels of scene_000 only: named after the file's stem
    ev = events.read_events(detected / "events.csv")
    in_first = int((ev["file"] == truth["file"].iloc[0]).sum())  # the other file's events are false alarms here
    assert res["event_based"]["micro"]["precision"] == pytest.approx(in_first / len(ev))
    assert res["event_based"]["micro"]["recall"] == 1.0


def test_detection_views_read_the_outputs(setup, detected):
    from clapnb import detect_plots

    record, ev, scores = detect_plots.open_detection(detected)
    summary = detect_plots.class_summary(ev)
    assert summary["events"].sum() == len(ev)
    assert summary["total_s"].sum() == pytest.approx((ev["offset_s"] - ev["onset_s"]).sum())
    top = detect_plots.top_events(ev, 1)
    assert len(top) == ev["class"].nunique() and top["score"].tolist() == ev.groupby("class")["score"].max().tolist()
    truth = pd.read_csv(setup["scenes"] / "truth.csv")
    fig = detect_plots.timeline_figure(record, ev, scores, truth["file"].iloc[0], reference=truth)
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "scene_000.wav"
    spec = detect_plots.event_spectrograms(top)
    assert sum(ax.axison for ax in spec.axes) == len(top)
    x, sr = detect_plots.excerpt(truth["file"].iloc[0], 36.0, 40.0)
    assert len(x) == 4 * sr
    assert "background" in detect_plots.banner(record)


def test_detection_page_notebook_executes_into_a_book_folder(setup, detected, tmp_path):
    """`clapnb book --detect` lays out notebook 05 executed on the folder and lists it in the toc."""
    import nbformat
    import yaml

    from clapnb import detect_book

    (tmp_path / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/index",
                                                      "chapters": [{"file": "book/results"}]}))
    nb_path = detect_book.add_detection(tmp_path, detected, setup["scenes"] / "truth.csv",
                                        parameters={"max_files": 1, "n_top": 1, "show_levels": True})
    toc = yaml.safe_load((tmp_path / "_toc.yml").read_text())
    assert toc["chapters"][-1] == {"file": "run/05_detection"}
    nb = nbformat.read(nb_path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # timeline, top-event spectrograms, LAF history
    text = "".join(str(o.get("data", {}).get(k, "")) for o in outputs for k in ("text/markdown", "text/html"))
    assert "event-based F1 (micro)" in text and "sirens_alarms" in text
    assert "LAeq_excl_dBFS" in text and "LAeq_error_dB" in text and "not a sound pressure level" in text.lower()
    assert nb.cells[0].source.startswith("# Detection")


# --- the timeline and post-processing, by hand -------------------------------------------------------

def test_timeline_mean_and_max_by_hand():
    w = pd.DataFrame({"start_s": [0.0, 1.0, 2.0], "end_s": [2.0, 3.0, 4.0]})
    p = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0]])
    cells, mean = detect.timeline(w, p, 4.0, 1.0, "mean")
    assert cells.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    np.testing.assert_allclose(mean[:, 0], [0.2, 0.4, 0.8, 1.0])
    _, mx = detect.timeline(w, p, 4.0, 1.0, "max")
    np.testing.assert_allclose(mx[:, 1], [0.8, 0.8, 0.4, 0.0])


def test_post_processing_by_hand():
    cells = np.stack([np.arange(12.0), np.arange(12.0) + 1], axis=1)
    a = np.array([0, .9, .9, 0, .8, .8, .8, 0, 0, 0, .7, 0])  # class a: runs [1,3), [4,7), [10,11)
    s = np.stack([a, 1 - a], axis=1)
    plain = detect.events_from_scores(cells, s, ["a", "background"], detect.PostConfig(threshold=0.5), 12.0)
    assert plain[["onset_s", "offset_s"]].values.tolist() == [[1, 3], [4, 7], [10, 11]]
    assert plain["score"].round(6).tolist() == [0.9, 0.8, 0.7] and set(plain["class"]) == {"a"}
    merged = detect.events_from_scores(cells, s, ["a", "background"],
                                       detect.PostConfig(threshold=0.5, merge_gap_s=1, min_duration_s=2), 12.0)
    assert merged[["onset_s", "offset_s"]].values.tolist() == [[1, 7]]
    padded = detect.events_from_scores(cells, s, ["a", "background"], detect.PostConfig(threshold=0.5, pad_s=1), 12.0)
    assert padded[["onset_s", "offset_s"]].values.tolist() == [[0, 8], [9, 12]]
    med = detect.events_from_scores(cells, s, ["a", "background"], detect.PostConfig(threshold=0.5, median_s=3), 12.0)
    assert med[["onset_s", "offset_s"]].values.tolist() == [[1, 7]]  # the 1-cell dip at 3 is filled, 10 removed
    # open-set rule (no background class): a cell whose best class is below 0.6 gives no event
    three = np.array([[.55, .45, 0], [.7, .3, 0], [.5, .2, .3]])
    ev = detect.events_from_scores(cells[:3], three, ["a", "b", "c"],
                                   detect.PostConfig(threshold=0.5, open_set_threshold=0.6), 3.0)
    assert ev[["onset_s", "offset_s", "class"]].values.tolist() == [[1, 2, "a"]]
    with pytest.raises(Exception, match="aggregate"):
        detect.PostConfig(aggregate="median")


def test_random_weights_stand_in_detections_are_labelled(clap_2023, tmp_path):
    """A probe on the random-weights CLAP stand-in: detect runs its msclap path and says RANDOM WEIGHTS everywhere."""
    from clapnb import probe as probe_mod

    from clapnb import io
    from clapnb.embeddings import _backbone_meta

    meta = json.loads(json.dumps(io.to_jsonable(_backbone_meta(clap_2023, None))))  # as embeddings.json holds it
    rng = np.random.default_rng(0)
    classes = ["dogs", "sirens_alarms"]
    head = probe_mod.Probe(weight=rng.normal(0, 0.05, (2, clap_2023.dim)).astype(np.float32),
                           bias=np.zeros(2, np.float32), mean=np.zeros(clap_2023.dim, np.float32),
                           scale=np.ones(clap_2023.dim, np.float32), classes=classes,
                           config=probe_mod.ProbeConfig(), backbone=meta, length_s=5.0)
    probe_mod.save_probe(tmp_path / "probe.pt", head)
    wav = tmp_path / "site.wav"
    sf.write(wav, scene.noise(6 * 22050, "pink", -30.0, 3), 22050)
    res = detect.detect_files(tmp_path / "probe.pt", [str(wav)], tmp_path / "det", backbone=clap_2023,
                              cache_dir=tmp_path / "cache", post=detect.PostConfig(threshold=0.0, open_set_threshold=0.0))
    rec = json.loads((tmp_path / "det" / "detect.json").read_text())
    assert rec["random_weights"] is True and "NOT CLAP results" in rec["warning"]
    assert rec["backbone"]["name"] == "msclap-2023" and rec["mode"] == "fp32"
    assert rec["files"][0]["n_windows"] == 2 and "open-set rule" in rec["background"]["rule"]
    assert detect.summary(res).startswith("WARNING: RANDOM-WEIGHTS")
    assert len(res.events) >= 1 and set(res.events["class"]) <= set(classes)
