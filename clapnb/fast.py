"""Fast embedding modes for msclap's audio encoder: bf16 autocast and ``torch.compile``.

On a CPU the audio encoder's forward pass is ~97 % of a sweep's cost, so only a faster forward
makes clapnb faster. A *mode* is a precision (``fp32`` or ``bf16``) plus an optional
``torch.compile``; ``fp32`` without compile is the reference and runs msclap's module untouched.
Every other mode runs on a *copy* of the audio encoder (the original stays in the model, fp32, as
the reference for :mod:`clapnb.agreement`), changed per instance at load time, never by editing
the installed msclap/torchlibrosa:

* **FFT front-end**: torchlibrosa's ``Spectrogram`` computes the STFT as two convolutions with
  513x1024 DFT kernels; :func:`use_fft_frontend` makes that instance compute the same power
  spectrogram with ``torch.stft`` (same window, read from the conv kernel itself; same reflect
  padding and framing), equal up to float rounding and ~5x faster.
* **No attention-map bookkeeping**: in eval mode HTSAT's ``BasicLayer`` concatenates and averages
  every block's attention map, which is read only when ``htsat_attn_heatmap`` is on (it is off in
  msclap's config). :func:`skip_attention_maps` drops that work; the embeddings are bit-identical.
* **bf16**: the encoder runs under ``torch.autocast(dtype=bfloat16)``.

What runs in which precision in mode ``bf16``:

===========================================  ======================================================
fp32 (autocast disabled)                     waveform -> STFT power -> mel filterbank -> dB (the
                                             front-end); ``bn0``, the bicubic stretch to 1024
                                             frames; the projection head (Linear-GELU-Linear-
                                             LayerNorm) that makes the 1024-d embedding
bf16 (autocast)                              patch embedding, the Swin blocks (window attention,
                                             MLPs, patch merging), the final norm, the token-
                                             semantic conv. On a CPU, autocast runs softmax and
                                             LayerNorm in bf16 too (it keeps their input dtype);
                                             on CUDA it runs them, and reductions, in fp32
fp32 always                                  the text encoder (21 prompts: not worth it)
===========================================  ======================================================

``torch.compile`` (inductor, ``freezing`` on: weights become constants, layouts pre-packed) costs
about a minute per input shape on a CPU, so a compiled backbone pads every batch to its batch
size: one shape, one compilation per process. Compiled fp32 is not bit-identical to eager fp32
(fused kernels round differently), so it is its own mode too: the cache never mixes modes.

``auto`` picks bf16 only where the hardware computes it natively (:func:`resolve_precision`).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from clapnb.backbones.base import PRECISIONS  # noqa: F401  (one list for the CLI, the sweep and here)
from clapnb.errors import InputError

#: CPU flags (``/proc/cpuinfo``) meaning native bf16 arithmetic: AVX-512 BF16, AMX (x86), BF16 (Arm).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "bf16")
#: Where ``/proc/cpuinfo`` is missing: torch's own CPU probes, by the flag they stand for.
_TORCH_CPU_PROBES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}
#: Ampere (8.0) and later compute bf16 natively; older GPUs only emulate it.
CUDA_BF16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Mode:
    """A resolved embedding mode: ``precision`` (fp32|bf16) and ``compile``."""

    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise InputError(f"precision {self.precision!r} is not a resolved precision; use fp32 or bf16")

    @property
    def name(self) -> str:
        """``fp32``, ``bf16``, ``fp32+compile`` or ``bf16+compile``: the cache key's ``precision``."""
        return self.precision + ("+compile" if self.compile else "")

    @property
    def is_reference(self) -> bool:
        return self.precision == "fp32" and not self.compile

    @classmethod
    def parse(cls, name: str) -> "Mode":
        """Inverse of :attr:`name` (as recorded in embedding metadata)."""
        precision, _, rest = str(name).partition("+")
        if rest not in ("", "compile") or precision not in ("fp32", "bf16"):
            raise InputError(f"unknown embedding mode {name!r}; expected fp32, bf16, fp32+compile or bf16+compile")
        return cls(precision, rest == "compile")


# --- choosing the precision -------------------------------------------------------------------

def cpu_flags(cpuinfo: str | os.PathLike | None = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of this machine: from ``cpuinfo``, else (no such file, or None) the
    bf16-related ones that torch's CPU probes report."""
    if cpuinfo is not None:
        try:
            with open(cpuinfo, encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() in ("flags", "Features"):  # x86 | Arm
                        return frozenset(value.split())
        except OSError:
            pass
    probes = {flag: getattr(torch.cpu, fn, None) for flag, fn in _TORCH_CPU_PROBES.items()}
    return frozenset(flag for flag, probe in probes.items() if probe is not None and probe())


def cuda_capability() -> tuple[int, int] | None:
    """Compute capability of the current CUDA device, or None without one."""
    return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None


def bf16_native(device: str, *, flags: Iterable[str] | None = None,
                capability: tuple[int, int] | None = None) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and the evidence, in words.

    ``flags`` / ``capability`` default to this machine's; pass them to ask about another one
    (the tests simulate machines this way).
    """
    if device == "cuda":
        capability = cuda_capability() if capability is None else tuple(capability)
        if capability is None:
            return False, "no CUDA device"
        ok = capability >= CUDA_BF16_CAPABILITY
        return ok, (f"CUDA compute capability {capability[0]}.{capability[1]} "
                    f"{'>=' if ok else '<'} {CUDA_BF16_CAPABILITY[0]}.{CUDA_BF16_CAPABILITY[1]}")
    flags = cpu_flags() if flags is None else frozenset(flags)
    have = sorted(f for f in CPU_BF16_FLAGS if f in flags)
    if have:
        return True, f"CPU flags {', '.join(have)}"
    return False, f"CPU lacks all of {', '.join(CPU_BF16_FLAGS)}"


def resolve_precision(requested: str, device: str, *, flags: Iterable[str] | None = None,
                      capability: tuple[int, int] | None = None) -> tuple[str, str]:
    """``(precision, reason)``: ``auto`` -> bf16 where :func:`bf16_native`, else fp32."""
    if requested not in PRECISIONS:
        raise InputError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        native, why = bf16_native(device, flags=flags, capability=capability) if requested == "bf16" else (True, "")
        if not native:
            return requested, f"asked for; NOT native on this {device} ({why}): emulated, likely slower than fp32"
        return requested, "asked for" + (f" ({why})" if why else "")
    native, why = bf16_native(device, flags=flags, capability=capability)
    return ("bf16", f"auto: native bf16 ({why})") if native else ("fp32", f"auto: fp32 because {why}")


# --- per-instance module replacements ---------------------------------------------------------

@functools.cache
def _derived(cls: type, name: str, forward: Callable) -> type:
    """A subclass of ``cls`` with another ``forward`` (state dict, parameters and repr unchanged)."""
    return type(f"{name}{cls.__name__}", (cls,), {"forward": forward, "__module__": __name__})


def _swap_forward(module: nn.Module, name: str, forward: Callable) -> nn.Module:
    module.__class__ = _derived(type(module), name, forward)
    return module


def _fft_spectrogram_forward(self, input: torch.Tensor) -> torch.Tensor:
    """torchlibrosa ``Spectrogram.forward`` through ``torch.stft``, always in fp32."""
    stft = self.stft
    with torch.autocast(device_type=input.device.type, enabled=False):
        z = torch.stft(input.float(), n_fft=stft.n_fft, hop_length=stft.hop_length, window=self.fft_window,
                       center=stft.center, pad_mode=stft.pad_mode, return_complex=True)
        spectrogram = (z.real ** 2 + z.imag ** 2).transpose(1, 2)[:, None]  # (batch, 1, frames, bins)
        if self.power != 2.0:
            spectrogram = spectrogram ** (self.power / 2.0)
    return spectrogram


def _is_torchlibrosa_spectrogram(m: nn.Module) -> bool:
    return any(c.__module__ == "torchlibrosa.stft" and c.__name__ == "Spectrogram" for c in type(m).__mro__)


def use_fft_frontend(encoder: nn.Module) -> int:
    """Make every torchlibrosa ``Spectrogram`` in ``encoder`` use ``torch.stft``; returns how many.

    The window is row 0 of the real DFT kernel (the DFT's k = 0 row is all ones, so that row *is*
    the window), so nothing about the window is assumed.
    """
    n = 0
    for m in encoder.modules():
        if _is_torchlibrosa_spectrogram(m) and "fft_window" not in m._buffers:
            window = m.stft.conv_real.weight.detach()[0, 0].clone().float()
            m.register_buffer("fft_window", window, persistent=False)
            _swap_forward(m, "FFT", _fft_spectrogram_forward)
            n += 1
    return n


def _forward_without_attention_maps(self, x):
    """HTSAT ``BasicLayer.forward`` in eval mode, minus the unused attention-map average."""
    if self.training or self.use_checkpoint:
        return type(self).__mro__[1].forward(self, x)
    for blk in self.blocks:
        x, _ = blk(x)
    if self.downsample is not None:
        x = self.downsample(x)
    return x, None


def skip_attention_maps(encoder: nn.Module) -> int:
    """Drop HTSAT's eval-mode attention-map averaging where ``htsat_attn_heatmap`` is off; returns layers changed."""
    n = 0
    for m in encoder.modules():
        cfg = getattr(m, "config", None)
        if type(m).__name__ != "HTSAT_Swin_Transformer" or getattr(cfg, "htsat_attn_heatmap", True):
            continue
        for layer in m.layers:
            if type(layer).__name__ == "BasicLayer":
                _swap_forward(layer, "AttentionMapFree", _forward_without_attention_maps)
                n += 1
    return n


def _fp32_forward(self, *args):
    """The parent class's forward with autocast off and floating inputs in fp32."""
    device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    args = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    with torch.autocast(device_type=device, enabled=False):
        return type(self).__mro__[1].forward(self, *args)


def keep_fp32(module: nn.Module) -> nn.Module:
    """Run ``module`` in fp32 even inside an autocast region."""
    return _swap_forward(module, "FP32", _fp32_forward)


def _is_torchlibrosa_logmel(m: nn.Module) -> bool:
    return any(c.__module__ == "torchlibrosa.stft" and c.__name__ == "LogmelFilterBank" for c in type(m).__mro__)


class Autocast(nn.Module):
    """``module`` under ``torch.autocast(dtype)``; outputs cast back to fp32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor):
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.module(x)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def inference_copy(module: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free deep copy of ``module`` (the original stays untouched)."""
    # HTSAT keeps msclap's config *module* as an attribute: share it, deepcopy cannot copy modules
    shared = {id(v): v for m in module.modules() for v in vars(m).values() if isinstance(v, ModuleType)}
    out = copy.deepcopy(module, memo=shared).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def fast_audio_encoder(audio_encoder: nn.Module, mode: Mode) -> nn.Module:
    """An eval-mode copy of msclap's ``AudioEncoder`` running in ``mode`` (see the module docstring).

    The returned module is called like the original (``module(x)[0]`` is the embedding);
    ``audio_encoder`` itself is left as it is (the fp32 reference).
    """
    if mode.is_reference:
        return audio_encoder
    fast = inference_copy(audio_encoder)
    use_fft_frontend(fast)
    skip_attention_maps(fast)
    module: nn.Module = fast
    if mode.precision == "bf16":
        for m in fast.modules():
            if _is_torchlibrosa_logmel(m):
                keep_fp32(m)
        if hasattr(fast, "projection"):
            keep_fp32(fast.projection)
        module = Autocast(fast, torch.bfloat16)
    if mode.compile:
        module = torch.compile(module, dynamic=False, options={"freezing": True})
    return module
