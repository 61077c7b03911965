"""The registry's contract (clapnb.backbones.contract) on every registered backbone.

Each registered name needs an offline instance here, or an entry in EXEMPT saying why not: a new
backbone without either fails :func:`test_every_registered_backbone_is_checked`.
"""

from __future__ import annotations

import pytest
import torch

from clapnb import backbones
from clapnb.backbones import contract

#: Registered backbones that cannot be instantiated offline, and why.
EXEMPT = {
    "msclap-2022": "no offline stand-in (its CNN14 + BERT checkpoint is ~0.7 GB of random weights); the "
                   "ClapBackbone class it shares with msclap-2023 is checked through msclap-2023",
}
BUILTIN = ("msclap-2023", "msclap-2022", "mfcc", "gfcc")


def _clap(tmp_path_factory, clap_2023):
    """The stand-in, and a copy whose audio projection is perturbed (other weights)."""
    ckpt = torch.load(clap_2023.weights_path, map_location="cpu", weights_only=True)
    ckpt["model"]["audio_encoder.projection.linear1.weight"] += 0.01
    other = tmp_path_factory.mktemp("clap-variant") / "perturbed.pth"
    torch.save(ckpt, other)
    return clap_2023, backbones.load_backbone("msclap-2023", weights=other, device="cpu")


def _features(name):
    def build(tmp_path_factory, clap_2023):
        return (backbones.load_backbone(name),
                backbones.FeatureBackbone(name=name, n_coeffs=13))  # another feature configuration
    return build


def _birdnet(tmp_path_factory, clap_2023):
    """BirdNET (the birdnet extra: CI installs it), and another window hop (another configuration)."""
    from conftest import require_birdnet

    require_birdnet()
    return backbones.load_backbone("birdnet", batch_size=2), backbones.load_backbone("birdnet", hop_s=1.0)


BUILDERS = {"msclap-2023": _clap, "mfcc": _features("mfcc"), "gfcc": _features("gfcc"), "birdnet": _birdnet}


def test_every_registered_backbone_is_checked():
    assert set(BUILTIN) <= set(backbones.REGISTRY)
    unchecked = set(backbones.REGISTRY) - set(BUILDERS) - set(EXEMPT)
    assert not unchecked, f"registered without a contract instance in this file: {sorted(unchecked)}"


@pytest.mark.parametrize("name", [n for n in backbones.REGISTRY if n not in EXEMPT])
def test_registered_backbone_keeps_the_contract(name, request, tmp_path_factory):
    clap_2023 = request.getfixturevalue("clap_2023") if name == "msclap-2023" else None
    backbone, variant = BUILDERS[name](tmp_path_factory, clap_2023)
    contract.check_backbone(backbone, variant=variant)


def test_the_contract_can_fail():
    """A backbone that breaks batch-size invariance, and one that hides a text side, are caught."""
    mfcc = backbones.load_backbone("mfcc")

    class Leaky(backbones.FeatureBackbone):
        def embed_audio(self, waves):
            E = super().embed_audio(waves)
            return E + len(waves)  # depends on the batch

    leaky = Leaky(name="mfcc")
    leaky.metadata = dict(mfcc.metadata)  # the registry's labels, as load_backbone adds them
    with pytest.raises(AssertionError, match="differs from one at a time"):
        contract.check_backbone(leaky, reopen=False)

    class Mute(backbones.FeatureBackbone):
        def embed_text(self, prompts):
            return mfcc.embed_audio(contract.probe_waves(44100, (0.5,)))

    mute = Mute(name="mfcc")
    mute.metadata = dict(mfcc.metadata)
    with pytest.raises(AssertionError, match="did not raise NoTextEncoderError"):
        contract.check_backbone(mute, reopen=False)
    same = backbones.load_backbone("mfcc")
    with pytest.raises(AssertionError, match="same fingerprint"):
        contract.check_backbone(mfcc, variant=same, reopen=False)
