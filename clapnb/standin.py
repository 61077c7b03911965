"""Offline stand-in for msclap 2023: the exact architecture with random (seeded) weights.

Its purpose is plumbing: it lets the *unchanged* msclap loading path (``msclap.CLAP(model_fp=...)``,
``AutoModel.from_pretrained('gpt2')``) run without the hub, in tests and on offline machines.
Nothing computed with it is a CLAP result; the checkpoint carries a marker
(:data:`RANDOM_WEIGHTS_KEY`) that :mod:`clapnb.backbones` reads to label every output
``random_weights: true``.

Layout of the folder::

    CLAP_weights_2023_random.pth        torch.save({'model': state_dict, <marker>: True, ...})
    RANDOM_WEIGHTS.txt                  human-readable marker
    hf/hub/models--gpt2/refs/main       a fake revision ...
    hf/hub/models--gpt2/snapshots/<rev>/  ... holding a 2-layer random GPT-2 and its tokenizer

The GPT-2 is tiny (``n_layer=2``) and its byte-level BPE tokenizer is trained on the taxonomy's
prompts so that ordinary prompts fit msclap's 77-token limit; ``'!'`` (msclap's pad token) has
id 0 as in the real GPT-2, because msclap finds the last real token with ``input_ids != 0``.

The build runs in a child Python process: transformers and huggingface_hub freeze ``HF_HOME`` and
``HF_HUB_OFFLINE`` when they are imported, so building in the caller's process would pin the
caller's Hugging Face cache to whatever it was before :func:`environment` is applied.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from clapnb import io
from clapnb.errors import ClapnbError

CHECKPOINT_NAME = "CLAP_weights_2023_random.pth"
MARKER_NAME = "RANDOM_WEIGHTS.txt"
#: Key stored next to ``'model'`` in the checkpoint dict; msclap only reads ``['model']``.
RANDOM_WEIGHTS_KEY = "clapnb_random_weights"
INFO_KEY = "clapnb_standin"
PAD_TOKEN = "!"
EOS_TOKEN = "<|endoftext|>"

_MARKER_TEXT = """RANDOM WEIGHTS - NOT A CLAP MODEL.

This folder holds the msclap 2023 architecture with random, seeded weights and a tiny random GPT-2,
built by `clapnb standin` for offline plumbing tests. Numbers computed with it are not CLAP results;
clapnb labels them `random_weights: true` wherever it writes them.
"""


def environment(out_dir: str | os.PathLike) -> dict[str, str]:
    """Environment variables that point msclap, transformers and clapnb at the stand-in.

    Set them before Python imports transformers (e.g. with the ``export`` lines that
    ``clapnb standin`` prints): the Hugging Face libraries read them once, at import.
    """
    out = Path(out_dir).resolve()
    return {
        "HF_HOME": str(out / "hf"),
        "HF_HUB_OFFLINE": "1",
        "CLAPNB_WEIGHTS": str(out / CHECKPOINT_NAME),
    }


def build_standin(out_dir: str | os.PathLike, *, seed: int = 0, timeout_s: float = 900) -> dict:
    """Build the stand-in into ``out_dir`` (in a child process) and return its description.

    Returns ``{'dir', 'checkpoint', 'hf_home', 'seed', 'random_weights': True, 'env'}``.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **environment(out)}
    cmd = [sys.executable, "-m", "clapnb.standin", "--out", str(out), "--seed", str(seed)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise ClapnbError(f"building the random-weights stand-in in {out} failed "
                          f"(exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    return describe(out)


def describe(out_dir: str | os.PathLike) -> dict:
    """What :func:`build_standin` returns, read back from an existing stand-in folder."""
    out = Path(out_dir).resolve()
    info_path = out / "standin.json"
    if not info_path.is_file():
        raise ClapnbError(f"{out} is not a clapnb stand-in folder (no standin.json); "
                          "build one with `clapnb standin --out DIR`")
    info = io.read_json(info_path)
    return {**info, "dir": str(out), "checkpoint": str(out / CHECKPOINT_NAME),
            "hf_home": str(out / "hf"), "env": environment(out)}


def export_lines(out_dir: str | os.PathLike) -> str:
    """Shell ``export`` lines for :func:`environment`."""
    return "\n".join(f"export {k}={v}" for k, v in environment(out_dir).items())


# --- the build itself (runs in the child process, with environment() already set) -------------

def _prompt_corpus() -> list[str]:
    from clapnb.taxonomy import CLASSES

    phrases = [p for c in CLASSES for p in (c.name, c.prompt, *c.synonyms)]
    templates = ["this is the sound of {}", "the sound of {}", "a recording of {}", "{}"]
    return [t.format(p) for t in templates for p in phrases]


def _build_tokenizer():
    """Byte-level BPE in GPT-2's byte order (so '!' is id 0) with merges learned from prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_prompt_corpus(), trainer=trainer)
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                             unk_token=EOS_TOKEN)
    fast.add_special_tokens({"eos_token": EOS_TOKEN})
    if fast.convert_tokens_to_ids(PAD_TOKEN) != 0:
        raise ClapnbError("stand-in tokenizer: '!' did not get id 0; msclap's text encoder needs it")
    return fast


def _write_gpt2_cache(hf_home: Path, seed: int) -> str:
    """Save a random 2-layer GPT-2 and the tokenizer as the HF cache entry ``models--gpt2``."""
    import torch
    from transformers import GPT2Config, GPT2Model

    tokenizer = _build_tokenizer()
    torch.manual_seed(seed)
    model = GPT2Model(GPT2Config(n_embd=768, n_head=12, n_layer=2, n_positions=128,
                                 vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id))
    repo = hf_home / "hub" / "models--gpt2"
    staging = repo / "snapshots" / ".staging"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    digest = hashlib.sha1()
    for f in sorted(staging.iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    rev = digest.hexdigest()
    final = repo / "snapshots" / rev
    if final.exists():
        import shutil

        shutil.rmtree(final)
    staging.rename(final)
    io.atomic_write_text(repo / "refs" / "main", rev)
    return rev


def _build_in_this_process(out: Path, seed: int) -> None:
    import torch
    import yaml
    from huggingface_hub import constants

    hf_home = out / "hf"
    if Path(constants.HF_HOME).resolve() != hf_home.resolve() or not constants.HF_HUB_OFFLINE:
        raise ClapnbError("internal: the stand-in build must run with its environment() set")
    rev = _write_gpt2_cache(hf_home, seed)

    import msclap
    from msclap.models.clap import CLAP

    cfg = yaml.safe_load((Path(msclap.__file__).parent / "configs" / "config_2023.yml").read_text())
    torch.manual_seed(seed)
    clap = CLAP(audioenc_name=cfg["audioenc_name"], sample_rate=cfg["sampling_rate"],
                window_size=cfg["window_size"], hop_size=cfg["hop_size"], mel_bins=cfg["mel_bins"],
                fmin=cfg["fmin"], fmax=cfg["fmax"], classes_num=cfg["num_classes"],
                out_emb=cfg["out_emb"], text_model=cfg["text_model"],
                transformer_embed_dim=cfg["transformer_embed_dim"], d_proj=cfg["d_proj"])
    info = {"seed": seed, "version": "2023", "gpt2_revision": rev, "random_weights": True,
            "built_with": {"msclap": getattr(msclap, "__version__", "1.3.4"), "torch": torch.__version__}}
    import io as _io

    buf = _io.BytesIO()
    torch.save({"model": clap.state_dict(), RANDOM_WEIGHTS_KEY: True, INFO_KEY: json.dumps(info)}, buf)
    io.atomic_write_bytes(out / CHECKPOINT_NAME, buf.getvalue())
    io.atomic_write_text(out / MARKER_NAME, _MARKER_TEXT)
    io.atomic_write_json(out / "standin.json", info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the clapnb random-weights stand-in (child process).")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _build_in_this_process(args.out.resolve(), args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
