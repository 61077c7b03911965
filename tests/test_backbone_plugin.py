"""Adding a backbone is one module plus one registry line: a dummy defined and registered in this
file alone keeps the contract and appears in every ``--backbone`` choice."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from clapnb import backbones, cli, io
from clapnb.backbones import BackboneSpec, NoTextEncoderError, contract


@dataclass(eq=False)
class BandEnergies:
    """Log energies of ``bands`` equal FFT bands of the input tiled to 1 s (a toy, not a model)."""

    name: str
    policy: str = "tile"
    bands: int = 16
    sample_rate: int = 16000
    has_text: bool = False
    random_weights: bool = False
    logit_scale: float | None = None
    dim: int = 0
    fingerprint: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dim = self.bands
        self.fingerprint = io.fingerprint([{"name": self.name, "bands": self.bands}])
        self.metadata = {"name": self.name, "dim": self.dim, "sample_rate": self.sample_rate, "has_text": False,
                         "policy": self.policy, "input_duration_s": 1, "fingerprint": self.fingerprint,
                         "random_weights": False, "logit_scale": None, "weights_path": None}

    def embed_audio(self, waves):
        rows = []
        for w in waves:
            x = np.resize(np.asarray(w, np.float64), self.sample_rate)
            power = np.abs(np.fft.rfft(x)) ** 2
            rows.append([np.log(b.sum() + 1e-12) for b in np.array_split(power, self.bands)])
        return np.asarray(rows, dtype=np.float32).reshape(len(waves), self.dim)

    def embed_text(self, prompts):
        raise NoTextEncoderError(f"{self.name} has no text encoder")


def load(name, *, weights=None, device="auto", policy="tile", batch_size=None, precision="fp32", compile=False,
         bands=16):
    return BandEnergies(name=name, policy=policy, bands=bands)


@pytest.fixture
def dummy():
    # the one registry line
    backbones.register(BackboneSpec("band-energies", load, "band energies (test dummy)", "features", False,
                                    policies=("tile",), default_policy="tile", options={"bands": 16}))
    yield "band-energies"
    backbones.unregister("band-energies")


def test_dummy_keeps_the_contract(dummy):
    b = backbones.load_backbone(dummy)
    assert b.metadata["display_name"] == "band energies (test dummy)" and b.metadata["options"] == {"bands": 16}
    contract.check_backbone(b, variant=backbones.load_backbone(dummy, bands=8))
    assert dummy in backbones.NAMES and dummy not in backbones.CLAP_NAMES
    with pytest.raises(backbones.InputError, match="no option"):
        backbones.load_backbone(dummy, hop=3)
    with pytest.raises(backbones.InputError, match="input policy 'msclap' for band-energies"):
        backbones.load_backbone(dummy, policy="msclap")
    with pytest.raises(backbones.InputError, match="CLAP backbones only"):
        backbones.load_backbone(dummy, precision="bf16")


@pytest.mark.parametrize("command", ["embed", "sweep"])
def test_dummy_shows_in_every_backbone_choice(dummy, command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "band-energies" in out and "band energies (test dummy)" in out and "tile" in out
    given = ["--segments", "x"] if command == "embed" else ["--data", "x", "--out", "x"]
    assert cli.build_parser().parse_args([command, *given, "--backbone", dummy]).backbone == dummy


def test_unregistered_name_is_refused_everywhere(capsys, tmp_path):
    for command in (["embed", "--segments", "x"], ["sweep", "--data", str(tmp_path), "--out", str(tmp_path / "r")]):
        assert cli.main([*command, "--backbone", "band-energies"]) == 2
        assert "unknown backbone 'band-energies'; choose one of msclap-2023" in capsys.readouterr().err
    with pytest.raises(backbones.InputError, match="unknown backbone 'band-energies'; choose one of msclap-2023"):
        backbones.load_backbone("band-energies")
