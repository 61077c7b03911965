"""End to end: a tiny sweep through the papermill notebooks, then the book with warnings as errors.

Three labels x five real clips from ../shared, the random-weights stand-in, 4/2/2/2 segments per
class, lengths 1, 3, 4 and 10 (the shortest, padded; the broken one; the paper's headline length; the
longest, centre-cropped to CLAP's 7 s). One length is deliberately broken (its segments file is corrupt):
it must be reported while the others complete, and the rerun must redo only that length.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from bs4 import BeautifulSoup

import papermill

from clapnb import cli, config, io, report, segments, standin, store, sweep, views

from bookcheck import check_readable_book
from conftest import small_manifest
from test_review_book import reviewed_round

LABELS = ["church_bells", "dog", "gun_shot"]  # gun_shot clips are 1-2 s: padding and augmentation
NAMES = ["Bells", "Dogs", "Thunder, fireworks and gunshot"]  # their classes, as the paper names them
#: The stand-in sweep's lengths: four of the paper's ten keep both sides of CLAP's 7-s input (pad and crop)
#: at 40 % of the embedding time (the table code over all ten lengths: tests/test_report.py).
LENGTHS = [1, 3, 4, 10]


@pytest.fixture(scope="module")
def manifest(envsounds, envsounds_meta, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    small_manifest(envsounds_meta, envsounds, 5, LABELS).to_csv(path, index=False)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path_factory.getbasetemp() / "embedding-cache"))


def sweep_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--data", str(manifest), "--label-column", "original_label", "--counts", "4,2,2,2",
            "--out", str(out), *extra]


def html(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def table_rows(soup: BeautifulSoup, caption: str) -> pd.DataFrame:
    for table in soup.select("table"):
        cap = table.find("caption")
        if cap and caption in cap.get_text(" ", strip=True):
            head = [th.get_text(strip=True) for th in table.select("thead th")]
            body = [[td.get_text(strip=True) for td in tr.select("td")] for tr in table.select("tbody tr")]
            return pd.DataFrame(body, columns=head)
    raise AssertionError(f"no table captioned {caption!r}")


def error_outputs(notebook: Path) -> list[str]:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return [f"{o['ename']}: {o['evalue']}" for c in nb["cells"] for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


@pytest.mark.slow
def test_standin_sweep_reports_a_broken_length_resumes_and_builds_the_book(manifest, standin_dir, tmp_path, capfd):
    # capfd, not capsys: with -j 2 the progress lines come from the worker processes
    run = store.RunFolder(tmp_path / "standin")
    weights = standin.describe(standin_dir)["checkpoint"]
    broken = run.length(3)
    broken.segments.mkdir(parents=True)  # a folder where the segments file goes: that length's stage fails

    args = sweep_args(manifest, run.root, "--lengths", ",".join(map(str, LENGTHS)), "--backbone", "msclap-2023",
                      "--weights", weights, "-j", "2")
    assert cli.main(args) == 1
    err = capfd.readouterr().err
    assert " 3 s  failed" in err and "3 of 4 lengths complete; 1 failed" in err
    assert sweep.RANDOM_WEIGHTS_SUMMARY in err  # the final summary of a random-weights run says so
    summary = next(line for line in err.splitlines() if "lengths complete" in line)
    assert "RANDOM WEIGHTS" in summary and "RANDOM WEIGHTS" in err.split(" 4 s  done")[1].splitlines()[0], \
        "the summary lines say what the numbers are"
    assert "L04 embeddings: built" in err and "L04 probe: epoch " in err, "step-level progress lines"
    assert "without encryption" not in err
    failed = io.read_json(broken.failed)
    assert failed["stage"] == "segments" and "IsADirectoryError" in failed["error"]
    assert not broken.done.exists()
    results = io.read_json(run.results_json)
    assert sorted(r["length_s"] for r in results["rows"]) == [n for n in LENGTHS if n != 3]
    assert [f["length_s"] for f in results["failed"]] == [3]
    assert results["random_weights"] is True
    done_before = {n: run.length(n).done.stat().st_mtime_ns for n in (1, 10)}

    broken.segments.rmdir()
    assert cli.main(args) == 0
    err = capfd.readouterr().err
    assert "L03 segments: built" in err and "L04 segments" not in err, "only the broken length is built"
    assert {n: run.length(n).done.stat().st_mtime_ns for n in (1, 10)} == done_before
    assert not broken.failed.exists()
    rows = pd.read_csv(run.results_csv)
    assert rows["length_s"].tolist() == LENGTHS
    assert rows["random_weights"].all() and (rows["backbone"] == "msclap-2023").all()
    assert rows["zeroshot_applicable"].all()
    for col in ("zeroshot_accuracy", "zeroshot_loss_paper", "zeroshot_loss_calibrated",
                "probe_validation_accuracy", "probe_test_accuracy", "probe_test_loss"):
        assert rows[col].notna().all(), col
    assert (rows["zeroshot_ci_low"] <= rows["zeroshot_accuracy"]).all()
    assert (rows["zeroshot_accuracy"] <= rows["zeroshot_ci_high"]).all()
    assert rows["data_fingerprint"].nunique() == 1 and rows["weights_fingerprint"].nunique() == 1
    # the row of a length is what its own zeroshot.json and probe.json say
    zs4 = io.read_json(run.length(4).zeroshot)["metrics"]["validation"]
    pr4 = io.read_json(run.length(4).probe)["metrics"]["test"]
    r4 = rows.set_index("length_s").loc[4]
    assert r4["zeroshot_accuracy"] == pytest.approx(zs4["accuracy"])
    assert r4["zeroshot_loss_paper"] == pytest.approx(zs4["loss_paper_style"])
    assert r4["probe_test_accuracy"] == pytest.approx(pr4["accuracy"])

    # (b) a view executed again with another seed reads the run; it changes nothing the run recorded
    recorded = {p: p.read_bytes() for p in [run.config_file, *run.root.glob("L04/stages/*.json"),
                                            run.length(4).probe]}
    view = tmp_path / "zs-seed5.ipynb"
    papermill.execute_notebook(str(run.length(4).notebook("02_zero_shot.ipynb")), str(view),
                               parameters={"run_dir": str(run.root), "length_s": 4, "seed": 5}, kernel_name="python3", progress_bar=False)
    assert {p: p.read_bytes() for p in recorded} == recorded
    assert not error_outputs(view)
    with pytest.raises(papermill.PapermillExecutionError, match="clapnb sweep"):  # no run: how to make one
        papermill.execute_notebook(str(view), str(tmp_path / "none.ipynb"), kernel_name="python3",
                                   parameters={"run_dir": str(tmp_path / "nothing")}, progress_bar=False)

    capfd.readouterr()
    assert cli.main(["book", "--run", str(run.root)]) == 0
    index = Path(capfd.readouterr().out.strip().splitlines()[-1])
    assert index.is_file() and index.name == "index.html"
    site = index.parent

    page = html(site / "book" / "results.html")
    assert page.select("div.admonition.danger"), "random-weights banner on the results page"
    t2 = table_rows(page, "Table 2")
    assert len(t2) == len(LENGTHS)
    ours = [float(v.rstrip(" %")) for v in t2["Accuracy (ours)"]]
    assert ours == sorted(ours, reverse=True)
    paper = {f"{n} s": f"{100 * a:.2f} %" for n, a in zip(report.PAPER_TABLE2["length_s"], report.PAPER_TABLE2["accuracy"])
             if n in LENGTHS}
    assert dict(zip(t2["Audio length"], t2["Accuracy (paper)"])) == paper
    t3 = table_rows(page, "Table 3")
    assert len(t3) == len(LENGTHS)
    assert t3.set_index("Audio length").loc["4 s", "Accuracy (paper)"] == "91.83 %"
    captions = [c.get_text(" ", strip=True) for c in page.select("table caption")]
    assert all("msclap-2023" in c and "CLAP_weights_2023_random.pth" in c for c in captions)
    assert page.select("img[src*='accuracy_vs_length']")

    for n in LENGTHS:
        for nb in ("02_zero_shot", "03_linear_probe", "04_confusion"):
            p = html(site / "run" / f"L{n:02d}" / f"{nb}.html")
            assert p.select("div.admonition.danger"), f"banner on L{n:02d}/{nb}"
            for cap in p.select("table caption"):
                assert "msclap-2023" in cap.get_text() and "RANDOM WEIGHTS" in cap.get_text()
            if nb == "03_linear_probe":  # what one split can resolve, the paper's 2100 segments and this run's
                text = p.get_text(" ")
                assert "With 2100 validation segments" in text and "0.97 points" in text, f"L{n:02d}/{nb}"
    dataset = html(site / "run" / "01_dataset.html")
    assert len(dataset.select("audio")) == len(LABELS), "one player per class on the dataset page"
    # what a new user hit: double table numbers, warnings, slugs, glued cells, a 50-MB book
    check_readable_book(site, max_mb=8, zero_shot=True, names=NAMES)


@pytest.mark.slow
def test_sweep_into_a_folder_with_other_counts_is_refused_or_rebuilt(manifest, tmp_path, capsys, monkeypatch):
    """(a) of issue 9: L04 built with 4,2,2,2, then asked for 2,2,2,2 (mfcc: no model to load)."""
    run = store.RunFolder(tmp_path / "run")
    base = ["sweep", "--data", str(manifest), "--label-column", "original_label", "--backbone", "mfcc",
            "--lengths", "4", "--out", str(run.root)]
    assert cli.main(base + ["--counts", "4,2,2,2"]) == 0
    before = io.read_json(run.length(4).dataset)["n_segments"]
    capsys.readouterr()
    assert cli.main(base + ["--counts", "2,2,2,2"]) == 2
    assert "counts: '4,2,2,2' -> '2,2,2,2'" in capsys.readouterr().err
    # the stage record catches it even when the folder's config says otherwise (e.g. edited by hand)
    run.write_config(config.StudyConfig(**{**config.read_run_config(run).parameters(), "counts": "2,2,2,2"}))
    assert cli.main(base + ["--counts", "2,2,2,2"]) == 0
    err = capsys.readouterr().err
    assert "L04 segments: rebuilding (counts: '4,2,2,2' -> '2,2,2,2')" in err
    assert "L04 embeddings: rebuilding (its input(s) segments were rebuilt)" in err
    after = io.read_json(run.length(4).dataset)
    assert after["parameters"]["counts"] == "2,2,2,2" and after["n_segments"] < before
    rec = io.read_json(run.length(4).stage_record("segments"))
    assert rec["params"]["counts"] == "2,2,2,2"
    n_train = int((segments.read_segments(run.length(4).segments)["split"] == "train").sum())
    assert io.read_json(run.length(4).probe)["n_per_split"]["train"] == n_train
    # a run made by older code: its rows gain the columns this code reads from the stage outputs, and a
    # changed notebook source re-renders the views without rebuilding a stage
    done = io.read_json(run.length(4).done)
    io.atomic_write_json(run.length(4).done, {**done, "row": {k: v for k, v in done["row"].items()
                                                              if k != "zeroshot_method"}})
    notebooks = tmp_path / "notebooks"
    shutil.copytree(views.notebooks_dir(), notebooks)
    with (notebooks / "04_confusion.md").open("a", encoding="utf-8") as f:
        f.write("\nA sentence added to the source after the run was rendered.\n")
    monkeypatch.setenv("CLAPNB_NOTEBOOKS", str(notebooks))
    capsys.readouterr()
    assert cli.main(base + ["--counts", "2,2,2,2"]) == 0
    err = capsys.readouterr().err
    assert "L04 views: rendered" in err and ": rebuilding" not in err and ": building" not in err
    assert "A sentence added" in run.length(4).notebook("04_confusion.ipynb").read_text(encoding="utf-8")
    assert pd.read_csv(run.results_csv)["zeroshot_method"].tolist() == ["none"]
    monkeypatch.delenv("CLAPNB_NOTEBOOKS")
    # the book of a backbone without text: one zero-shot note, no empty per-length pages (and the other fixes),
    # with a Review page of two review rounds (reviewed tables by hand)
    r1 = reviewed_round(tmp_path, "det1", [("dogs", .9), ("dogs", .6), ("sirens_alarms", .5)], ["accept", "reject", "accept"])
    r2 = reviewed_round(tmp_path, "det2", [("dogs", .8), ("sirens_alarms", .7)], ["accept", "reject"])
    capsys.readouterr()
    assert cli.main(["book", "--run", str(run.root), "--review", str(r1), "--review", str(r2)]) == 0
    site = Path(capsys.readouterr().out.strip().splitlines()[-1]).parent
    check_readable_book(site, max_mb=6, zero_shot=False, names=NAMES)
    page = html(site / "book" / "review.html")
    t = table_rows(page, "Precision of the judged detections per class").set_index("Class")
    assert t.loc["Dogs", "round 1: precision"] == "50 % (1)" and t.loc["Dogs", "Change"] == "+50 points"
    assert t.loc["Sirens and alarms", "Change"] == "-100 points" and page.select("img[src*='review_precision']")


def test_executor_with_two_processes_builds_what_one_process_builds(manifest, tmp_path):
    from clapnb import executor, stages

    cfg = config.StudyConfig(data=str(manifest), label_column="original_label", counts="4,2,2,2",
                             backbone="mfcc", lengths="2,4").resolved()
    out = {}
    for jobs in (1, 2):
        run = store.RunFolder(tmp_path / f"j{jobs}")
        upstream = stages.build_run(run, cfg, log=lambda s: None)
        with executor.make_executor(jobs) as ex:
            built = {n: f.result() for (_, _, n, _, _), f in ex.map_unordered(
                stages.build_length_job, [(str(run.root), cfg.parameters(), n, upstream, False) for n in (2, 4)])}
        assert all(b.ok for b in built.values()), built
        out[jobs] = {n: (b.fingerprints["segments"], io.read_json(run.length(n).probe)["metrics"],
                         io.read_json(run.length(n).shortcuts).get("source_id"))
                     for n, b in built.items()}
    assert out[1] == out[2]
    # a second build finds every stage current
    again = stages.build_length(store.RunFolder(tmp_path / "j1"), cfg, 4, upstream, log=lambda s: None)
    assert set(again.statuses.values()) == {"current"}


def test_reproduce_offline_without_weights_stops_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CLAPNB_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "reproduce"
    assert cli.main(["reproduce", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "CLAP_weights_2023.pth" in err and "--weights" in err and "gpt2" in err
    assert not out.exists(), "nothing may start before the weights are known to be there"


def test_sweep_refuses_bad_parameters_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["sweep", "--data", str(tmp_path), "--lengths", "10-1", "--backbone", "mfcc",
                     "--out", str(out)]) == 2
    assert "--lengths '10-1'" in capsys.readouterr().err
    assert cli.main(["sweep", "--data", str(tmp_path), "--backbone", "nope", "--out", str(out)]) == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    assert not out.exists()


def test_background_is_out_of_the_headline_and_reported_apart(manifest, tmp_path):
    """Issue 12: a sweep with --background (mfcc, 8,2,2,2, one length). The results row's accuracy is
    over event segments only, recomputed here from probe_predictions.parquet; background is reported
    apart (recall, false events) and never reaches a class table, the shortcut check or Table 3."""
    import numpy as np
    import soundfile as sf

    from clapnb import compare, metrics, scene, stages
    from clapnb.taxonomy import BACKGROUND

    bg = tmp_path / "site"
    bg.mkdir()
    for k, db in enumerate(np.linspace(-50, -30, 6)):  # the "site": pink noise at several levels
        sf.write(bg / f"site_{k}.wav", scene.noise(44100 * 6, "pink", float(db), 100 + k), 44100)
    cfg = config.StudyConfig(data=str(manifest), label_column="original_label", counts="8,2,2,2", backbone="mfcc",
                             lengths="2", background=str(bg), probe_max_epochs=20)
    outcome = sweep.run_sweep(cfg, tmp_path / "run", log=lambda s: None, views=False)
    assert outcome.ok
    run = store.RunFolder(tmp_path / "run")
    lf = run.length(2)
    rows, _, _ = run.read_results()
    row = rows.iloc[0]
    preds = pd.read_parquet(lf.probe_predictions)
    seg = pd.read_parquet(lf.segments).set_index("segment_id")
    assert (preds["true"] == BACKGROUND).sum() == (seg["class"] == BACKGROUND).sum() == 8 + 2 + 2 + 2
    for split in ("validation", "test"):
        p = preds[preds["split"] == split]
        ev, bgp = p[p["true"] != BACKGROUND], p[p["true"] == BACKGROUND]
        # the headline: event segments only, with the same bootstrap over recordings as before
        assert row[f"probe_{split}_n"] == len(ev) == 3 * 2
        assert row[f"probe_{split}_accuracy"] == pytest.approx((ev["true"] == ev["pred"]).mean())
        ci = metrics.bootstrap_accuracy_ci(ev["true"], ev["pred"], groups=seg.loc[ev["segment_id"], "group"], seed=cfg.seed)
        assert (row[f"probe_{split}_ci_low"], row[f"probe_{split}_ci_high"]) == pytest.approx((ci.low, ci.high))
        # background apart: recall and false events (background taken for an event class)
        assert row[f"background_{split}_n"] == len(bgp) == 2
        assert row[f"background_{split}_recall"] == pytest.approx((bgp["pred"] == BACKGROUND).mean())
        assert row[f"background_{split}_false_events"] == (bgp["pred"] != BACKGROUND).sum()
        assert row[f"background_{split}_events_called_background"] == (ev["pred"] == BACKGROUND).sum()
    assert row["n_classes"] == 3 and bool(row["background"])
    assert (row["zeroshot_method"], row["zeroshot_label"], row["backbone_notice"]) == \
        ("none", "none (no text encoder or own labels)", "")
    # no background row or segment in the 21-class tables
    classes = report.present_classes(seg)
    assert BACKGROUND not in classes
    for t in (report.per_class_accuracy(preds, "test").set_index("class"), report.confusion(preds, "test"),
              report.per_class_comparison({"probe": preds}, "test", list(seg["class"].unique())),
              report.most_confused_table({"probe": preds}, "test", classes).set_index("true")):
        assert BACKGROUND not in t.index
    assert report.per_class_accuracy(preds, "test")["n"].sum() == 6
    sc = io.read_json(lf.shortcuts)
    assert sc["n_background_excluded"] == 14 and BACKGROUND not in sc["segments_per_source"]
    page = report.results_page(rows)
    t3 = page[page.index(":::{table} Table 3"):]
    t3 = t3[:t3.index("\n:::")]
    assert f"{100 * row['probe_validation_accuracy']:.2f} %" in t3 and "event segments only" in t3
    assert ":name: table-background" in page and "false events" in page
    # a run made before this rule (no background_rule in its records) rebuilds these stages once
    assert {s: io.read_json(lf.stage_record(s))["params"].get("background_rule") for s in ("zeroshot", "probe", "shortcuts")} \
        == dict.fromkeys(("zeroshot", "probe", "shortcuts"), stages.BACKGROUND_RULE[1])
    table = compare.comparison([run.root, run.root])
    assert set(table["classes"]) == {3} and table["background"].all()
