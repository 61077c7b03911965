"""The random-weights stand-in: layout, marker, tokenizer contract, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from clapnb import standin


def test_layout_and_environment(standin_dir: Path):
    env = standin.environment(standin_dir)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert Path(env["CLAPNB_WEIGHTS"]).is_file()
    repo = Path(env["HF_HOME"]) / "hub" / "models--gpt2"
    rev = (repo / "refs" / "main").read_text().strip()
    snapshot = repo / "snapshots" / rev
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (snapshot / name).is_file(), name
    config = json.loads((snapshot / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["n_head"]) == (2, 768, 12)
    assert "RANDOM WEIGHTS" in (standin_dir / standin.MARKER_NAME).read_text()
    assert all(f"export {k}={v}" in standin.export_lines(standin_dir) for k, v in env.items())


def test_checkpoint_is_what_msclap_reads_and_carries_the_marker(standin_dir: Path):
    ckpt = torch.load(standin_dir / standin.CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert ckpt[standin.RANDOM_WEIGHTS_KEY] is True
    sd = ckpt["model"]
    # msclap 2023: HTSAT audio branch + 1024-d projections + GPT-2 text branch + logit scale.
    assert sd["audio_encoder.projection.linear1.weight"].shape == (1024, 768)
    assert sd["caption_encoder.projection.linear1.weight"].shape == (1024, 768)
    assert "logit_scale" in sd
    n_audio = sum(v.numel() for k, v in sd.items() if k.startswith("audio_encoder.base."))
    assert 25e6 < n_audio < 40e6  # HTSAT-tiny, ~33 M parameters (field notes)


def test_tokenizer_pads_with_id_zero_like_gpt2(standin_dir: Path):
    from transformers import AutoTokenizer

    repo = standin_dir / "hf" / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    tok = AutoTokenizer.from_pretrained(snapshot)
    tok.add_special_tokens({"pad_token": "!"})  # what msclap does
    assert tok.pad_token_id == 0
    enc = tok.encode_plus("this is the sound of a dog barking <|endoftext|>", max_length=77,
                          padding="max_length")
    ids = enc["input_ids"]
    assert len(ids) == 77 and ids[-1] == 0
    # msclap takes the hidden state at (number of non-zero ids - 1): the end-of-text token.
    assert ids[sum(i != 0 for i in ids) - 1] == tok.convert_tokens_to_ids("<|endoftext|>")
    # every taxonomy prompt fits msclap's 77-token text length
    from clapnb.taxonomy import CLASSES

    longest = max((f"this is the sound of {p} <|endoftext|>" for c in CLASSES for p in (c.prompt, *c.synonyms)),
                  key=len)
    assert len(tok.encode(longest)) <= 77


@pytest.mark.slow
def test_same_seed_gives_the_same_bytes(standin_dir: Path, tmp_path: Path):
    info = standin.build_standin(tmp_path / "again", seed=0)

    def sha(p):
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    assert sha(info["checkpoint"]) == sha(standin_dir / standin.CHECKPOINT_NAME)
    assert info["random_weights"] is True and info["seed"] == 0


def test_describe_refuses_a_folder_that_is_not_a_standin(tmp_path: Path):
    with pytest.raises(Exception, match="not a clapnb stand-in"):
        standin.describe(tmp_path)
