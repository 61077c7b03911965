"""One GPU per Dask worker: the assignment (pure) and the visible devices (the LocalCluster part is in test_dask)."""

from __future__ import annotations

import pytest

from clapnb import gpu_workers


def test_workers_get_one_device_each_round_robin_beyond_the_gpus():
    assert gpu_workers.assign_devices(2, ["0", "1"]) == ["0", "1"]
    assert gpu_workers.assign_devices(5, ["0", "1"]) == ["0", "1", "0", "1", "0"]
    assert gpu_workers.assign_devices(3, ["GPU-a"]) == ["GPU-a"] * 3
    assert gpu_workers.assign_devices(2, []) == [None, None]
    with pytest.raises(ValueError):
        gpu_workers.assign_devices(-1, ["0"])
    plugin = gpu_workers.OneDevicePerWorker(["2", "3"])
    assert [plugin.device_of(name) for name in (0, 1, 2, "3")] == ["2", "3", "2", "3"]
    assert plugin.device_of("worker-x") == plugin.device_of("worker-x")  # stable for any name
    with pytest.raises(ValueError):
        gpu_workers.OneDevicePerWorker([])


def test_visible_gpus_follow_cuda_visible_devices():
    assert gpu_workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert gpu_workers.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu_workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    import torch

    expected = [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    assert gpu_workers.visible_gpus({}) == expected
