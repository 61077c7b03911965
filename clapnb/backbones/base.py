"""What every backbone shares: the :class:`Backbone` protocol, its errors, the registry entry
(:class:`BackboneSpec`), the msclap-style input policy and the device choice.

Nothing here imports torch or a model library: ``clapnb --help`` builds every ``--backbone``
choice from the registry without loading one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from clapnb.errors import ClapnbError, InputError

#: Input policies of the CLAP and feature backbones (see :func:`apply_policy`).
POLICIES = ("msclap", "native")
DEVICES = ("auto", "cpu", "cuda")
#: Requested precisions of the embedding modes (:mod:`clapnb.fast`); only CLAP backbones take bf16.
PRECISIONS = ("fp32", "bf16", "auto")


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
    """Weights, text-model files or an optional package are missing and cannot be fetched here."""


class CheckpointError(InputError):
    """A weights file that is not a usable checkpoint for the requested model."""


class NoTextEncoderError(ClapnbError):
    """Zero-shot asked of a backbone that has no text side."""


@dataclass(frozen=True)
class Availability:
    """Result of an availability check: what will be loaded from where."""

    name: str
    weights: str | None          # local weights path; None means it is downloaded (or there are none)
    weights_source: str          # 'argument', 'CLAPNB_WEIGHTS', 'hub cache', 'hub download', 'package', 'none'
    missing: tuple[str, ...] = ()  # human-readable missing items (empty when all present)


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: how to open a backbone and what a command may ask of it.

    ``factory`` and ``check`` are callables or ``"module:function"`` strings, imported only when
    used. ``factory(name, *, weights, device, policy, batch_size, precision, compile, **options)``
    returns a :class:`Backbone`; ``check(name, weights)`` returns an :class:`Availability` or
    raises :class:`BackboneUnavailableError` naming what is missing.
    """

    name: str
    factory: str | Callable[..., Any]
    display_name: str
    kind: str                                 # 'clap' | 'features' | 'pretrained' (a network without text)
    has_text: bool
    check: str | Callable[..., Availability] | None = None   # None: always available
    policies: tuple[str, ...] = POLICIES
    default_policy: str = "msclap"
    precision_modes: bool = False             # takes --precision bf16 / --compile (clapnb.fast)
    uses_weights: bool = False                # takes --weights PATH
    weights_help: str = ""
    notice: str = ""                          # shown wherever its numbers appear (licence, "not CLAP")
    extra: str | None = None                  # pip extra that installs what it needs
    options: dict = field(default_factory=dict)  # backbone-specific load options and their defaults
    policy_help: str = "msclap = repeat/centre-crop to the model's input length, native = as is"

    @property
    def is_clap(self) -> bool:
        return self.kind == "clap"


def resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """A ``"module:function"`` reference as the callable (callables pass through)."""
    if callable(ref):
        return ref
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# --- input policy ---------------------------------------------------------------------------

def check_policy(policy: str, allowed: tuple[str, ...] = POLICIES, name: str | None = None) -> str:
    if policy not in allowed:
        who = f" for {name}" if name else ""
        raise InputError(f"unknown input policy {policy!r}{who}; choose one of {', '.join(allowed)}")
    return policy


def apply_policy(wave: np.ndarray, policy: str, n_samples: int, out: np.ndarray | None = None) -> np.ndarray:
    """Fit one waveform to the model input under ``policy``.

    ``msclap``: shorter than ``n_samples`` -> tiled end to end (msclap's torch repeat); longer ->
    cropped *centred* (msclap crops at an unseeded random offset, which cannot be reproduced).
    ``native``: the waveform as it is. With ``out`` (a float32 row of the right length) the
    result is written there, saving a copy when a batch is assembled.
    """
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"a waveform must be 1-D mono, got shape {x.shape}")
    if len(x) == 0:
        raise InputError("cannot embed an empty waveform")
    check_policy(policy)
    if policy == "native":
        n_samples = len(x)
    if out is None:
        out = np.empty(n_samples, dtype=np.float32)
    if policy == "native":
        out[:] = x
    elif len(x) <= n_samples:
        for k in range(0, n_samples, len(x)):
            out[k:k + len(x)] = x[:n_samples - k]
    else:
        start = (len(x) - n_samples) // 2
        out[:] = x[start:start + n_samples]
    return out


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    import torch  # heavy: only a torch backbone asks

    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return device
