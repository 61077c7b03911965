"""Scenes (clapnb scene), the events table's exports/readers and start times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clapnb import audio, events, scene, timebase
from clapnb.errors import InputError

SR = audio.TARGET_SR


def _clips(envsounds, envsounds_meta, labels=("siren", "dog"), per_label=2):
    from conftest import small_manifest

    m = small_manifest(envsounds_meta, envsounds, per_label, list(labels))
    return m.assign(**{"class": m["original_label"].map({"siren": "sirens_alarms", "dog": "dogs",
                                                         "helicopter": "helicopter"})})


def test_scene_snr_times_and_seed_are_exact(envsounds, envsounds_meta, tmp_path):
    clips = _clips(envsounds, envsounds_meta)
    cfg = scene.SceneConfig(duration_s=30.0, n_events=3, snr_db=(-5.0, 15.0), seed=3)
    plan, waves = scene.plan_scene(clips, cfg, name="s")
    bg = scene.background_audio(None, cfg)
    mix, record = scene.render_scene(plan, bg, cfg, waves)
    gain = 10 ** (record["gain_db"] / 20)
    assert len(mix) == 30 * SR and record["n_events"] == 3
    prev_end = 0.0
    for row, w in zip(plan.itertuples(index=False), waves):
        a, b = int(round(row.onset_s * SR)), int(round(row.offset_s * SR))
        assert b - a == len(w) and row.onset_s >= prev_end + cfg.min_gap_s - 1e-9
        prev_end = row.offset_s
        event = mix[a:b].astype(np.float64) / gain - bg[a:b]
        snr = 10 * np.log10(np.mean(event ** 2) / np.mean(bg[a:b].astype(np.float64) ** 2))
        assert snr == pytest.approx(row.snr_db, abs=0.05)
        assert -5 <= row.snr_db <= 15
        # the event is the source clip from its trimmed start (same samples, one gain)
        src = audio.load(row.source_path)[int(round(row.source_offset_s * SR)):][:len(w)]
        np.testing.assert_allclose(w, src)
    assert 30.0 - prev_end >= cfg.min_gap_s - 1e-9
    plan2, _ = scene.plan_scene(clips, cfg, name="s")
    pd.testing.assert_frame_equal(plan, plan2)
    plan3, _ = scene.plan_scene(clips, scene.SceneConfig(duration_s=30.0, n_events=3, seed=4), name="s")
    assert not plan3[["onset_s", "snr_db"]].equals(plan[["onset_s", "snr_db"]])


def test_a_site_recording_background_is_tiled_or_cut(tmp_path):
    site = tmp_path / "site.wav"
    x = scene.noise(3 * 22050, "brown", -30.0, 7)
    sf.write(site, x, 22050, subtype="FLOAT")
    cfg = scene.SceneConfig(duration_s=7.5, n_events=0)
    bg = scene.background_audio(site, cfg)
    one = audio.load(site)
    assert len(bg) == int(7.5 * SR) and np.array_equal(bg[:len(one)], one) and np.array_equal(bg[len(one):2 * len(one)], one)
    assert len(scene.background_audio(site, scene.SceneConfig(duration_s=1.0, n_events=0))) == SR


def test_trim_drops_digital_silence():
    x = np.zeros(SR, dtype=np.float32)
    x[SR // 4:SR // 2] = 0.5
    a, b = scene.trim(x, SR)
    assert abs(a - SR // 4) <= SR // 100 and abs(b - SR // 2) <= SR // 100


def test_scene_cli_writes_scenes_truth_and_bext(envsounds, envsounds_meta, tmp_path):
    from clapnb.cli import main

    clips = _clips(envsounds, envsounds_meta)
    clips[["path", "original_label", "freesound_id"]].to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "scenes"
    rc = main(["scene", "--events", str(tmp_path / "m.csv"), "--label-column", "original_label", "--duration", "20",
               "--n-events", "2", "--snr", "10", "--event-duration", "6", "--n-scenes", "2", "--seed", "1",
               "--start-time", "2024-05-01T12:00:00", "--out", str(out)])
    assert rc == 0
    truth, notes = events.read_reference(out / "truth.csv")
    assert notes == [] and len(truth) == 4 and set(truth["class"]) <= {"sirens_alarms", "dogs"}
    assert np.allclose(truth["offset_s"] - truth["onset_s"], 6.0, atol=1e-4)
    info = sf.info(str(out / "scene_001.wav"))
    assert info.duration == pytest.approx(20.0) and info.samplerate == SR
    st = timebase.start_time(out / "scene_001.wav")
    assert st.source == "bext" and st.time == pd.Timestamp("2024-05-01T12:00:20")
    first = (out / "scene_000.wav").read_bytes()
    assert main(["scene", "--events", str(tmp_path / "m.csv"), "--label-column", "original_label", "--duration", "20",
                 "--n-events", "2", "--snr", "10", "--event-duration", "6", "--n-scenes", "1", "--seed", "1",
                 "--start-time", "2024-05-01T12:00:00", "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "scene_000.wav").read_bytes() == first
    assert main(["scene", "--events", str(tmp_path / "m.csv"), "--label-column", "original_label",
                 "--duration", "5", "--n-events", "2", "--out", str(tmp_path / "x")]) == 2


def _events_table():
    return pd.DataFrame({"file": ["/a/r1.wav", "/a/r1.wav", "/b/r2.wav"], "onset_s": [1.5, 10.0, 0.25],
                         "offset_s": [4.0, 12.5, 3.0], "class": ["dogs", "sirens_alarms", "dogs"],
                         "score": [0.9, 0.61, 0.75],
                         "start_time": pd.to_datetime(["2024-05-01 12:00:01.5", "2024-05-01 12:00:10", None], format="ISO8601"),
                         "end_time": pd.to_datetime(["2024-05-01 12:00:04", "2024-05-01 12:00:12.5", None], format="ISO8601")})


def test_events_csv_parquet_round_trip(tmp_path):
    ev = _events_table()
    events.write_events(ev, tmp_path)
    for name in ("events.csv", "events.parquet"):
        back = events.read_events(tmp_path / name)
        assert list(back.columns[:7]) == list(events.EVENT_COLUMNS) + list(events.TIME_COLUMNS)
        pd.testing.assert_frame_equal(back, events.normalise(ev), check_dtype=False)
    assert pd.read_csv(tmp_path / "events.csv")["start_time"][0] == "2024-05-01T12:00:01.500000"


def test_audacity_and_raven_round_trip(tmp_path):
    ev = events.normalise(_events_table())
    for f, g in ev.groupby("file"):
        events.write_audacity(g, tmp_path / (f.split("/")[-1] + ".txt"))
    back = events.read_audacity(tmp_path / "r1.wav.txt", file="/a/r1.wav")
    assert (tmp_path / "r1.wav.txt").read_text().splitlines()[0] == "1.500000\t4.000000\tdogs"
    pd.testing.assert_frame_equal(back, ev[ev["file"] == "/a/r1.wav"][["file", "onset_s", "offset_s", "class"]]
                                  .reset_index(drop=True))
    events.write_raven(ev, tmp_path / "sel.txt", durations={"/a/r1.wav": 60.0, "/b/r2.wav": 30.0})
    lines = (tmp_path / "sel.txt").read_text().splitlines()
    assert lines[0].split("\t") == list(events.RAVEN_COLUMNS)
    third = dict(zip(events.RAVEN_COLUMNS, lines[3].split("\t")))
    assert float(third["Begin Time (s)"]) == 60.25 and float(third["File Offset (s)"]) == 0.25
    assert third["Begin File"] == "r2.wav" and third["Class"] == "dogs"
    raven = events.read_raven(tmp_path / "sel.txt")
    assert raven["file"].tolist() == ["r1.wav", "r1.wav", "r2.wav"]
    np.testing.assert_allclose(raven[["onset_s", "offset_s", "score"]], ev[["onset_s", "offset_s", "score"]], atol=1e-4)
    ref, _ = events.read_reference(tmp_path / "sel.txt", folder="/b")
    assert events.sniff(tmp_path / "sel.txt") == "raven" and ref["file"].iloc[-1] == "/b/r2.wav"


def test_reference_checks(tmp_path):
    (tmp_path / "ref.csv").write_text("file,onset_s,offset_s,class\nx.wav,1,5,dogs\nx.wav,4,8,dogs\n"
                                      "x.wav,4,6,sirens_alarms\nx.wav,20,21,dogs\n")
    ref, notes = events.read_reference(tmp_path / "ref.csv", classes=["dogs", "sirens_alarms"])
    assert ref[ref["class"] == "dogs"][["onset_s", "offset_s"]].values.tolist() == [[1, 8], [20, 21]]
    assert len(notes) == 1 and "overlapping 'dogs'" in notes[0]
    with pytest.raises(InputError, match=r"class\(es\) \['sirens_alarms'\]"):
        events.read_reference(tmp_path / "ref.csv", classes=["dogs"])
    (tmp_path / "bad.csv").write_text("file,onset_s,offset_s,class\nx.wav,5,1,dogs\n")
    with pytest.raises(InputError, match="offset before onset"):
        events.read_reference(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("path,start,end\nx,1,2\n")
    with pytest.raises(InputError, match="missing"):
        events.read_reference(tmp_path / "cols.csv")


def test_start_time_from_name_and_bext(tmp_path):
    p = tmp_path / "SITE3_20240501_123456_part.wav"
    sf.write(p, np.zeros(800, np.float32), 8000)
    st = timebase.start_time(p, "%Y%m%d_%H%M%S")
    assert st.source == "name" and st.time == pd.Timestamp("2024-05-01 12:34:56")
    assert timebase.start_time(p, "%Y-%m-%d").source == "none"
    assert timebase.from_name(tmp_path / "x_20241399_000000.wav", "%Y%m%d_%H%M%S") is None
    timebase.write_bext(p, pd.Timestamp("2023-01-02 03:04:05.5"), 8000)
    assert sf.info(str(p)).frames == 800  # still a valid WAV
    assert timebase.start_time(p).time == pd.Timestamp("2023-01-02 03:04:05.5")
    assert timebase.start_time(p, "%Y%m%d_%H%M%S").source == "name"  # the name wins when asked for
    with pytest.raises(InputError, match="unsupported directive"):
        timebase.format_regex("%Q")
    assert timebase.absolute(pd.Timestamp("2024-01-01"), 90.0) == pd.Timestamp("2024-01-01 00:01:30")
