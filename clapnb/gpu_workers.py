"""One GPU per Dask worker: which device each worker of a LocalCluster gets, and the plugin that sets it.

A worker sees only its device (``CUDA_VISIBLE_DEVICES`` set in its process before its first job),
so ``device="auto"`` puts its backbone on ``cuda:0`` = its GPU, and N workers on N GPUs never
share one. More workers than GPUs are spread round-robin: several decoding processes per GPU
keep a fast backbone fed (issue 16 measured decoding, not the forward pass, as the GPU limit).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from distributed import WorkerPlugin


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else torch's device count."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def assign_devices(n_workers: int, gpus: Sequence[str]) -> list[str | None]:
    """Worker ``i``'s device: ``gpus[i % len(gpus)]`` (round-robin); None for every worker without GPUs."""
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0, got {n_workers}")
    return [gpus[i % len(gpus)] if gpus else None for i in range(n_workers)]


def worker_number(name: Any, address: str = "") -> int:
    """A LocalCluster worker's number (named 0, 1, ...; kept when its nanny restarts it); other names hash."""
    try:
        return int(name)
    except (TypeError, ValueError):
        return zlib.crc32(str(name if name is not None else address).encode())


class OneDevicePerWorker(WorkerPlugin):
    """Sets ``CUDA_VISIBLE_DEVICES`` to the worker's device (:func:`assign_devices` by worker number)."""

    name = "clapnb-one-device-per-worker"

    def __init__(self, gpus: Sequence[str]):
        if not gpus:
            raise ValueError("OneDevicePerWorker needs at least one GPU id")
        self.gpus = list(gpus)

    def device_of(self, name: Any, address: str = "") -> str:
        return self.gpus[worker_number(name, address) % len(self.gpus)]

    def setup(self, worker) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = self.device_of(worker.name, worker.address)


def worker_device() -> str | None:
    """This process's ``CUDA_VISIBLE_DEVICES`` (run on a worker: ``client.run(worker_device)``)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def one_device_per_worker(client, gpus: Sequence[str]) -> dict[str, str | None]:
    """Register the plugin on ``client``'s workers (and the ones that replace them); worker -> device."""
    client.register_plugin(OneDevicePerWorker(gpus), name=OneDevicePerWorker.name)
    return client.run(worker_device)
