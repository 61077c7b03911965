"""Backbones: turn mono 44.1 kHz waveforms into fixed-size embeddings (and prompts, for CLAP).

* ``msclap-2023`` / ``msclap-2022``: Microsoft CLAP through msclap's public ``CLAP(model_fp=...,
  version=..., use_cuda=...)``. Weights come from an explicit path, else ``$CLAPNB_WEIGHTS``, else
  msclap's own hub download; the text model (gpt2 / bert-base-uncased) comes from the Hugging Face
  cache or hub, exactly as msclap loads it.
* ``mfcc`` / ``gfcc``: hand-crafted summary-statistics baselines (the authors' earlier comparison);
  no text side, so zero-shot does not apply to them.

Audio never goes through msclap's ``read_audio`` (``torchaudio.load`` needs torchcodec, and it
lays stereo channels end to end); clapnb decodes, mixes and resamples itself (:mod:`clapnb.audio`)
and applies an explicit *input policy* here:

* ``msclap`` (default): what msclap's ``load_audio_into_tensor`` does, made deterministic. A
  waveform shorter than the model's duration (7 s for 2023, 5 s for 2022) is tiled to it; a longer
  one is cropped to it *centred* (msclap crops at an unseeded random offset, which cannot be
  reproduced). Feature baselines use the same 7-s rule so the comparison sees the same audio.
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
import socket
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np

from clapnb import io
from clapnb.audio import TARGET_SR
from clapnb.errors import ClapnbError, InputError

CLAP_NAMES = ("msclap-2023", "msclap-2022")
FEATURE_NAMES = ("mfcc", "gfcc")
NAMES = CLAP_NAMES + FEATURE_NAMES
POLICIES = ("msclap", "native")
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


@runtime_checkable
class Backbone(Protocol):
    """What :mod:`clapnb.embeddings`, zero-shot and the probe need from a model (see architecture.md)."""

    name: str
    dim: int
    sample_rate: int
    has_text: bool
    fingerprint: str
    random_weights: bool
    metadata: dict
    logit_scale: float | None

    def embed_audio(self, waves: list[np.ndarray]) -> np.ndarray: ...

    def embed_text(self, prompts: list[str]) -> np.ndarray: ...


class BackboneUnavailableError(ClapnbError):
    """Weights or text-model files are missing and cannot be downloaded here."""


class CheckpointError(InputError):
    """A weights file that is not a usable checkpoint for the requested model."""


class NoTextEncoderError(ClapnbError):
    """Zero-shot asked of a backbone that has no text side."""


# --- input policy ---------------------------------------------------------------------------

def apply_policy(wave: np.ndarray, policy: str, n_samples: int, out: np.ndarray | None = None) -> np.ndarray:
    """Fit one waveform to the model input under ``policy`` (see the module docstring).

    With ``out`` (a float32 row of the right length) the result is written there, saving a copy
    when a batch is assembled.
    """
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"a waveform must be 1-D mono, got shape {x.shape}")
    if len(x) == 0:
        raise InputError("cannot embed an empty waveform")
    if policy not in POLICIES:
        raise InputError(f"unknown input policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "native":
        n_samples = len(x)
    if out is None:
        out = np.empty(n_samples, dtype=np.float32)
    if policy == "native":
        out[:] = x
    elif len(x) <= n_samples:  # tile end to end, as msclap's torch repeat
        for k in range(0, n_samples, len(x)):
            out[k:k + len(x)] = x[:n_samples - k]
    else:  # centred crop (msclap crops at an unseeded random offset)
        start = (len(x) - n_samples) // 2
        out[:] = x[start:start + n_samples]
    return out


def _check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InputError(f"unknown input policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    import torch

    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return device


# --- where the files are --------------------------------------------------------------------

def hub_cache_dir() -> Path:
    """The Hugging Face hub cache that transformers/huggingface_hub use, from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline(timeout_s: float = 3.0) -> bool:
    """True when the hub cannot be used: offline mode is set or its host does not answer."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return False
    except OSError:
        return True


def _cached_file(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
    return found if isinstance(found, str) else None


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@dataclass(frozen=True)
class Availability:
    """Result of :func:`check_backbone_available`: what will be loaded from where."""

    name: str
    weights: str | None          # local checkpoint path; None means msclap downloads it
    weights_source: str          # 'argument', 'CLAPNB_WEIGHTS', 'hub cache', 'hub download', 'none'
    missing: tuple[str, ...] = ()  # human-readable missing items (empty when all present)


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
    cached = _cached_file(HUB_REPO, CHECKPOINT_FILES[name])
    return (cached, "hub cache") if cached else (None, "hub download")


def _missing_text_files(text_model: str) -> list[str]:
    missing = []
    for alternatives in TEXT_MODEL_FILES[text_model]:
        if not any(all(_cached_file(text_model, f) for f in alt) for alt in alternatives):
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
                  f"      fetch it on a connected machine: {_endpoint()}/{HUB_REPO}/resolve/main/{ckpt}",
                  "      then put it anywhere here and pass --weights PATH or export CLAPNB_WEIGHTS=PATH"]
    if text_missing:
        repo_dir = cache / f"models--{text_model}"
        files = sorted({f for item in TEXT_MODEL_FILES[text_model] for f in item[0]} | {"tokenizer_config.json"})
        lines += [f"  * text model '{text_model}' (msclap loads it with transformers.from_pretrained): "
                  f"missing {'; '.join(text_missing)} in {repo_dir}/snapshots/<revision>/",
                  f"      fetch on a connected machine: HF_HOME=/tmp/hf huggingface-cli download {text_model} "
                  + " ".join(files),
                  f"      (or the URLs {_endpoint()}/{text_model}/resolve/main/<file> for each of "
                  + ", ".join(files) + ")",
                  f"      then copy /tmp/hf/hub/models--{text_model} to {repo_dir} "
                  "(or point HF_HOME at a folder whose hub/ holds it)"]
    lines.append("For an offline plumbing check without the real model, `clapnb standin --out DIR` builds "
                 "random weights (their numbers are NOT CLAP results).")
    return "\n".join(lines)


def check_backbone_available(name: str, weights: str | os.PathLike | None = None) -> Availability:
    """Cheap check, before any long work, that :func:`load_backbone` can find everything.

    Raises :class:`BackboneUnavailableError` naming every missing file, where to put it and where
    to fetch it when the hub is unreachable; otherwise says where the weights will come from.
    """
    if name in FEATURE_NAMES:
        return Availability(name, None, "none")
    if name not in CLAP_NAMES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(NAMES)}")
    path, source = _resolve_weights(name, weights)
    text_missing = _missing_text_files(TEXT_MODELS[name])
    missing = ([f"{CHECKPOINT_FILES[name]}"] if path is None else []) + [
        f"{TEXT_MODELS[name]}: {m}" for m in text_missing]
    if missing and hub_offline():
        raise BackboneUnavailableError(_unavailable_message(name, path is None, text_missing))
    return Availability(name, path, source, tuple(missing))


# --- checkpoint inspection ------------------------------------------------------------------

def weights_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's bytes, remembered by (path, size, mtime) in the clapnb cache."""
    path = Path(path).resolve()
    st = path.stat()
    book = io.cache_dir() / "weights-sha256.json"
    try:
        known = io.read_json(book) if book.is_file() else {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(path))
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    digest = io.file_sha256(path)
    known[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        io.atomic_write_json(book, known)
    except OSError:
        pass  # a read-only cache only costs a rehash next time
    return digest


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a msclap-style checkpoint (``{'model': state_dict, ...}``) or raise :class:`CheckpointError`."""
    import torch

    path = Path(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that can be loaded safely ({exc}); "
                              "give the msclap weights file (e.g. CLAP_weights_2023.pth) or rebuild the "
                              "stand-in with `clapnb standin`") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict) or not obj["model"]:
        kind = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is a PyTorch file but not a msclap checkpoint: msclap expects "
                              f"{{'model': state_dict}}, this holds {kind}")
    bad = [k for k, v in obj["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: 'model' entries that are not tensors: {bad[:8]}")
    nonfinite = [k for k, v in obj["model"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(f"{path}: tensors with NaN or infinite values: {nonfinite[:8]}"
                              f"{' ...' if len(nonfinite) > 8 else ''}; the file is corrupt, fetch it again")
    return obj


def compare_keys(model, state_dict: dict, path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose keys differ from the model's (msclap loads with ``strict=False``).

    Non-persistent buffers of the model (e.g. GPT-2's causal-mask ``attn.bias`` that older
    transformers saved) may appear in a checkpoint and are ignored, as transformers itself does.
    """
    model_keys = set(model.state_dict())
    non_persistent = {n for n, _ in model.named_buffers()} - model_keys
    ckpt_keys = set(state_dict)
    missing = sorted(model_keys - ckpt_keys)
    unexpected = sorted(ckpt_keys - model_keys - non_persistent)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" ... ({len(keys)} in all)" if len(keys) > 10 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} model keys missing from the checkpoint: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint keys the model does not have: {show(unexpected)}")
        raise CheckpointError(f"{path} does not match the msclap model it was loaded for "
                              f"(msclap would silently keep random weights for the missing ones): "
                              + "; ".join(parts) + ". Check that --weights / $CLAPNB_WEIGHTS is the "
                              "checkpoint of the chosen --backbone version")


def _check_hf_environment() -> None:
    """huggingface_hub reads HF_HOME/HF_HUB_OFFLINE once, at import: refuse a stale view."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is None:
        return
    want = hub_cache_dir().resolve()
    have = Path(constants.HF_HUB_CACHE).expanduser().resolve()
    offline_env = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    if want != have or offline_env != bool(constants.HF_HUB_OFFLINE):
        raise ClapnbError(
            f"the Hugging Face settings changed after huggingface_hub was imported in this Python process "
            f"(it uses cache {have}, offline={constants.HF_HUB_OFFLINE}; the environment now says {want}, "
            f"offline={offline_env}); set HF_HOME / HF_HUB_OFFLINE before starting Python (e.g. the export "
            "lines printed by `clapnb standin`) or restart the kernel")


def import_msclap():
    """``msclap.CLAP``, imported without letting msclap silence warnings process-wide."""
    with warnings.catch_warnings():
        from msclap import CLAP
    return CLAP


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


def _load_clap(name: str, weights, device: str, policy: str, batch_size: int | None,
               precision: str = "fp32", compile: bool = False) -> ClapBackbone:
    from clapnb import fast

    avail = check_backbone_available(name, weights)
    device = resolve_device(device)
    resolved, reason = fast.resolve_precision(precision, device)
    ckpt = read_checkpoint(avail.weights) if avail.weights else None
    _check_hf_environment()
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


# --- feature baselines ----------------------------------------------------------------------

@dataclass(eq=False)
class FeatureBackbone:
    """MFCC or GFCC summary statistics: per coefficient and its delta, mean and std over time.

    * ``mfcc``: librosa, 20 MFCC from a 128-band mel spectrogram (n_fft 2048, hop 512 at 44.1 kHz)
      -> 80 dims.
    * ``gfcc``: spafe's GFCC (Jeevan et al.; gammatone filterbank on the ERB scale, Glasberg &
      Moore, cube-root compression, DCT), 64 filters from 50 Hz, 20 coefficients, same framing
      -> 80 dims. spafe is a maintained library, so no hand-written filterbank.
    """

    name: str
    policy: str = "msclap"
    duration_s: int = 7
    sample_rate: int = TARGET_SR
    n_coeffs: int = 20
    n_fft: int = 2048
    hop: int = 512
    has_text: bool = False
    random_weights: bool = False
    logit_scale: float | None = None
    dim: int = 0
    fingerprint: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dim = 4 * self.n_coeffs
        import librosa

        libs = {"librosa": librosa.__version__}
        if self.name == "gfcc":
            import spafe

            libs["spafe"] = getattr(spafe, "__version__", "0.3.3")
        config = {"name": self.name, "n_coeffs": self.n_coeffs, "n_fft": self.n_fft, "hop": self.hop,
                  "sample_rate": self.sample_rate, "libraries": libs}
        self.fingerprint = io.fingerprint([config])
        self.metadata = {**config, "dim": self.dim, "has_text": False, "policy": self.policy,
                         "input_duration_s": self.duration_s, "fingerprint": self.fingerprint,
                         "random_weights": False, "logit_scale": None, "weights_path": None}

    def _coefficients(self, x: np.ndarray) -> np.ndarray:
        """(n_coeffs, frames) for one waveform."""
        if self.name == "mfcc":
            import librosa

            return librosa.feature.mfcc(y=x, sr=self.sample_rate, n_mfcc=self.n_coeffs,
                                        n_fft=self.n_fft, hop_length=self.hop)
        from spafe.features.gfcc import gfcc
        from spafe.utils.preprocessing import SlidingWindow

        window = SlidingWindow(win_len=self.n_fft / self.sample_rate, win_hop=self.hop / self.sample_rate,
                               win_type="hamming")
        return gfcc(x.astype(np.float64), fs=self.sample_rate, num_ceps=self.n_coeffs, nfilts=64,
                    nfft=self.n_fft, window=window, low_freq=50).T

    def embed_audio(self, waves: list[np.ndarray]) -> np.ndarray:
        import librosa

        min_len = self.n_fft + 8 * self.hop  # the delta needs 9 frames
        rows = []
        for i, w in enumerate(waves):
            x = apply_policy(w, self.policy, self.duration_s * self.sample_rate)
            if len(x) < min_len:
                raise InputError(f"waveform {i} has {len(x)} samples; {self.name} needs at least {min_len} "
                                 f"({min_len / self.sample_rate:.2f} s): use longer segments or the 'msclap' policy")
            c = np.asarray(self._coefficients(x), dtype=np.float64)
            d = librosa.feature.delta(c, width=9, axis=-1)
            rows.append(np.concatenate([c.mean(1), c.std(1), d.mean(1), d.std(1)]))
        return np.asarray(rows, dtype=np.float32).reshape(len(waves), self.dim)

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        raise NoTextEncoderError(f"zero-shot needs a text encoder; {self.name} has none "
                                 "(use --backbone msclap-2023 for zero-shot, or train the linear probe on "
                                 f"{self.name} features)")


# --- entry points ---------------------------------------------------------------------------

def load_backbone(name: str, *, weights: str | os.PathLike | None = None, device: str = "auto",
                  policy: str = "msclap", batch_size: int | None = None, precision: str = "fp32",
                  compile: bool = False) -> Backbone:
    """Open a backbone by name (``msclap-2023``, ``msclap-2022``, ``mfcc``, ``gfcc``).

    ``weights``: CLAP checkpoint path; else ``$CLAPNB_WEIGHTS``; else msclap's hub download.
    ``batch_size``: largest forward batch inside :meth:`embed_audio` (None: the whole list).
    ``precision`` (fp32 | bf16 | auto) and ``compile``: the embedding mode of a CLAP backbone
    (:mod:`clapnb.fast`); fp32 without compile is the reference. ``auto`` means bf16 where the
    device computes it natively, else fp32 (``metadata['precision_reason']`` says which and why).
    """
    from clapnb.fast import PRECISIONS

    _check_policy(policy)
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if name in FEATURE_NAMES:
        if weights is not None:
            raise InputError(f"--weights does not apply to the {name} baseline (it has no weights)")
        if precision == "bf16" or compile:
            raise InputError(f"--precision bf16 / --compile apply to CLAP backbones only; the {name} baseline "
                             "has no neural network (use --precision fp32 or auto)")
        return FeatureBackbone(name=name, policy=policy)
    if name in CLAP_NAMES:
        return _load_clap(name, weights, device, policy, batch_size, precision, compile)
    raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(NAMES)}")


def backbone_from_metadata(meta: dict, device: str = "auto") -> Backbone:
    """Reopen the backbone an embedding set was computed with, and check it is the same one."""
    meta = dict(meta.get("backbone", meta))
    name = meta.get("name")
    if name not in NAMES:
        raise InputError(f"embedding metadata names no known backbone ({name!r})")
    weights = meta.get("weights_path") if name in CLAP_NAMES else None
    if weights is not None and not Path(weights).is_file():
        raise InputError(f"the weights these embeddings were computed with, {weights}, are gone; "
                         "put the file back or recompute with `clapnb embed`")
    policy = meta.get("policy", "msclap")
    if meta.get("fingerprint"):  # check before the (slow) model load
        now = weights_sha256(weights) if weights else FeatureBackbone(name=name, policy=policy).fingerprint
        if now != meta["fingerprint"]:
            raise InputError(f"{name} now has fingerprint {now}, but the embeddings were computed with "
                             f"{meta['fingerprint']}: the weights or feature code changed; recompute with "
                             "`clapnb embed`")
    from clapnb.fast import Mode

    mode = Mode.parse(meta.get("precision", "fp32")) if name in CLAP_NAMES else Mode()
    return load_backbone(name, weights=weights, device=device, policy=policy, precision=mode.precision,
                         compile=mode.compile)

