"""Source shortcuts: bandwidth harmonisation and the source-identification diagnostic.

Synthetic: two sources that differ only in bandwidth (B is A's kind of audio stored at 16 kHz), with
class content (a tone per class, below B's band edge) independent of the source. The diagnostic must
find the source without harmonisation and lose it with harmonisation, while the class survives.
Real: ESC-50 (44.1 kHz) and UrbanSound8K (22.05 kHz) clips from ../shared, where harmonisation must
leave nothing above the cut in the decoded segments and be recorded in the provenance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from clapnb import audio, backbones, cli, datasets, embeddings, io, probe, report, segments, shortcuts, sweep
from clapnb.errors import InputError

from bookcheck import check_readable_book

from conftest import small_manifest

SR = 44100


def band_ratio(x: np.ndarray, sr: int, cut: float) -> float:
    """Power above ``cut`` over power below it (Hann-windowed FFT): an independent check of the filter."""
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return float(power[f > cut].sum() / power[f <= cut].sum())


# --- settings and rules --------------------------------------------------------------------------

def test_harmonise_settings_are_parsed_or_refused_with_the_option_named():
    assert shortcuts.canonical_harmonise(None) == "off"
    assert shortcuts.canonical_harmonise(" AUTO ") == "auto"
    assert shortcuts.canonical_harmonise("11025.0") == "11025"
    assert shortcuts.canonical_harmonise("8000Hz") == "8000"
    assert shortcuts.canonical_harmonise(10605.5) == "10605.5"
    for bad in ("0", "-5", "nan", "inf", "lots", ""):
        with pytest.raises(InputError, match="--harmonise-bandwidth"):
            shortcuts.canonical_harmonise(bad)
    assert shortcuts.parse_harmonise_list("off,auto") == ["off", "auto"]
    assert shortcuts.parse_harmonise_list("auto") == ["auto"]
    with pytest.raises(InputError, match="twice"):
        shortcuts.parse_harmonise_list("auto,off,auto")


def _noise(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(SR * seconds))


def test_band_edge_finds_a_resampler_cliff_but_not_a_natural_slope():
    white = _noise(3, 0)
    assert shortcuts.band_edge(white, SR) == SR / 2
    upsampled = soxr.resample(soxr.resample(white, SR, 16000, quality="VHQ"), 16000, SR, quality="VHQ")
    assert 7000 <= shortcuts.band_edge(upsampled, SR) <= 8000  # stored at 16 kHz: nothing above 8 kHz
    brown = np.cumsum(white)  # -6 dB per octave, over 40 dB down at the top, but no cliff
    brown -= brown.mean()
    assert shortcuts.band_edge(brown, SR) == SR / 2
    assert shortcuts.band_edge(np.zeros(SR), SR) == SR / 2  # silence has no edge


def _recordings(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"path": f"/d/{i}.wav", "sha256": f"{i:064x}", "source": s, "class": c,
                          "sample_rate": sr} for i, (s, c, sr) in enumerate(rows)])


def test_auto_takes_the_lowest_nyquist_or_the_lowest_per_source_median_edge():
    rec = _recordings([("A", "dogs", 44100), ("A", "dogs", 44100), ("A", "birds", 44100),
                       ("B", "dogs", 22050), ("B", "birds", 44100), ("C", None, 8000)])
    edges = pd.DataFrame({"path": rec["path"], "source": rec["source"],
                          "band_edge_hz": [22050, 900, 22050, 11025, 22050, 4000]})
    # medians: A 22050, B 16537.5; unclassed C does not count; lowest Nyquist 11025 (B's 22.05-kHz file)
    h = shortcuts.harmonisation(rec, "auto", edges)
    assert h["cutoff_hz"] == 11025.0
    assert h["limited_by"] == {"by": "sample rate", "sources": ["B"], "n_recordings": 1, "sample_rate": 22050}
    # a source upsampled as a whole: its median edge is below every Nyquist frequency
    edges2 = edges.assign(band_edge_hz=[22050, 900, 22050, 9000.7, 9500.2, 4000])
    h2 = shortcuts.harmonisation(rec, "auto", edges2)
    assert h2["cutoff_hz"] == math.floor(np.median([9000.7, 9500.2])) == 9250
    assert h2["limited_by"]["by"] == "measured band edge" and h2["limited_by"]["sources"] == ["B"]
    assert {r["source"]: r["band_edge_median_hz"] for r in h2["per_source"]} == {"A": 22050, "B": 9250.45}
    assert "lowest sample rate, 22050 Hz" in shortcuts.describe_harmonisation(h)
    off = shortcuts.harmonisation(rec, "off")
    assert off["cutoff_hz"] is None and off["lowest_nyquist_hz"] == 11025.0
    fixed = shortcuts.harmonisation(rec, "16000")
    assert fixed["cutoff_hz"] == 16000.0 and "not fully harmonised" in fixed["warning"]
    assert "warning" not in shortcuts.harmonisation(rec, "8000")


def test_lowpass_leaves_nothing_above_the_cutoff_and_keeps_the_band_below():
    x = _noise(2, 1).astype(np.float32)
    y = audio.lowpass(x, SR, 11025)
    assert y.shape == x.shape and y.dtype == np.float32
    assert band_ratio(y, SR, 11025) < 1e-9  # measured 1e-12
    spec_x, spec_y = (np.abs(np.fft.rfft(v * np.hanning(len(v)))) ** 2 for v in (x, y))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    keep = (f > 100) & (f < 0.9 * 11025)
    assert spec_y[keep].sum() / spec_x[keep].sum() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(InputError, match="positive"):
        audio.lowpass(x, SR, 0.0)


# --- baselines and per-source accuracy against hand computation -----------------------------------

def test_baselines_by_hand():
    b = shortcuts.baselines(["A", "A", "B", "B", "B"], ["x", "x", "x", "y", "y"], 2)
    # constant B: 3 of 5; knowing the class: x -> A (2 of 3), y -> B (2 of 2): 4 of 5
    assert b == {"chance": 0.5, "majority": 0.6, "class_prior": 0.8}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("AB"), st.sampled_from("xyz")), min_size=1, max_size=30))
def test_baselines_bounds(pairs):
    src, cls = zip(*pairs)
    b = shortcuts.baselines(src, cls, 2)
    # knowing the class can only help; no guess is worse than the most frequent source's share of 1/k
    assert 0.5 <= b["majority"] <= b["class_prior"] <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["dogs", "birds", "voices"]), st.sampled_from("ABC"), st.booleans()),
                min_size=1, max_size=40), st.integers(0, 3))
def test_balanced_rows_give_each_source_the_same_count_within_a_class(rows, seed):
    cls, src, keep = zip(*rows)
    seg = pd.DataFrame({"segment_id": [f"s{i:03d}" for i in range(len(rows))], "class": cls, "source": src})
    mask = np.array(keep)
    out = shortcuts.balanced_rows(seg, mask, seed, "test")
    assert not (out & ~mask).any()  # only rows of the mask
    picked = seg[out]
    for c, part in seg[mask].groupby("class"):
        counts, got = part["source"].value_counts(), picked.loc[picked["class"] == c, "source"].value_counts()
        if len(counts) < 2:
            assert got.empty  # a class with one source says nothing about telling sources apart
        else:
            assert set(got.index) == set(counts.index) and (got == counts.min()).all()
    assert np.array_equal(out, shortcuts.balanced_rows(seg, mask, seed, "test"))  # seeded


def test_accuracy_by_source_matches_a_plain_groupby():
    seg = pd.DataFrame({"segment_id": list("abcdef"), "source": ["A", "A", "B", "B", "B", "A"],
                        "group": ["g1", "g1", "g2", "g3", "g3", "g4"]})
    pred = pd.DataFrame({"segment_id": list("abcdef"), "split": ["test"] * 5 + ["validation"],
                         "true": ["dogs", "dogs", "birds", "birds", "dogs", "dogs"],
                         "pred": ["dogs", "birds", "birds", "birds", "birds", "dogs"]})
    t = shortcuts.accuracy_by_source(pred, seg).set_index(["split", "source"])
    assert t.loc[("test", "A"), "accuracy"] == 0.5 and t.loc[("test", "A"), "n"] == 2
    assert t.loc[("test", "B"), "accuracy"] == pytest.approx(2 / 3)
    assert t.loc[("validation", "A"), "accuracy"] == 1.0
    assert list(t.index.get_level_values("split")) == ["validation", "test", "test"]  # split order
    assert (t["ci_low"] <= t["accuracy"]).all() and (t["accuracy"] <= t["ci_high"]).all()


# --- source column, single-source flag -----------------------------------------------------------

def test_source_column_of_a_manifest_and_its_errors(tmp_path):
    clip = tmp_path / "a.wav"
    sf.write(clip, _noise(0.5, 2).astype(np.float32), SR)
    sf.write(tmp_path / "b.wav", _noise(0.5, 3).astype(np.float32), SR)
    man = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.wav", "b.wav"], "label": ["dog", "dog"],
                  "collection": ["mine", "freesound"]}).to_csv(man, index=False)
    rec, _ = datasets.load_recordings(str(man), source_column="collection")
    assert sorted(rec["source"]) == ["freesound", "mine"]
    rec_default, _ = datasets.load_recordings(str(man))
    assert set(rec_default["source"]) == {tmp_path.name}  # no source column: the manifest's folder
    with pytest.raises(InputError, match="lacks the column.*nope"):
        datasets.load_recordings(str(man), source_column="nope")
    pd.DataFrame({"path": ["a.wav", "b.wav"], "label": ["dog", "dog"],
                  "collection": ["mine", None]}).to_csv(man, index=False)
    with pytest.raises(InputError, match="empty 'collection'.*CSV lines 3"):
        datasets.load_recordings(str(man), source_column="collection")
    (tmp_path / "folder" / "dog").mkdir(parents=True)
    with pytest.raises(InputError, match="manifest CSVs only.*'folder'"):
        datasets.load_recordings(str(tmp_path / "folder"), source_column="collection")


def test_single_source_classes_are_flagged_in_the_recordings_summary():
    rec = pd.DataFrame({"path": [f"/d/{i}" for i in range(5)], "source": ["E", "E", "U", "U", "E"],
                        "class": ["dogs", "voices", "voices", "music", None], "duration_s": [5, 5, 2, 3, 1],
                        "approximate": False})
    assert shortcuts.single_source_classes(rec) == {"dogs": "E", "music": "U"}
    t = report.recordings_summary(rec)
    assert t.loc["Dogs", "single source"] == "E" and t.loc["Voices", "single source"] == ""
    assert t.loc["Voices", "seconds · U"] == 2 and t.loc["Voices", "recordings"] == 2
    assert shortcuts.single_source_classes(rec.assign(source="E")) == {}  # one source: nothing to flag
    assert "single source" not in report.recordings_summary(rec.assign(source="E"))


def test_captions_state_the_bandwidth():
    record = {"backbone": {"name": "mfcc", "fingerprint": "f" * 64, "lowpass_hz": 10685.0}, "random_weights": False}
    assert "low-pass at 10685 Hz" in report.describe_model(report.record_model(record))
    record["backbone"]["lowpass_hz"] = None
    assert "full bandwidth (no harmonisation)" in report.describe_model(report.record_model(record))


# --- real audio: ESC-50 (44.1 kHz) + UrbanSound8K (22.05 kHz) --------------------------------------

@pytest.fixture(scope="module")
def mixed_manifest(envsounds, envsounds_meta, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "mixed.csv"
    small_manifest(envsounds_meta, envsounds, 4, ["dog", "crying_baby", "children_playing"]).to_csv(path, index=False)
    return path


def test_real_harmonisation_removes_the_band_above_the_cut_and_is_recorded(mixed_manifest, tmp_path, capsys):
    out = tmp_path / "harmonised"
    args = ["segments", "--data", str(mixed_manifest), "--label-column", "original_label", "--length", "2",
            "--counts", "2,1,1,1", "--out"]
    assert cli.main(args + [str(out), "--harmonise-bandwidth", "auto"]) == 0
    assert "bandwidth harmonised: low-pass at" in capsys.readouterr().out
    info = io.read_json(out / "dataset.json")
    h = info["harmonisation"]
    cut = h["cutoff_hz"]
    # UrbanSound8K's 22.05-kHz clips: nothing above 11025 Hz, their resampler's edge a little lower
    assert 10000 <= cut <= 11025 and h["limited_by"]["sources"] == ["UrbanSound8K"]
    assert info["lowpass_hz"] == cut and info["parameters"]["harmonise_bandwidth"] == "auto"
    seg = segments.read_segments(out / "segments.parquet")
    assert (seg["lowpass_hz"] == cut).all() and set(seg["source"]) == {"ESC-50", "UrbanSound8K"}

    assert cli.main(args + [str(tmp_path / "full")]) == 0
    full = segments.read_segments(tmp_path / "full" / "segments.parquet")
    assert full["lowpass_hz"].isna().all() and io.read_json(tmp_path / "full" / "dataset.json")["lowpass_hz"] is None

    def ratios(table):
        waves = dict(embeddings.iter_segment_audio(table))
        return {row["segment_id"]: band_ratio(waves[i], SR, cut) for i, row in enumerate(table.to_dict("records"))
                if np.sqrt(np.mean(waves[i] ** 2)) > 1e-4 and row["source"] == "ESC-50"}  # skip digital silence

    harmonised, original = ratios(seg), ratios(full)
    assert harmonised and max(harmonised.values()) < 1e-8  # measured <= 5e-14
    assert max(original.values()) > 1e-4  # the same ESC-50 segments unfiltered: measured up to 1e-2


def test_harmonise_option_errors_before_reading_anything(mixed_manifest, tmp_path, capsys):
    out = tmp_path / "x"
    assert cli.main(["segments", "--data", str(mixed_manifest), "--length", "2", "--out", str(out),
                     "--harmonise-bandwidth", "treble"]) == 2
    assert "--harmonise-bandwidth 'treble'" in capsys.readouterr().err
    assert not out.exists()


def test_the_low_pass_is_part_of_the_embedding_cache_key(mixed_manifest, tmp_path):
    rec, _ = datasets.load_recordings(str(mixed_manifest), label_column="original_label")
    rec = rec[rec["label"].isin(["dog", "children_playing"])]
    seg = segments.build_segments(rec, 2.0, counts=(1, 1, 1, 1), seed=0, lowpass_hz=4000.0)
    mfcc = backbones.load_backbone("mfcc")
    low = embeddings.compute_embeddings(seg, mfcc, cache_dir=tmp_path, progress=False)
    full = embeddings.compute_embeddings(seg.assign(lowpass_hz=np.nan), mfcc, cache_dir=tmp_path, progress=False)
    assert low.meta["backbone"]["lowpass_hz"] == 4000.0 and full.meta["backbone"]["lowpass_hz"] is None
    assert low.meta["cache_namespace"] != full.meta["cache_namespace"] and low.meta["n_computed"] == len(seg)
    assert not np.allclose(low.X, full.X)
    # the column and an explicit, equal low-pass are one setting: all from the cache
    again = embeddings.compute_embeddings(seg, mfcc, cache_dir=tmp_path, progress=False, lowpass_hz=4000.0)
    assert again.meta["n_computed"] == 0 and np.array_equal(again.X, low.X)
    # the recipe: low-pass the whole recording, then cut
    row = seg.iloc[0]
    expected = audio.cut(audio.lowpass(audio.load(row["path"]), SR, 4000.0), SR, row["start_s"], row["end_s"])
    assert np.array_equal(mfcc.embed_audio([expected])[0], low.X[0])
    with pytest.raises(InputError, match="harmonised at 4000 Hz"):
        embeddings.compute_embeddings(seg, mfcc, cache_dir=tmp_path, progress=False, lowpass_hz=8000.0)
    with pytest.raises(InputError, match="mixes low-pass frequencies"):
        segments.table_lowpass(seg.assign(lowpass_hz=[4000.0] + [8000.0] * (len(seg) - 1)))


# --- synthetic: sources that differ only in bandwidth ----------------------------------------------

TONES = {"dog": 600.0, "airplane": 1500.0, "church_bells": 3500.0}  # one class each, all below 7.5 kHz
#: 108 train segments make few optimiser steps per epoch: a larger step than the default 1e-3 lets
#: early stopping see the probe learn (the same setting for the class and the source probe).
PROBE = probe.ProbeConfig(lr=1e-2)


def synthetic_sources(root: Path, n_per: int = 16, seconds: float = 2.0, seed: int = 0) -> Path:
    """White noise + a class tone; source A stored at 44.1 kHz, source B the same audio at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    rows = []
    for label, hz in TONES.items():
        for source, sr in (("A", SR), ("B", 16000)):
            for k in range(n_per):
                x = rng.normal(0, 0.1, len(t)) + 0.15 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
                x *= 10 ** rng.uniform(-0.5, 0.5)
                if sr != SR:
                    x = soxr.resample(x, SR, sr, quality="VHQ")
                path = root / source / label / f"{k}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, x.astype(np.float32), sr, subtype="FLOAT")
                rows.append({"path": str(path), "label": label, "collection": source})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def diagnose(recordings: pd.DataFrame, spec: str, run_dir: Path, cache: Path) -> dict:
    h = shortcuts.harmonisation(recordings, spec, progress=False)
    seg = segments.build_segments(recordings, 1.0, counts=(36, 12, 12, 12), seed=0, lowpass_hz=h["cutoff_hz"])
    segments.write_segments(seg, run_dir, {"harmonisation": h})
    embeddings.embed_run(run_dir, backbones.load_backbone("mfcc"), cache_dir=cache, progress=False)
    probe.run_probe(run_dir, PROBE)
    return shortcuts.run_shortcuts(run_dir)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    rec, _ = datasets.load_recordings(str(synthetic_sources(root)), source_column="collection")
    return root, rec, {spec: diagnose(rec, spec, root / spec, root / "cache") for spec in ("off", "auto")}


def _mean(record: dict, key: str, block: str = "source_id") -> float:
    return float(np.mean([record[block][s][key] for s in ("validation", "test")]))


@pytest.mark.slow
def test_diagnostic_finds_a_bandwidth_shortcut_and_harmonisation_removes_it(synthetic):
    root, rec, result = synthetic
    off, auto = result["off"], result["auto"]
    assert off["applicable"] and off["sources"] == ["A", "B"] and off["lowpass_hz"] is None
    assert off["single_source_classes"] == {} and off["mixed_classes"] == ["airplane", "bells", "dogs"]
    within = off["source_id_within_classes"]["test"]
    assert within["chance"] == 0.5 and within["classes"] == ["airplane", "bells", "dogs"]
    # B (16 kHz) has nothing above ~7.6 kHz: auto cuts there, measured on B's recordings
    assert 7000 <= auto["lowpass_hz"] < 8000
    assert io.read_json(root / "auto" / "dataset.json")["harmonisation"]["limited_by"]["sources"] == ["B"]
    # without harmonisation the source is obvious (measured over data seeds 0-2: balanced 0.955-0.961,
    # within classes 0.946-0.977) ...
    assert _mean(off, "balanced_accuracy") >= 0.85
    assert _mean(off, "accuracy") > _mean(off, "class_prior") + 0.2
    assert _mean(off, "accuracy", "source_id_within_classes") >= 0.85
    # ... with it, it is guesswork (measured: balanced 0.545-0.556, within classes 0.477-0.622), while
    # the class survives (measured class accuracy 0.917-1.0 with and without)
    assert _mean(auto, "balanced_accuracy") <= 0.70
    assert _mean(auto, "accuracy", "source_id_within_classes") <= 0.70
    assert _mean(off, "balanced_accuracy") - _mean(auto, "balanced_accuracy") >= 0.25
    for record in (off, auto):
        assert np.mean([record["class_accuracy"][s] for s in ("validation", "test")]) >= 0.85
    assert np.mean([auto["class_accuracy"][s] for s in ("validation", "test")]) >= \
        np.mean([off["class_accuracy"][s] for s in ("validation", "test")]) - 0.1
    # the class accuracy per source is the probe's own predictions, split by source
    preds = pd.read_parquet(root / "auto" / "probe_predictions.parquet").merge(
        segments.read_segments(root / "auto" / "segments.parquet")[["segment_id", "source"]], on="segment_id")
    test = preds[preds["split"] == "test"]
    for source, m in auto["class_accuracy_by_source"]["probe"]["test"].items():
        assert m["accuracy"] == pytest.approx(test.loc[test["source"] == source, "correct"].mean())
    written = io.read_json(root / "auto" / shortcuts.SHORTCUTS_JSON)
    assert written["source_id"]["test"]["accuracy"] == auto["source_id"]["test"]["accuracy"]
    assert "A" in shortcuts.by_source_table(auto).to_string() and len(shortcuts.source_id_table(auto)) == 2
    assert "above the better baseline" in shortcuts.summary_sentence(off)


def test_a_single_source_is_skipped_with_a_reason(tmp_path):
    rec, _ = datasets.load_recordings(str(synthetic_sources(tmp_path / "data", n_per=4)), source_column="collection")
    one = rec[rec["source"] == "A"]
    assert shortcuts.single_source_classes(one) == {}  # nothing pooled, nothing to flag
    seg = segments.build_segments(one, 1.0, counts=(4, 2, 2, 2), seed=0)
    segments.write_segments(seg, tmp_path, {})
    embeddings.embed_run(tmp_path, backbones.load_backbone("mfcc"), cache_dir=tmp_path / "cache", progress=False)
    record = shortcuts.run_shortcuts(tmp_path)
    assert record["applicable"] is False and "one source (A)" in record["reason"]
    assert io.read_json(tmp_path / shortcuts.SHORTCUTS_JSON)["applicable"] is False
    assert shortcuts.summary_sentence(record).startswith("Shortcut check skipped: every segment comes from one source")


# --- the sweep: with and without harmonisation, side by side in the book --------------------------

@pytest.mark.slow
def test_sweep_compares_bandwidth_settings_and_the_book_shows_both(mixed_manifest, tmp_path, monkeypatch, capsys):
    from bs4 import BeautifulSoup

    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["sweep", "--data", str(mixed_manifest), "--label-column", "original_label", "--counts", "4,2,2,2",
            "--lengths", "2", "--backbone", "mfcc", "--out", str(run)]
    assert cli.main(args + ["--harmonise-bandwidth", "off,auto"]) == 0
    variant = sweep.variant_dir(run, "auto")
    assert sweep.variant_runs(run) == [variant]
    assert io.read_json(run / "bandwidth.json")["cutoff_hz"] is None
    cut = io.read_json(variant / "bandwidth.json")["cutoff_hz"]
    assert 10000 <= cut <= 11025
    for folder, expected in ((run, None), (variant, cut)):
        row = io.read_json(folder / "results.json")["rows"][0]
        assert row["lowpass_hz"] == expected and row["source_id_applicable"] is True
        sc = io.read_json(sweep.length_dir(folder, 2) / shortcuts.SHORTCUTS_JSON)
        assert row["source_id_test_accuracy"] == sc["source_id"]["test"]["accuracy"]
    assert segments.read_segments(sweep.length_dir(variant, 2) / "segments.parquet")["lowpass_hz"].eq(cut).all()
    # a run folder keeps its bandwidth setting
    assert cli.main(args + ["--harmonise-bandwidth", "auto"]) == 2
    assert "harmonise_bandwidth: 'off' -> 'auto'" in capsys.readouterr().err

    assert cli.main(["book", "--run", str(run)]) == 0
    site = Path(capsys.readouterr().out.strip().splitlines()[-1]).parent
    page = BeautifulSoup((site / "book" / "results.html").read_text(encoding="utf-8"), "html.parser")
    captions = {c.get_text(" ", strip=True): c.find_parent("table") for c in page.select("table caption")}
    both = next(t for c, t in captions.items() if "Class accuracy with and without" in c)
    head = [th.get_text(strip=True) for th in both.select("thead th")]
    assert "Probe test, full bandwidth" in head and f"Probe test, harmonised {cut:g} Hz (auto)" in head
    checks = next(t for c, t in captions.items() if "Source shortcut check" in c)
    body = [[td.get_text(strip=True) for td in tr.select("td")] for tr in checks.select("tbody tr")]
    assert [r[1] for r in body] == ["full bandwidth", f"harmonised {cut:g} Hz (auto)"]
    assert all("mfcc" in c for c in captions)
    assert any("full bandwidth (no harmonisation)" in c for c in captions)  # Tables 2 and 3 of the main run
    confusion = BeautifulSoup((site / "run" / "L02" / "04_confusion.html").read_text(encoding="utf-8"), "html.parser")
    assert "Source shortcut check" in confusion.get_text()
    assert any(c.get_text().startswith("Source identification beside class accuracy")
               for c in confusion.select("table caption"))
    # an MFCC run: zero-shot does not apply, said once per page, and no random-weights banner
    assert io.read_json(sweep.length_dir(run, 2) / shortcuts.LengthFolder(".").zeroshot.name)["applicable"] is False
    assert not page.select("div.admonition.danger") and "not applicable" in page.get_text()
    t2 = [c.find_parent("table") for c in page.select("table caption") if "Table 2" in c.get_text()][0]
    assert {td.get_text(strip=True) for td in t2.select("tbody td")[1:2]} == {"n/a"}
    check_readable_book(site, max_mb=8, zero_shot=False, names=[])  # one note, no empty zero-shot pages
    dataset = BeautifulSoup((site / "run" / "01_dataset.html").read_text(encoding="utf-8"), "html.parser")
    text = dataset.get_text(" ")
    assert "Classes from a single source" in text and "Bandwidth per source" in text
