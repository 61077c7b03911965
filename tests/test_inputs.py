"""Every missing input (data, weights, audio) is named in one message before any work starts."""

from __future__ import annotations

import pandas as pd
import pytest

from clapnb import cli


@pytest.fixture
def no_weights(tmp_path, monkeypatch, standin_dir):
    """No CLAP checkpoint anywhere and the hub unreachable (what a new user offline has).

    ``standin_dir`` first: huggingface_hub reads HF_HOME once, at import, and the stand-in's tests
    later in the session need that first import to see the session's environment, not ours.
    """
    import huggingface_hub.constants  # noqa: F401  (imported under the session's HF_HOME)

    monkeypatch.delenv("CLAPNB_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_sweep_names_missing_weights_and_data_together(tmp_path, no_weights, capsys):
    out = tmp_path / "run"
    assert cli.main(["sweep", "--data", str(tmp_path / "my-clips.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 inputs are missing; nothing was started" in err
    assert "my-clips.csv: no such file or folder" in err
    assert "CLAP_weights_2023.pth" in err and "--weights" in err and "gpt2" in err
    assert not out.exists(), "nothing may be written before the inputs are known to be there"


def test_reproduce_names_a_missing_archive_and_the_weights(tmp_path, no_weights, capsys):
    out = tmp_path / "reproduce"
    assert cli.main(["reproduce", "--data", f"esc50:{tmp_path / 'ESC-50-master.zip'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 inputs are missing" in err and "ESC-50-master.zip: no such archive or folder" in err
    assert "CLAP_weights_2023.pth" in err
    assert not out.exists()


def test_segments_names_the_manifest_problem_before_reading(tmp_path, capsys):
    m = tmp_path / "m.csv"
    m.write_text("Datei;Klasse\nx.wav;dog\n", encoding="utf-8")
    args = ["segments", "--data", str(m), "--label-column", "Klasse", "--length", "4", "--out", str(tmp_path / "o")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "1 input is missing" in err and "lacks the column(s) path" in err and "semicolon" in err
    assert cli.main([*args, "--path-column", "Datei"]) == 2
    assert "none of the 1 files listed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_embed_names_missing_weights_and_missing_audio_together(tmp_path, no_weights, capsys):
    seg = tmp_path / "run" / "segments.parquet"
    seg.parent.mkdir()
    pd.DataFrame({"path": [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]}).to_parquet(seg)
    assert cli.main(["embed", "--segments", str(seg), "--backbone", "msclap-2023"]) == 2
    err = capsys.readouterr().err
    assert "2 inputs are missing" in err and "2 of the 2 recordings" in err and "a.wav" in err
    assert "CLAP_weights_2023.pth" in err
    assert not (seg.parent / "embeddings.json").exists()
