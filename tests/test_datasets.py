"""Recordings tables from every kind of source, built from real shared clips and deliberately bad files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import small_manifest

from clapnb import datasets, taxonomy
from clapnb.audio import AudioError
from clapnb.errors import ClapnbError, InputError

LABELS = ["dog", "engine", "gun_shot", "jackhammer", "engine_idling"]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def subset(envsounds, envsounds_meta) -> pd.DataFrame:
    """Three clips of five labels: ESC-50 at 44.1 kHz and UrbanSound8K at 22.05 kHz, sub-second ones too."""
    meta = envsounds_meta[envsounds_meta["original_label"].isin(LABELS)]
    shortest = meta.sort_values(["duration_s", "path"]).groupby("original_label").head(3)
    return small_manifest(shortest, envsounds, 3)


def test_manifest_table_matches_the_metadata(tmp_path, subset):
    manifest = tmp_path / "m.csv"
    rel = subset.assign(path=[os.path.relpath(p, tmp_path) for p in subset["path"]])
    rel.to_csv(manifest, index=False)
    table, report = datasets.load_recordings(str(manifest), label_column="original_label")

    assert list(table.columns) == datasets.COLUMNS
    assert table["path"].tolist() == sorted(subset["path"])
    assert report["excluded"] == [] and report["n_recordings"] == len(subset) == 15
    meta = subset.set_index("path").loc[table["path"]]
    assert table["group"].tolist() == [f"freesound:{i}" for i in meta["freesound_id"]]
    assert table["fold"].dtype == "Int64" and table["fold"].tolist() == meta["fold"].tolist()
    np.testing.assert_allclose(table["duration_s"], meta["duration_s"], atol=1e-3)
    assert table["sample_rate"].tolist() == meta["sample_rate"].tolist()
    assert set(table["sample_rate"]) == {22050, 44100} and table["duration_s"].min() < 0.5
    assert table["sha256"].tolist() == [_sha(p) for p in table["path"]]
    assert table["source"].tolist() == meta["source_dataset"].tolist()
    assert table["license"].tolist() == meta["license"].tolist()
    assert table["attribution"].tolist() == meta["attribution"].tolist()
    mapping = taxonomy.load_mapping()
    assert table["class"].tolist() == [mapping.rules[x].cls for x in meta["original_label"]]
    assert table.loc[table["label"] == "engine", "approximate"].all()
    assert not table.loc[table["label"] == "engine_idling", "approximate"].any()


def _write_wav(path: Path, data: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)
    return path


@pytest.fixture()
def class_tree(tmp_path, subset) -> Path:
    """dog/ (real clips, one with a non-ASCII name, a corrupt, an empty, a NaN file, a byte duplicate),
    siren/ (stereo 48 kHz), engine_idling/ (real UrbanSound8K clip) and two stray files."""
    root = tmp_path / "my recordings"
    dogs = subset[subset["original_label"] == "dog"]["path"].tolist()
    (root / "dog").mkdir(parents=True)
    shutil.copy(dogs[0], root / "dog" / "perro_ladrando_ñ.flac")
    shutil.copy(dogs[1], root / "dog" / "b.flac")
    shutil.copy(dogs[1], root / "dog" / "b_copy.flac")
    (root / "dog" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (root / "dog" / "empty.wav").write_bytes(b"")
    _write_wav(root / "dog" / "nan.wav", np.full(800, np.nan, np.float32), 8000, "FLOAT")
    (root / "dog" / "notes.txt").write_text("not audio", encoding="utf-8")
    t = np.arange(48000) / 48000
    _write_wav(root / "siren" / "stereo.wav", np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 0.3, 48000)
    idle = subset[subset["original_label"] == "engine_idling"]["path"].iloc[0]
    (root / "engine_idling" / "sub").mkdir(parents=True)
    shutil.copy(idle, root / "engine_idling" / "sub" / "idle.flac")
    (root / "stray.wav").write_bytes(b"")
    return root


def test_class_folder_excludes_and_reports_bad_files(class_tree):
    table, report = datasets.load_recordings(str(class_tree))
    names = [Path(p).name for p in table["path"]]
    assert names == ["b.flac", "perro_ladrando_ñ.flac", "idle.flac", "stereo.wav"]
    assert table["class"].tolist() == ["dogs", "dogs", "vehicle_idling", "sirens_alarms"]
    assert table["group"].tolist() == ["dog/b", "dog/perro_ladrando_ñ", "engine_idling/sub/idle", "siren/stereo"]
    assert table["source"].unique().tolist() == ["my recordings"]
    stereo = table.iloc[3]
    assert (stereo["channels"], stereo["sample_rate"], stereo["duration_s"]) == (2, 48000, 1.0)
    assert table["fold"].isna().all() and (table["license"] == "").all()

    reasons = {Path(e["path"]).name: e["reason"] for e in report["excluded"]}
    assert set(reasons) == {"b_copy.flac", "corrupt.wav", "empty.wav", "nan.wav"}
    assert "same bytes as" in reasons["b_copy.flac"] and "b.flac" in reasons["b_copy.flac"]
    assert "cannot be read" in reasons["corrupt.wav"] and "cannot be read" in reasons["empty.wav"]
    assert "NaN" in reasons["nan.wav"]
    assert all(str(class_tree) in e["path"] for e in report["excluded"])
    assert {Path(e["path"]).name for e in report["ignored"]} == {"notes.txt", "stray.wav"}

    with pytest.raises(AudioError) as err:
        datasets.load_recordings(str(class_tree), strict=True)
    assert "4 file(s)" in str(err.value)
    assert all(n in str(err.value) for n in ("corrupt.wav", "empty.wav", "nan.wav", "b_copy.flac"))


def test_unknown_labels_fail_together_unless_dropped(tmp_path, subset):
    for i, label in enumerate(("zebra", "yak", "dog")):
        (tmp_path / label).mkdir()
        shutil.copy(subset["path"].iloc[i], tmp_path / label / f"{label}.flac")
    with pytest.raises(taxonomy.MappingError, match="2 label.*yak, zebra"):
        datasets.load_recordings(str(tmp_path))
    table, report = datasets.load_recordings(str(tmp_path), drop_unmapped=True)
    assert report["unmapped_labels"] == {"yak": 1, "zebra": 1}
    assert table.set_index("label")["class"].to_dict() == {"dog": "dogs", "yak": None, "zebra": None}


def test_manifest_errors_are_specific(tmp_path, subset):
    m = tmp_path / "m.csv"
    subset[["path", "original_label"]].to_csv(m, index=False)
    with pytest.raises(InputError, match="lacks the column.*'?label'?.*--label-column"):
        datasets.load_recordings(str(m))
    holes = subset[["path", "original_label"]].copy()
    holes.loc[[1, 4], "original_label"] = ""
    holes.to_csv(m, index=False)
    with pytest.raises(InputError, match=r"2 row\(s\) have an empty 'original_label' \(CSV lines 3, 6\)"):
        datasets.load_recordings(str(m), label_column="original_label")
    dup = pd.concat([subset.iloc[:2], subset.iloc[:1]])[["path", "original_label"]]
    dup.to_csv(m, index=False)
    with pytest.raises(InputError, match="more than once"):
        datasets.load_recordings(str(m), label_column="original_label")
    with pytest.raises(InputError, match="no such file or folder"):
        datasets.load_recordings(str(tmp_path / "missing.csv"))
    with pytest.raises(InputError, match="not a CSV manifest"):
        datasets.load_recordings(subset["path"].iloc[0])


def test_manifest_missing_files_are_reported_and_groups_default_to_the_file(tmp_path, subset):
    m = tmp_path / "m.csv"
    rows = subset[["path", "original_label"]].iloc[:3].copy()
    rows.loc[len(rows)] = [str(tmp_path / "gone.wav"), "dog"]
    rows.to_csv(m, index=False)
    table, report = datasets.load_recordings(str(m), label_column="original_label", source="mine")
    assert len(table) == 3 and table["source"].eq("mine").all()
    assert [Path(e["path"]).name for e in report["excluded"]] == ["gone.wav"]
    assert "file not found" in report["excluded"][0]["reason"]
    # no group column: ESC-50 file names (fold-freesoundID-take-target) give the freesound recording
    assert table["group"].tolist() == [f"freesound:{Path(p).stem.split('-')[1]}" for p in sorted(rows["path"].iloc[:3])]
    with pytest.raises(AudioError, match="gone.wav"):
        datasets.load_recordings(str(m), label_column="original_label", strict=True)
    rows.iloc[:3].assign(take=["a", "a", "b"]).to_csv(m, index=False)
    table, _ = datasets.load_recordings(str(m), label_column="original_label", group_column="take")
    assert sorted(table["group"]) == ["a", "a", "b"]


def _fake_esc50(tmp_path: Path, envsounds: Path) -> Path:
    """A miniature ESC-50-master.zip with the official layout, holding real shared clips."""
    clips = [("2-122104-A-0.flac", "dog", 122104, True, 2), ("2-122104-B-0.flac", "dog", 122104, True, 2),
             ("5-203128-A-0.flac", "dog", 203128, True, 5)]
    meta = pd.DataFrame([{"filename": f, "fold": fold, "target": 0, "category": cat, "esc10": e,
                          "src_file": src, "take": f[-8]} for f, cat, src, e, fold in clips])
    meta.loc[len(meta)] = ["1-11687-A-47.flac", 1, 47, "airplane", False, 11687, "A"]
    meta.loc[len(meta)] = ["1-43807-A-47.flac", 1, 47, "pig", False, 43807, "A"]  # a label mapped to null
    src_dir = {"dog": "dog", "airplane": "airplane", "pig": "airplane"}
    zpath = tmp_path / "ESC-50-master.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ESC-50-master/meta/esc50.csv", meta.to_csv(index=False))
        for f, cat in zip(meta["filename"], meta["category"]):
            zf.write(envsounds / "esc50" / src_dir[cat] / f, f"ESC-50-master/audio/{f}")
    return zpath


def test_esc50_from_archive_and_folder(tmp_path, envsounds):
    zpath = _fake_esc50(tmp_path, envsounds)
    cache = tmp_path / "cache"
    table, report = datasets.load_recordings(f"esc50:{zpath}", cache_dir=cache)
    assert report["kind"] == "esc50" and len(table) == 5
    assert table["source"].eq("ESC-50").all()
    dog = table[table["label"] == "dog"]
    assert dog["group"].tolist() == ["freesound:122104", "freesound:122104", "freesound:203128"]
    assert dog["license"].eq(datasets.ESC10_LICENSE).all()
    assert table.loc[table["label"] == "airplane", "license"].item() == datasets.ESC50_LICENSE
    assert table.loc[table["label"] == "pig", "class"].item() is None
    assert report["excluded_labels"] == {"pig": 1}
    assert table["fold"].tolist() == [1, 1, 2, 2, 5]
    extracted = list((cache / "extracted").iterdir())
    assert len(extracted) == 1 and (extracted[0] / ".clapnb-extracted").is_file()

    again, _ = datasets.load_recordings(f"esc50:{zpath}", cache_dir=cache)  # reuses the extraction
    pd.testing.assert_frame_equal(again, table)
    folder, _ = datasets.load_recordings(f"esc50:{extracted[0] / 'ESC-50-master'}", cache_dir=cache)
    pd.testing.assert_frame_equal(folder, table)
    with pytest.raises(InputError, match="no such archive or folder"):
        datasets.load_recordings(f"esc50:{tmp_path / 'nope.zip'}", cache_dir=cache)
    with pytest.raises(InputError, match="does not look like ESC-50"):
        datasets.load_recordings(f"esc50:{tmp_path / 'cache'}", cache_dir=cache)


def test_esc50_download_offline_says_where_to_put_the_zip(tmp_path, envsounds):
    cache = tmp_path / "cache"
    url = "http://127.0.0.1:9/ESC-50-master.zip"  # nothing listens on the discard port
    with pytest.raises(ClapnbError) as err:
        datasets.fetch_esc50(cache, url=url)
    msg = str(err.value)
    assert url in msg and str(cache / datasets.ESC50_ZIP) in msg and "esc50:" in msg

    # Placed by hand with the expected hash: used without any download.
    zpath = _fake_esc50(tmp_path, envsounds)
    cache.mkdir(exist_ok=True)
    shutil.copy(zpath, cache / datasets.ESC50_ZIP)
    root = datasets.fetch_esc50(cache, url=url, known_hash=_sha(zpath))
    assert (root / "meta" / "esc50.csv").is_file() and len(list((root / "audio").iterdir())) == 5


def test_urbansound8k_from_a_tar_archive(tmp_path, envsounds, envsounds_meta):
    us = envsounds_meta[envsounds_meta["original_label"] == "gun_shot"].sort_values("path").head(3)
    meta = pd.DataFrame({
        "slice_file_name": [Path(p).with_suffix(".flac").name for p in us["path"]],
        "fsID": us["freesound_id"].to_numpy(), "start": 0.0, "end": us["duration_s"].to_numpy(),
        "salience": 1, "fold": us["fold"].to_numpy(), "classID": 6, "class": "gun_shot"})
    src = tmp_path / "UrbanSound8K"
    (src / "metadata").mkdir(parents=True)
    meta.to_csv(src / "metadata" / "UrbanSound8K.csv", index=False)
    for rel, name, fold in zip(us["path"], meta["slice_file_name"], meta["fold"]):
        (src / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        shutil.copy(envsounds / rel, src / "audio" / f"fold{fold}" / name)
    archive = tmp_path / "UrbanSound8K.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="UrbanSound8K")

    table, report = datasets.load_recordings(f"urbansound8k:{archive}", cache_dir=tmp_path / "cache")
    assert report["kind"] == "urbansound8k" and len(table) == 3
    assert table["class"].eq("thunder_fireworks_gunshot").all()
    assert sorted(table["group"]) == sorted(f"freesound:{i}" for i in us["freesound_id"])
    assert table["license"].eq(datasets.US8K_LICENSE).all() and table["source"].eq("UrbanSound8K").all()
    folder, _ = datasets.load_recordings(f"urbansound8k:{src}", cache_dir=tmp_path / "cache")
    assert folder.drop(columns="path").equals(table.drop(columns="path"))
    with pytest.raises(InputError, match="zenodo"):
        datasets.load_recordings("urbansound8k")


def test_manifest_fold_must_be_whole(tmp_path, subset):
    m = tmp_path / "m.csv"
    rows = subset[["path", "original_label"]].iloc[:2].assign(fold=["1.0", "2"])
    rows.to_csv(m, index=False)
    table, _ = datasets.load_recordings(str(m), label_column="original_label")
    assert sorted(table["fold"].tolist()) == [1, 2]
    rows.assign(fold=["1", "first"]).to_csv(m, index=False)
    with pytest.raises(InputError, match="'fold' must hold whole numbers, found 'first'"):
        datasets.load_recordings(str(m), label_column="original_label")


def test_semicolon_manifest_with_a_custom_path_column(tmp_path, subset):
    """A European spreadsheet's export: ';' separators, decimal commas, a BOM, the paths in 'Datei'."""
    m = tmp_path / "m.csv"
    rows = subset[["path", "original_label", "duration_s"]].rename(columns={"path": "Datei"})
    rows = rows.assign(duration_s=[f"{v:.2f}".replace(".", ",") for v in rows["duration_s"]])
    m.write_text(rows.to_csv(index=False, sep=";"), encoding="utf-8-sig")
    table, report = datasets.load_recordings(str(m), label_column="original_label", path_column="Datei")
    assert report["excluded"] == [] and table["path"].tolist() == sorted(subset["path"])
    assert table["label"].tolist() == subset.set_index("path").loc[table["path"], "original_label"].tolist()
    assert datasets.missing_data(str(m), label_column="original_label", path_column="Datei") == []

    tabbed = tmp_path / "t.tsv"
    tabbed.write_text(subset[["path", "original_label"]].to_csv(index=False, sep="\t"), encoding="utf-8")
    same, _ = datasets.load_recordings(str(tabbed), label_column="original_label")
    pd.testing.assert_frame_equal(same, table)

    with pytest.raises(InputError, match=r"lacks the column\(s\) path; it has Datei, original_label, "
                                         r"duration_s \(read as semicolon-separated\).*--path-column"):
        datasets.load_recordings(str(m), label_column="original_label")


def test_detect_delimiter_trusts_the_header_over_decimal_commas():
    text = "path;label;gain\na.wav;dog;1,5\nb.wav;cat;2,5\n"
    assert datasets.detect_delimiter(text, ["path", "label"]) == ";"
    assert datasets.detect_delimiter("path,label\na.wav,dog\n", ["path"]) == ","
    assert datasets.detect_delimiter("file|label\na.wav|dog\n", ["path"]) == "|"  # no expected name: most fields


def test_missing_data_names_the_problem_without_reading_audio(tmp_path, subset, monkeypatch):
    m = tmp_path / "m.csv"
    subset[["path", "original_label"]].assign(path=[str(tmp_path / f"gone{i}.wav") for i in range(len(subset))]
                                              ).to_csv(m, index=False)
    [msg] = datasets.missing_data(str(m), label_column="original_label")
    assert f"none of the {len(subset)} files listed in {m}" in msg and "gone0.wav" in msg
    assert "no such file or folder" in datasets.missing_data(str(tmp_path / "nope.csv"))[0]
    [msg] = datasets.missing_data(str(m), label_column="label")
    assert "lacks the column(s) label" in msg


def test_esc50_cache_follows_clapnb_cache(tmp_path, envsounds, monkeypatch):
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "mycache"))
    assert datasets.default_cache_dir() == tmp_path / "mycache"
    zpath = _fake_esc50(tmp_path, envsounds)
    (tmp_path / "mycache").mkdir()
    shutil.copy(zpath, tmp_path / "mycache" / datasets.ESC50_ZIP)
    monkeypatch.setenv("CLAPNB_ESC50_SHA256", _sha(zpath))
    assert datasets.missing_data("esc50") == []  # in the cache: nothing to download
    table, report = datasets.load_recordings("esc50")
    assert len(table) == 5 and report["root"].startswith(str(tmp_path / "mycache"))
