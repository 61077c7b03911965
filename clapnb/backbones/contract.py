"""The contract every registered backbone keeps, as one function (like scikit-learn's estimator checks).

:func:`check_backbone` raises ``AssertionError`` naming the broken rule. The test suite runs it on
every entry of :data:`clapnb.backbones.REGISTRY`; a new backbone's author runs it on theirs:

    from clapnb.backbones import contract, load_backbone
    contract.check_backbone(load_backbone("mine"), variant=load_backbone("mine", weights=OTHER))

What it checks: the protocol's attributes and the metadata keys of ``docs/architecture.md`` (and
that they agree with each other and with the registry entry); ``(n, dim)`` float32 finite output;
determinism; batch-size invariance; distinct inputs give distinct embeddings; the metadata survives
JSON and reopens the same backbone through ``backbone_from_metadata`` (and a changed fingerprint is
refused); ``variant`` (other weights or feature configuration) has another fingerprint and so
another cache namespace; ``has_text``: text embeddings of the right shape, or ``embed_text``
raises :class:`NoTextEncoderError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from clapnb.backbones.base import Backbone, NoTextEncoderError
from clapnb.errors import InputError

#: Metadata keys every backbone records (docs/architecture.md, "Backbone protocol").
REQUIRED_METADATA = ("name", "dim", "sample_rate", "has_text", "policy", "input_duration_s", "fingerprint",
                     "random_weights", "logit_scale", "weights_path", "display_name", "kind", "notice", "options")


def probe_waves(sample_rate: int, seconds: Sequence[float] = (0.6, 1.1), seed: int = 0) -> list[np.ndarray]:
    """Short, distinct test inputs: a seeded noise floor under a tone of a different pitch each."""
    rng = np.random.default_rng(seed)
    waves = []
    for k, s in enumerate(seconds):
        t = np.arange(int(s * sample_rate)) / sample_rate
        tone = 0.3 * np.sin(2 * np.pi * (300 + 700 * k) * t * (1 + 0.5 * t))
        waves.append((tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32))
    return waves


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def check_backbone(backbone: Backbone, *, variant: Backbone | None = None,
                   waves: Sequence[np.ndarray] | None = None, device: str = "cpu",
                   rtol: float = 1e-4, atol: float = 1e-5, reopen: bool = True) -> None:
    """Run every contract check on ``backbone`` (see the module docstring)."""
    from clapnb import backbones, embeddings

    name = backbone.name
    assert isinstance(backbone, Backbone), f"{name}: does not have the Backbone protocol's attributes"
    assert name in backbones.REGISTRY, f"{name}: not in the registry"
    spec = backbones.REGISTRY[name]
    meta = backbone.metadata
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    assert not missing, f"{name}: metadata lacks {missing}"
    for key in ("name", "dim", "sample_rate", "has_text", "fingerprint", "random_weights"):
        assert meta[key] == getattr(backbone, key), f"{name}: metadata[{key!r}]={meta[key]!r} but attribute is " \
                                                    f"{getattr(backbone, key)!r}"
    assert backbone.has_text == spec.has_text, f"{name}: has_text differs from its registry entry"
    assert meta["policy"] in spec.policies, f"{name}: policy {meta['policy']!r} not among {spec.policies}"
    assert isinstance(backbone.dim, int) and backbone.dim > 0, f"{name}: dim {backbone.dim!r}"
    assert isinstance(backbone.fingerprint, str) and backbone.fingerprint, f"{name}: empty fingerprint"
    try:
        text = json.dumps(meta, sort_keys=True)
    except TypeError as exc:
        raise AssertionError(f"{name}: metadata is not JSON-serialisable ({exc})") from exc

    waves = list(waves) if waves is not None else probe_waves(backbone.sample_rate)
    E = backbone.embed_audio(list(waves))
    assert isinstance(E, np.ndarray) and E.shape == (len(waves), backbone.dim), \
        f"{name}: embed_audio returned {getattr(E, 'shape', type(E))}, expected {(len(waves), backbone.dim)}"
    assert E.dtype == np.float32, f"{name}: dtype {E.dtype}, expected float32"
    assert np.isfinite(E).all(), f"{name}: NaN or infinite embeddings"
    assert _close(backbone.embed_audio(list(waves)), E, 1e-6, 1e-7), f"{name}: not deterministic"
    singles = np.concatenate([backbone.embed_audio([w]) for w in waves])
    assert _close(singles, E, rtol, atol), f"{name}: batch of {len(waves)} differs from one at a time"
    for i in range(len(waves)):
        for j in range(i + 1, len(waves)):
            assert not np.allclose(E[i], E[j], rtol=1e-3, atol=1e-6), f"{name}: inputs {i} and {j} embed alike"

    if backbone.has_text:
        T = backbone.embed_text(["this is the sound of a dog barking", "this is the sound of rain"])
        assert T.shape == (2, backbone.dim) and np.isfinite(T).all(), f"{name}: text embeddings {T.shape}"
        assert backbone.logit_scale is None or float(backbone.logit_scale) > 0, f"{name}: logit_scale"
    else:
        try:
            backbone.embed_text(["this is the sound of a dog barking"])
        except NoTextEncoderError:
            pass
        else:
            raise AssertionError(f"{name}: has_text is False but embed_text did not raise NoTextEncoderError")
        assert backbone.logit_scale is None, f"{name}: no text side but a logit_scale"

    if reopen:
        recorded = json.loads(text)
        again = backbones.backbone_from_metadata({"backbone": recorded}, device=device)
        assert again.name == name and again.fingerprint == backbone.fingerprint, f"{name}: reopened differently"
        assert again.metadata["policy"] == meta["policy"], f"{name}: reopened with another policy"
        assert again.metadata.get("options") == meta.get("options"), f"{name}: reopened with other options"
        assert _close(again.embed_audio(list(waves[:1])), E[:1], rtol, atol), f"{name}: reopened embeds differently"
        try:
            backbones.backbone_from_metadata({**recorded, "fingerprint": "0" * 16}, device=device)
        except InputError as exc:
            assert "fingerprint" in str(exc), f"{name}: refusal does not name the fingerprint: {exc}"
        else:
            raise AssertionError(f"{name}: metadata with another fingerprint was not refused")

    if variant is not None:
        assert variant.name == name, f"{name}: the variant is {variant.name}"
        assert variant.fingerprint != backbone.fingerprint, \
            f"{name}: other weights / feature configuration but the same fingerprint"
        ns = [embeddings.cache_namespace(b.metadata, None) for b in (backbone, variant)]
        assert ns[0] != ns[1], f"{name}: the variant would share the embedding cache"
