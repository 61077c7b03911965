"""The review model: queue order, answers saved at once, resume, the reviewed table as an events table,
the Audacity/Raven round trip, precision from answers. No widget, no browser."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clapnb import events, io, review
from clapnb.cli import main
from clapnb.errors import InputError

SR = 16000
CLASSES = ["siren", "dog", "helicopter", "background"]


@pytest.fixture()
def det(tmp_path):
    """A detect folder by hand: two 20-s files (quiet noise, loud bursts where the events are)."""
    rng = np.random.default_rng(0)
    files = []
    for k in range(2):
        x = 0.001 * rng.standard_normal(20 * SR)
        for on in (2.0, 8.0, 14.0):
            a = int(on * SR)
            x[a:a + 2 * SR] += 0.3 * np.sin(2 * np.pi * 1000 * np.arange(2 * SR) / SR)
        p = tmp_path / f"rec_{k}.wav"
        sf.write(p, x, SR)
        files.append(str(p))
    ev = pd.DataFrame({
        "file": [files[0]] * 3 + [files[1]] * 3,
        "onset_s": [2.0, 8.0, 14.0, 2.0, 8.0, 14.0], "offset_s": [4.0, 10.0, 16.0, 4.0, 10.0, 16.0],
        "class": ["siren", "dog", "siren", "helicopter", "dog", "siren"],
        "score": [0.95, 0.52, 0.70, 0.61, 0.88, 0.45]})
    d = tmp_path / "det"
    events.write_events(ev, d)
    io.atomic_write_json(d / "detect.json", {
        "probe": {"classes": CLASSES}, "parameters": {"threshold": 0.5, "class_thresholds": {"siren": 0.4}},
        "files": [{"file": f, "duration_s": 20.0, "status": "done"} for f in files]})
    return {"dir": d, "files": files, "events": ev}


def test_queue_orders_by_score_uncertainty_and_level(det):
    r = review.Review(det["dir"], "op")
    assert r.queue["score"].tolist() == sorted(det["events"]["score"], reverse=True)
    r.set_sort("uncertainty")  # |score - threshold of its class| (siren 0.4, others 0.5)
    th = np.where(det["events"]["class"] == "siren", 0.4, 0.5)
    dist = np.abs(det["events"]["score"] - th)
    assert r.queue["score"].tolist() == det["events"]["score"].to_numpy()[np.argsort(dist, kind="stable")].tolist()
    with pytest.raises(InputError, match="events_levels.csv"):
        r.set_sort("level")
    lv = det["dir"].parent / "lv"
    assert main(["levels", "--audio", *det["files"], "--events", str(det["dir"] / "events.csv"), "--exclude", "all",
                 "--interval", "20s", "--out", str(lv)]) == 0
    contrib = pd.read_csv(lv / "events_levels.csv")
    r2 = review.Review(det["dir"], "op", sort="level", levels=lv / "events_levels.csv")
    assert r2.queue["contribution_dB"].notna().all()
    assert r2.queue["contribution_dB"].tolist() == sorted(contrib["contribution_dB"], reverse=True)
    r2.set_filter(classes=["siren"], files=[det["files"][0]])
    assert len(r2) == 2 and set(r2.queue["class"]) == {"siren"} and r2.progress() == (0, 2)


def test_answers_are_saved_at_once_and_a_reopened_review_continues(det):
    r = review.Review(det["dir"], "alice")
    first = r.current()
    assert first["score"] == 0.95
    r.accept()
    saved = review.read_reviewed(det["dir"] / "reviewed.parquet")  # on disk after one answer
    assert saved.set_index("event_id").loc[first["event_id"], "status"] == "accepted"
    second = r.current()
    r.reject()
    third = r.current()
    r.relabel("background")
    fourth = r.current()
    r.answer(status="relabelled", cls="dog", onset_s=fourth["onset_s"] + 0.5, offset_s=fourth["offset_s"])
    assert r.progress() == (4, 6)
    del r  # "the kernel restarts"
    again = review.Review(det["dir"], "bob")
    assert again.progress() == (4, 6)
    assert again.current()["event_id"] not in {first["event_id"], second["event_id"], third["event_id"],
                                               fourth["event_id"]}
    again.adjust(1.0, 3.5)
    t = review.read_reviewed(det["dir"] / "reviewed.parquet").set_index("event_id")
    row = t.loc[fourth["event_id"]]
    assert (row["status"], row["class"], row["original_class"], row["reviewer"]) == ("relabelled", "dog",
                                                                                     fourth["class"], "alice")
    assert row["onset_s"] == fourth["onset_s"] + 0.5 and row["original_onset_s"] == fourth["onset_s"]
    assert t.loc[second["event_id"], "status"] == "rejected" and pd.notna(t.loc[second["event_id"], "reviewed_at"])
    assert (t["reviewer"] == "bob").sum() == 1 and len(t) == 6
    with pytest.raises(InputError, match="not one of the probe's classes"):
        again.relabel("unicorn")
    assert not list(det["dir"].glob(".reviewed.parquet.*.tmp"))


def test_two_sessions_at_once_keep_each_others_answers(det):
    a, b = review.Review(det["dir"], "a"), review.Review(det["dir"], "b")
    ea = a.accept()["event_id"]
    b.set_sort("uncertainty")
    eb = b.reject()["event_id"]
    assert ea != eb
    t = review.read_reviewed(det["dir"] / "reviewed.parquet").set_index("event_id")
    assert t.loc[ea, "status"] == "accepted" and t.loc[eb, "status"] == "rejected"


def test_reviewed_table_is_the_operators_events_for_levels(det, tmp_path):
    r = review.Review(det["dir"], "op", sort="time")
    r.reject()  # rec_0 2..4 siren: a false alarm
    r.relabel("background")  # rec_0 8..10 dog: the site's background
    r.adjust(13.0, 17.0)  # rec_0 14..16 siren moved
    r.relabel("dog")  # rec_1 2..4 helicopter -> dog; two rows of rec_1 stay pending
    path = det["dir"] / "reviewed.parquet"
    ev = events.read_events(path)
    assert len(ev) == 4 and set(ev["status"]) == {"adjusted", "relabelled", "pending"}
    want = pd.DataFrame({"file": [det["files"][0], det["files"][1], det["files"][1], det["files"][1]],
                         "onset_s": [13.0, 2.0, 8.0, 14.0], "offset_s": [17.0, 4.0, 10.0, 16.0],
                         "class": ["siren", "dog", "dog", "siren"], "score": [0.70, 0.61, 0.88, 0.45]})
    pd.testing.assert_frame_equal(ev[list(events.EVENT_COLUMNS)], events.normalise(want))
    want_csv = tmp_path / "want.csv"
    want.to_csv(want_csv, index=False)
    for name, table in (("rev", path), ("want", want_csv)):
        assert main(["levels", "--audio", *det["files"], "--events", str(table), "--exclude", "all",
                     "--interval", "20s", "--out", str(tmp_path / name)]) == 0
    got, exp = (pd.read_csv(tmp_path / n / "levels.csv") for n in ("rev", "want"))
    pd.testing.assert_frame_equal(got, exp)
    plain = tmp_path / "plain"
    assert main(["levels", "--audio", *det["files"], "--events", str(det["dir"] / "events.csv"), "--exclude", "all",
                 "--interval", "20s", "--out", str(plain)]) == 0
    before = pd.read_csv(plain / "levels.csv").query("scope == 'total'").iloc[0]
    after = got.query("scope == 'total'").iloc[0]
    # the rejected and background spans hold bursts: kept in, they raise the residual LAeq
    assert after["LAeq_excl_dBFS"] > before["LAeq_excl_dBFS"] + 3
    assert json.loads((tmp_path / "rev" / "levels.json").read_text())["events"]["rows"] == 4


@pytest.mark.parametrize("kind", ["audacity", "raven"])
def test_desktop_round_trip_turns_edits_into_answers(det, tmp_path, kind):
    r = review.Review(det["dir"], "op", sort="time")
    out = review.export_queue(r, tmp_path / kind, kind)
    f0, f1 = det["files"]
    if kind == "audacity":
        (out / "rec_0.txt").write_text("2.000000\t4.000000\tsiren\n"  # unchanged -> accept
                                       "8.000000\t10.000000\thelicopter\n"  # class changed -> relabel
                                       "13.500000\t16.000000\tsiren\n")  # moved -> adjust
        (out / "rec_1.txt").write_text("2.000000\t4.000000\thelicopter\n"  # 8..10 deleted -> reject
                                       "14.000000\t16.000000\tbackground\n"  # -> relabel to background
                                       "18.000000\t19.500000\tdog\n")  # drawn by the operator -> added
    else:
        tab = pd.read_csv(out / "review_selections.txt", sep="\t", dtype=str)
        assert len(tab) == 6 and tab["Begin File"].tolist() == ["rec_0.wav"] * 3 + ["rec_1.wav"] * 3
        tab.loc[1, "Class"] = "helicopter"
        tab.loc[2, "File Offset (s)"] = "13.5"
        tab.loc[2, "Begin Time (s)"] = "13.5"
        tab.loc[5, "Class"] = "background"
        tab = tab.drop(index=4)
        extra = tab.iloc[[0]].copy()
        extra[["Begin Time (s)", "End Time (s)", "File Offset (s)", "Begin File", "Class"]] = [
            "38.0", "39.5", "18.0", "rec_1.wav", "dog"]
        pd.concat([tab, extra]).to_csv(out / "review_selections.txt", sep="\t", index=False)
    counts = review.import_edits(r, out)
    assert counts == {"accepted": 2 if kind == "audacity" else 2, "rejected": 1, "relabelled": 2, "adjusted": 1,
                      "added": 1, "unchanged": 0}
    t = review.read_reviewed(det["dir"] / "reviewed.parquet")
    got = {(row.file, round(row.onset_s, 3), row.status, row["class"]) for _, row in t.iterrows()}
    assert got == {(f0, 2.0, "accepted", "siren"), (f0, 8.0, "relabelled", "helicopter"),
                   (f0, 13.5, "adjusted", "siren"), (f1, 2.0, "accepted", "helicopter"),
                   (f1, 8.0, "rejected", "dog"), (f1, 14.0, "relabelled", "background"), (f1, 18.0, "added", "dog")}
    assert set(t["source"]) == {kind} and r.progress() == (7, 7)
    (out / ("rec_0.txt" if kind == "audacity" else "review_selections.txt")).write_text(
        "1\t2\tunicorn\n" if kind == "audacity" else
        "Selection\tBegin Time (s)\tEnd Time (s)\tBegin File\tFile Offset (s)\tClass\n1\t1\t2\trec_0.wav\t1\tunicorn\n")
    with pytest.raises(InputError, match="unicorn"):
        review.import_edits(r, out)


def test_precision_per_class_and_curve_from_answers_by_hand():
    t = pd.DataFrame({"status": ["accepted", "rejected", "adjusted", "relabelled", "rejected", "pending", "added"],
                      "original_class": ["dog", "dog", "dog", "siren", "siren", "siren", ""],
                      "class": ["dog", "dog", "dog", "dog", "siren", "siren", "siren"],
                      "score": [0.9, 0.8, 0.6, 0.7, 0.95, 0.5, np.nan]})
    p = review.precision_by_class(t).set_index("class")
    assert p.loc["dog", "precision"] == pytest.approx(2 / 3) and p.loc["siren", "precision"] == 0.0
    assert p.loc["siren", "judged"] == 2
    c = review.precision_curve(t)
    dog = c[c["class"] == "dog"]
    assert dog["min_score"].tolist() == [0.9, 0.8, 0.6] and dog["precision"].tolist() == pytest.approx([1, 0.5, 2 / 3])


def test_widget_buttons_record_answers_through_the_model(det):
    """The widget as an operator uses it, without a browser: its buttons' click handlers, its fields."""
    w = review.open(det["dir"], "carol", sort="time")
    assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n" and w.audio.value[:4] == b"RIFF"
    assert "1 / 6" in w.info.value and w.progress.value == 0
    first = w.model.current()["event_id"]
    w.accept_button.click()
    second = w.model.current()["event_id"]
    w.reject_button.click()
    w.relabel_choice.value = "helicopter"
    w.relabel_button.click()
    w.onset.value, w.offset.value = 1.5, 4.5
    w.adjust_button.click()
    assert w.progress.value == 4 and "4 / 6 reviewed" in w.progress_label.value
    t = review.read_reviewed(det["dir"] / "reviewed.parquet").set_index("event_id")
    assert t.loc[first, "status"] == "accepted" and t.loc[second, "status"] == "rejected"
    assert (t["status"] == "relabelled").sum() == 1 and t.loc[t["status"] == "relabelled", "class"].iloc[0] == "helicopter"
    adj = t[t["status"] == "adjusted"].iloc[0]
    assert (adj["onset_s"], adj["offset_s"], adj["reviewer"]) == (1.5, 4.5, "carol")
    w.class_filter.value = "siren"
    assert set(w.model.queue["original_class"]) == {"siren"} and w.model.progress() == (2, 3)
    w.sort.value = "level"  # no levels table: said in the widget, order kept
    assert "events_levels.csv" in w.message.value and w.model.sort == "score"
    w.class_filter.value = "(all)"
    w.prev_button.click()
    assert w.model.current()["status"] != "pending"
    w.onset.value, w.offset.value = 5.0, 4.0
    w.adjust_button.click()
    assert "not saved" in w.message.value
    again = review.open(det["dir"], "dave")  # a restarted kernel
    assert again.model.progress() == (4, 6) and again.model.current()["status"] == "pending"


def test_shortcut_keys_answer_and_move_like_the_buttons(det):
    r = review.Review(det["dir"], "kim")  # by score: 0.95 siren, 0.88 dog, 0.70 siren, 0.61 heli, 0.52 dog, 0.45
    ids = r.queue["event_id"].tolist()
    assert r.press("a")["status"] == "accepted" and r.current()["event_id"] == ids[1]
    assert r.press("R")["status"] == "rejected"  # upper case too
    assert r.press("n")["event_id"] == ids[3] and r.press("p")["event_id"] == ids[2]
    assert r.press("b")["class"] == "background"
    with pytest.raises(InputError, match="choose a class"):
        r.press("l")
    row = r.press("l", relabel_to="dog")
    assert (row["status"], row["class"], row["original_class"]) == ("relabelled", "dog", "helicopter")
    with pytest.raises(InputError, match="a=accept, r=reject"):
        r.press("x")
    t = review.read_reviewed(det["dir"] / "reviewed.parquet").set_index("event_id")
    assert t.loc[ids, "status"].tolist() == ["accepted", "rejected", "relabelled", "relabelled", "pending", "pending"]
    assert t.loc[ids[2], "class"] == "background" and (t.loc[ids[:4], "reviewer"] == "kim").all()


def test_widget_key_box_acts_on_each_typed_letter_then_clears(det):
    w = review.open(det["dir"], "lee")
    ids = w.model.queue["event_id"].tolist()
    w.keys.value = "a"
    assert w.keys.value == "" and w.model.progress() == (1, 6) and "saved: accepted" in w.message.value
    w.keys.value = "nr"  # typed fast: both letters, in order (skip the 0.88 dog, reject the 0.70 siren)
    assert w.model.current()["event_id"] == ids[1]  # back at the first unanswered one
    w.relabel_choice.value = "siren"
    w.keys.value = "l"
    w.keys.value = "z"
    assert "not saved" in w.message.value and "not a shortcut" in w.message.value
    t = review.read_reviewed(det["dir"] / "reviewed.parquet").set_index("event_id")
    assert t.loc[ids[:3], "status"].tolist() == ["accepted", "relabelled", "rejected"]
    assert t.loc[ids[1], "class"] == "siren" and w.model.progress() == (3, 6)


def test_review_notebook_executes_and_shows_the_widget_and_precision(det, tmp_path):
    import jupytext
    import nbformat
    import papermill

    from clapnb.detect_book import NOTEBOOKS_DIR

    r = review.Review(det["dir"], "op")
    r.accept()
    r.reject()
    nb = jupytext.read(NOTEBOOKS_DIR / "06_review.md", fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    src = tmp_path / "06.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False,
                               parameters={"detect_dir": str(det["dir"]), "reviewer": "nb", "sort": "score"})
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    outputs = [o for c in out.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
    text = "".join(str(o.get("data", {}).get(k, "")) for o in outputs for k in ("text/markdown", "text/html"))
    assert "2 of 6 event(s) answered by op" in text and "Precision per detected class" in text


def test_review_command_round_trip_with_audacity(det, tmp_path, capsys):
    out = tmp_path / "aud"
    assert main(["review", "--detect", str(det["dir"]), "--reviewer", "cli", "--export", str(out)]) == 0
    text = (out / "rec_1.txt").read_text().splitlines()
    (out / "rec_1.txt").write_text("\n".join(text[:2]) + "\n")  # the last event of rec_1 deleted: a false alarm
    assert main(["review", "--detect", str(det["dir"]), "--reviewer", "cli", "--import", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "imported: accepted 5, rejected 1" in printed and "6 / 6 reviewed" in printed
    assert "sirens_alarms" not in printed and "siren: precision 67 % (2 of 3 answered detections)" in printed
    assert main(["review", "--detect", str(det["dir"] / "nope")]) == 2


def test_a_rerun_detection_keeps_the_answers_already_given(det):
    r = review.Review(det["dir"], "op", sort="time")
    gone = r.reject()["event_id"]  # rec_0 2..4
    kept = r.accept()["event_id"]  # rec_0 8..10
    ev = det["events"].copy()
    ev.loc[0, ["onset_s", "offset_s"]] = [2.5, 4.5]  # a new threshold moved the first event
    events.write_events(ev, det["dir"])
    again = review.Review(det["dir"], "op")
    t = again.table.set_index("event_id")
    assert len(t) == 7 and t.loc[gone, "status"] == "rejected" and t.loc[kept, "status"] == "accepted"
    assert again.progress() == (2, 7) and (t["status"] == "pending").sum() == 5
