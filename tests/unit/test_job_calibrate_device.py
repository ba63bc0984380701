"""calibrate.calibration_device: calibration runs on the GPU the pod holds when this Paddle can use
one, on the CPU otherwise (issue 17 item 5). The probes are monkeypatched: this machine's Paddle is
a CPU build, so only the last test asks the real probes."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import paddle
import pytest

from kubeslim_job import calibrate

pytestmark = pytest.mark.unit


def _probes(monkeypatch, *, cuda_build: bool, gpus: int) -> list[str]:
    """Patch both probes; returns the list of probes the choice consulted, in order."""
    asked: list[str] = []

    def compiled_with_cuda() -> bool:
        asked.append("is_compiled_with_cuda")
        return cuda_build

    def device_count() -> int:
        asked.append("device_count")
        if not cuda_build:      # a CPU build has no CUDA runtime to ask
            raise RuntimeError("device_count asked of a build without CUDA")
        return gpus

    monkeypatch.setattr(paddle, "is_compiled_with_cuda", compiled_with_cuda)
    monkeypatch.setattr(paddle.device.cuda, "device_count", device_count)
    return asked


def test_a_cuda_build_that_sees_a_gpu_calibrates_on_gpu_0(monkeypatch):
    _probes(monkeypatch, cuda_build=True, gpus=2)
    assert calibrate.calibration_device() == "gpu:0"


def test_a_cuda_build_on_a_node_without_a_gpu_calibrates_on_the_cpu(monkeypatch):
    asked = _probes(monkeypatch, cuda_build=True, gpus=0)
    assert calibrate.calibration_device() == "cpu"
    assert asked == ["is_compiled_with_cuda", "device_count"]


def test_a_cpu_build_calibrates_on_the_cpu_without_asking_for_gpus(monkeypatch):
    asked = _probes(monkeypatch, cuda_build=False, gpus=1)
    assert calibrate.calibration_device() == "cpu"
    assert asked == ["is_compiled_with_cuda"]


def test_a_cpu_build_asked_for_real_says_cpu():
    """The real probes, unpatched: they exist under these names in this Paddle and a CPU build says cpu."""
    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle is a CUDA build; the patched tests cover the choice")
    assert calibrate.calibration_device() == "cpu"
