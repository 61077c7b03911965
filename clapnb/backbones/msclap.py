"""msclap CLAP (``msclap-2023`` / ``msclap-2022``) behind the :class:`Backbone` protocol.

Microsoft CLAP through msclap's public ``CLAP(model_fp=..., version=..., use_cuda=...)``. Weights
come from an explicit path, else ``$CLAPNB_WEIGHTS``, else msclap's own hub download; the text
model (gpt2 / bert-base-uncased) comes from the Hugging Face cache or hub, exactly as msclap
loads it.

Audio never goes through msclap's ``read_audio`` (``torchaudio.load`` needs torchcodec, and it
lays stereo channels end to end); clapnb decodes, mixes and resamples itself (:mod:`clapnb.audio`)
and applies an explicit *input policy* (:func:`clapnb.backbones.base.apply_policy`):

* ``msclap`` (default): what msclap's ``load_audio_into_tensor`` does, made deterministic. A
  waveform shorter than the model's duration (7 s for 2023, 5 s for 2022) is tiled to it; a longer
  one is cropped to it *centred* (msclap crops at an unseeded random offset, which cannot be
  reproduced).
* ``native``: the waveform as it is. HTSAT then bicubically stretches a spectrogram shorter than
  1024 frames (~7.43 s) to 1024 frames, and averages the embeddings of overlapping ~8-s crops of a
  longer one; inputs under 513 samples cannot be framed at all and are refused.

CLAP backbones also take an embedding *mode* (:mod:`clapnb.fast`): ``precision`` fp32 (default,
the reference: msclap's module untouched), bf16 or auto, and ``compile``. A fast mode runs a
changed copy of the audio encoder; msclap's own stays beside it as the fp32 reference that
:mod:`clapnb.agreement` measures it against. The metadata's ``precision`` names the mode
(``bf16+compile``...), and the embedding cache is keyed by it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clapnb.audio import TARGET_SR
from clapnb.backbones.base import (Availability, BackboneUnavailableError, CheckpointError, apply_policy,
                                   resolve_device)
from clapnb.backbones.hub import (cached_file, check_hf_environment, compare_keys, endpoint, hub_cache_dir,
                                  hub_offline, read_checkpoint, weights_sha256)
from clapnb.errors import InputError

NAMES = ("msclap-2023", "msclap-2022")

DEVICES = ("auto", "cpu", "cuda")

HUB_REPO = "microsoft/msclap"
CHECKPOINT_FILES = {"msclap-2023": "CLAP_weights_2023.pth", "msclap-2022": "CLAP_weights_2022.pth"}
TEXT_MODELS = {"msclap-2023": "gpt2", "msclap-2022": "bert-base-uncased"}
#: Files transformers needs for each text model: each entry lists alternatives (any one suffices),
#: each alternative being a set of files.
TEXT_MODEL_FILES: dict[str, list[tuple[tuple[str, ...], ...]]] = {
    "gpt2": [(("config.json",),), (("model.safetensors",), ("pytorch_model.bin",)),
             (("tokenizer.json",), ("vocab.json", "merges.txt"))],
    "bert-base-uncased": [(("config.json",),), (("model.safetensors",), ("pytorch_model.bin",)),
                          (("tokenizer.json",), ("vocab.txt",))],
}
#: Input duration of each msclap version's config (``duration`` in msclap/configs/config_*.yml).
CLAP_DURATION_S = {"msclap-2023": 7, "msclap-2022": 5}
#: Shortest waveform HTSAT's reflect-padded STFT (n_fft 1024) accepts.
MIN_NATIVE_SAMPLES = 513


def import_msclap():
    """``msclap.CLAP``, imported without letting msclap silence warnings process-wide."""
    with warnings.catch_warnings():
        from msclap import CLAP
    return CLAP




# --- where the files are --------------------------------------------------------------------

def _resolve_weights(name: str, weights: str | os.PathLike | None) -> tuple[str | None, str]:
    for value, source in ((weights, "argument"), (os.environ.get("CLAPNB_WEIGHTS") or None, "CLAPNB_WEIGHTS")):
        if value is None:
            continue
        path = Path(value).expanduser()
        flag = "--weights" if source == "argument" else "$CLAPNB_WEIGHTS"
        if not path.is_file():
            raise InputError(f"{flag} points to {path}, which is not a file; give the path of "
                             f"{CHECKPOINT_FILES[name]} (or unset {flag} to use msclap's hub download)")
        return str(path.resolve()), source
    cached = cached_file(HUB_REPO, CHECKPOINT_FILES[name])
    return (cached, "hub cache") if cached else (None, "hub download")


def _missing_text_files(text_model: str) -> list[str]:
    missing = []
    for alternatives in TEXT_MODEL_FILES[text_model]:
        if not any(all(cached_file(text_model, f) for f in alt) for alt in alternatives):
            missing.append(" or ".join(" + ".join(alt) for alt in alternatives))
    return missing


def _unavailable_message(name: str, weights_missing: bool, text_missing: list[str]) -> str:
    cache = hub_cache_dir()
    ckpt = CHECKPOINT_FILES[name]
    text_model = TEXT_MODELS[name]
    lines = [f"{name} cannot be loaded: the Hugging Face hub is not reachable (or HF_HUB_OFFLINE is set) "
             "and these files are missing:"]
    if weights_missing:
        lines += [f"  * CLAP checkpoint {ckpt}: not given with --weights / $CLAPNB_WEIGHTS and not in "
                  f"{cache / ('models--' + HUB_REPO.replace('/', '--'))}",
                  f"      fetch it on a connected machine: {endpoint()}/{HUB_REPO}/resolve/main/{ckpt}",
                  "      then put it anywhere here and pass --weights PATH or export CLAPNB_WEIGHTS=PATH"]
    if text_missing:
        repo_dir = cache / f"models--{text_model}"
        files = sorted({f for item in TEXT_MODEL_FILES[text_model] for f in item[0]} | {"tokenizer_config.json"})
        lines += [f"  * text model '{text_model}' (msclap loads it with transformers.from_pretrained): "
                  f"missing {'; '.join(text_missing)} in {repo_dir}/snapshots/<revision>/",
                  f"      fetch on a connected machine: HF_HOME=/tmp/hf huggingface-cli download {text_model} "
                  + " ".join(files),
                  f"      (or the URLs {endpoint()}/{text_model}/resolve/main/<file> for each of "
                  + ", ".join(files) + ")",
                  f"      then copy /tmp/hf/hub/models--{text_model} to {repo_dir} "
                  "(or point HF_HOME at a folder whose hub/ holds it)"]
    lines.append("For an offline plumbing check without the real model, `clapnb standin --out DIR` builds "
                 "random weights (their numbers are NOT CLAP results).")
    return "\n".join(lines)


def check_available(name: str, weights: str | os.PathLike | None = None) -> Availability:
    """Cheap check, before any long work, that :func:`load` can find everything.

    Raises :class:`BackboneUnavailableError` naming every missing file, where to put it and where
    to fetch it when the hub is unreachable; otherwise says where the weights will come from.
    """
    path, source = _resolve_weights(name, weights)
    text_missing = _missing_text_files(TEXT_MODELS[name])
    missing = ([f"{CHECKPOINT_FILES[name]}"] if path is None else []) + [
        f"{TEXT_MODELS[name]}: {m}" for m in text_missing]
    if missing and hub_offline():
        raise BackboneUnavailableError(_unavailable_message(name, path is None, text_missing))
    return Availability(name, path, source, tuple(missing))



# --- CLAP -----------------------------------------------------------------------------------

@dataclass(eq=False)
class ClapBackbone:
    """msclap CLAP behind the :class:`Backbone` protocol; ``wrapper`` is msclap's own object."""

    name: str
    wrapper: Any
    policy: str
    device: str
    fingerprint: str
    random_weights: bool
    weights_path: str
    batch_size: int | None = None
    precision: str = "fp32"          # resolved: fp32 | bf16
    compile: bool = False
    precision_requested: str = "fp32"
    precision_reason: str = "default"
    encoder: Any = field(default=None, repr=False)  # set from the mode: what forward() runs
    has_text: bool = True
    sample_rate: int = TARGET_SR
    dim: int = 0
    logit_scale: float | None = None
    duration_s: int = 0
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dim = int(self.wrapper.args.d_proj)
        self.sample_rate = int(self.wrapper.args.sampling_rate)
        self.duration_s = int(self.wrapper.args.duration)
        # msclap's compute_similarity multiplies cosines by exp(logit_scale): keep the multiplier.
        self.logit_scale = float(self.wrapper.clap.logit_scale.detach().exp().cpu())
        import msclap
        import torch

        self.metadata = {
            "name": self.name, "dim": self.dim, "sample_rate": self.sample_rate, "has_text": True,
            "policy": self.policy, "input_duration_s": self.duration_s, "device": self.device,
            "weights_path": self.weights_path, "weights_sha256": self.fingerprint,
            "fingerprint": self.fingerprint, "random_weights": self.random_weights,
            "logit_scale": self.logit_scale, "text_model": str(self.wrapper.args.text_model),
            "msclap_version": getattr(msclap, "__version__", "1.3.4"), "torch_version": torch.__version__,
        }
        from clapnb import fast

        mode = fast.Mode(self.precision, self.compile)
        # the module forward() runs: msclap's own in fp32, a changed copy in any other mode
        self.encoder = fast.fast_audio_encoder(self.model.audio_encoder, mode)
        self.metadata.update({"precision": mode.name, "precision_requested": self.precision_requested,
                              "precision_reason": self.precision_reason})

    @property
    def model(self):
        return self.wrapper.clap

    def _input_length(self, wave: np.ndarray) -> int:
        return self.duration_s * self.sample_rate if self.policy == "msclap" else len(wave)

    def prepare(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each waveform as the encoder will see it (input policy applied)."""
        self._check_lengths(waves)
        return [apply_policy(w, self.policy, self._input_length(w)) for w in waves]

    def _check_lengths(self, waves: Sequence[np.ndarray]) -> None:
        short = [i for i, w in enumerate(waves) if self._input_length(w) < MIN_NATIVE_SAMPLES]
        if short:
            raise InputError(f"waveforms {short[:8]} are shorter than {MIN_NATIVE_SAMPLES} samples "
                             f"({MIN_NATIVE_SAMPLES / self.sample_rate * 1000:.1f} ms), which the audio encoder "
                             "cannot frame; use longer segments or the 'msclap' input policy")

    def _run(self, encoder, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return encoder(x)[0].float().cpu().numpy()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The audio encoder, in the backbone's mode, on a ready (n, samples) array: ``encoder(x)[0]``.

        A compiled encoder always sees ``batch_size`` rows (a short batch is padded with silence and
        the padding dropped), so it compiles once per process instead of once per batch shape.
        """
        n = len(batch)
        if self.compile and self.batch_size and n < self.batch_size:
            batch = np.concatenate([batch, np.zeros((self.batch_size - n,) + batch.shape[1:], np.float32)])
        return self._run(self.encoder, batch)[:n]

    def forward_reference(self, batch: np.ndarray) -> np.ndarray:
        """msclap's own fp32 audio encoder: ``audio_encoder(x)[0]``, as msclap does."""
        return self._run(self.model.audio_encoder, batch)

    def embed_audio(self, waves: list[np.ndarray]) -> np.ndarray:
        """(n, dim) embeddings; inputs of one length are batched (``batch_size`` at most)."""
        return self._embed(waves, self.forward)

    def embed_audio_reference(self, waves: list[np.ndarray]) -> np.ndarray:
        """:meth:`embed_audio` through the fp32 reference encoder (for the agreement check)."""
        return self._embed(waves, self.forward_reference)

    def _embed(self, waves: list[np.ndarray], forward) -> np.ndarray:
        self._check_lengths(waves)
        out = np.empty((len(waves), self.dim), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            by_length.setdefault(self._input_length(w), []).append(i)
        step = self.batch_size or len(waves) or 1
        for n, idx in by_length.items():
            for s in range(0, len(idx), step):
                chunk = idx[s:s + step]
                batch = np.empty((len(chunk), n), dtype=np.float32)
                for row, i in zip(batch, chunk):
                    apply_policy(waves[i], self.policy, n, out=row)
                out[chunk] = forward(batch)
        return out

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        import torch

        if not prompts:
            raise InputError("no prompts to embed")
        limit = int(self.wrapper.args.text_len)
        suffix = " <|endoftext|>" if "gpt" in self.wrapper.args.text_model else ""
        too_long = [p for p in prompts if len(self.wrapper.tokenizer.encode(p + suffix)) > limit]
        if too_long:
            raise InputError(f"prompts longer than the text encoder's {limit} tokens: {too_long[:3]}; shorten them")
        with torch.inference_mode():
            return self.wrapper.get_text_embeddings(list(prompts)).float().cpu().numpy()


def load(name: str, *, weights: str | os.PathLike | None = None, device: str = "auto", policy: str = "msclap",
         batch_size: int | None = None, precision: str = "fp32", compile: bool = False) -> ClapBackbone:
    """Open ``msclap-2023`` / ``msclap-2022`` (the registry's factory; arguments already checked)."""
    from clapnb import fast

    avail = check_available(name, weights)
    device = resolve_device(device)
    resolved, reason = fast.resolve_precision(precision, device)
    ckpt = read_checkpoint(avail.weights) if avail.weights else None
    check_hf_environment()
    CLAP = import_msclap()
    version = name.split("-", 1)[1]
    try:
        with warnings.catch_warnings():
            # HTSAT's window attention calls torch.meshgrid without indexing= while it is built; the
            # warning is torch's note to msclap's authors and otherwise lands on every zero-shot page.
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release",
                                    category=UserWarning)
            wrapper = CLAP(model_fp=avail.weights, version=version, use_cuda=device == "cuda")
    except RuntimeError as exc:
        raise CheckpointError(f"{avail.weights}: msclap could not load it into the {name} model: "
                              f"{str(exc)[:1500]}") from exc
    except OSError as exc:
        raise BackboneUnavailableError(f"{name}: msclap could not fetch a file it needs ({exc}).\n"
                                       + _unavailable_message(name, avail.weights is None,
                                                              _missing_text_files(TEXT_MODELS[name]))) from exc
    path = str(Path(wrapper.model_fp).resolve())
    if ckpt is None:
        ckpt = read_checkpoint(path)
    compare_keys(wrapper.clap, ckpt["model"], path)
    from clapnb.standin import RANDOM_WEIGHTS_KEY

    random_weights = bool(ckpt.get(RANDOM_WEIGHTS_KEY, False))
    del ckpt
    return ClapBackbone(name=name, wrapper=wrapper, policy=policy, device=device,
                        fingerprint=weights_sha256(path), random_weights=random_weights,
                        weights_path=path, batch_size=batch_size, precision=resolved, compile=compile,
                        precision_requested=precision, precision_reason=reason)

