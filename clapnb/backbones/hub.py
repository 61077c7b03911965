"""Where weights come from and whether a file is what it claims: the Hugging Face hub cache and
reachability, checkpoint hashing (remembered by path, size and mtime), safe checkpoint reading and
the key comparison msclap's ``strict=False`` load leaves out.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from clapnb import io
from clapnb.backbones.base import CheckpointError
from clapnb.errors import ClapnbError, torch_load_reason


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache that transformers/huggingface_hub use, from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(xdg).expanduser() / "huggingface" / "hub"



def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline(timeout_s: float = 3.0) -> bool:
    """True when the hub cannot be used: offline mode is set or its host does not answer."""
    if env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE"):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return False
    except OSError:
        return True


def cached_file(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
    return found if isinstance(found, str) else None


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")



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


def _has_nonfinite(t) -> bool:
    """Whether a floating tensor holds NaN or an infinity, in one cheap pass for the usual answer (no).

    A sum is finite only if every element is (NaN and infinities propagate), so a finite sum settles
    it without the element-wise mask that costs ~5x more over a 200-MB checkpoint; a non-finite sum
    (a bad value, or an overflow of finite ones) is settled by the exact test.
    """
    import torch

    if not t.is_floating_point():
        return False
    return not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all())


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
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that can be loaded safely "
                              f"({torch_load_reason(exc)}); it may be damaged or not a checkpoint at all: give "
                              "the msclap weights file (e.g. CLAP_weights_2023.pth) or rebuild the "
                              "stand-in with `clapnb standin`") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict) or not obj["model"]:
        kind = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is a PyTorch file but not a msclap checkpoint: msclap expects "
                              f"{{'model': state_dict}}, this holds {kind}")
    bad = [k for k, v in obj["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: 'model' entries that are not tensors: {bad[:8]}")
    nonfinite = [k for k, v in obj["model"].items() if _has_nonfinite(v)]
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



def check_hf_environment() -> None:
    """huggingface_hub reads HF_HOME/HF_HUB_OFFLINE once, at import: refuse a stale view."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is None:
        return
    want = hub_cache_dir().resolve()
    have = Path(constants.HF_HUB_CACHE).expanduser().resolve()
    offline_env = env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE")
    if want != have or offline_env != bool(constants.HF_HUB_OFFLINE):
        raise ClapnbError(
            f"the Hugging Face settings changed after huggingface_hub was imported in this Python process "
            f"(it uses cache {have}, offline={constants.HF_HUB_OFFLINE}; the environment now says {want}, "
            f"offline={offline_env}); set HF_HOME / HF_HUB_OFFLINE before starting Python (e.g. the export "
            "lines printed by `clapnb standin`) or restart the kernel")


