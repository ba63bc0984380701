"""spec.verification.backend against what the pod's Paddle can use (inference.choose_backend), and
the export stage refusing a GPU request the pod cannot meet before it touches S3: the GPU image runs
on nodes without a GPU, and, built from PyPI alone, without TensorRT (issue 18 item 3)."""
from __future__ import annotations

import json

import pytest

from kubeslim_api.contract import decode
from kubeslim_api.spec import parse_spec
from kubeslim_job import cli, export, inference
from kubeslim_job.errors import BadInput
from kubeslim_job.inference import CPU_ONEDNN, GPU_TENSORRT, NO_GPU, NO_TENSORRT, Accelerator

CPU_BUILD = Accelerator(cuda=None)
NO_DEVICE = Accelerator(cuda="11.8", gpus=0, tensorrt_error="RuntimeError: (NotFound) TensorRT is needed")
GPU_NO_TRT = Accelerator(cuda="11.8", gpus=1, tensorrt_error="RuntimeError: (NotFound) TensorRT is needed")
GPU_TRT = Accelerator(cuda="11.8", gpus=2, tensorrt="8.5.3")


@pytest.mark.parametrize("requested, acc, backend", [
    ("cpu", GPU_TRT, CPU_ONEDNN),
    ("cpu", CPU_BUILD, CPU_ONEDNN),
    ("auto", GPU_TRT, GPU_TENSORRT),
    ("auto", GPU_NO_TRT, CPU_ONEDNN),     # a GPU without TensorRT has no int8 kernels: the CPU's are real
    ("auto", NO_DEVICE, CPU_ONEDNN),
    ("auto", CPU_BUILD, CPU_ONEDNN),
    ("gpu", GPU_TRT, GPU_TENSORRT),
    ("tensorrt", GPU_TRT, GPU_TENSORRT),
])
def test_the_backend_that_runs(requested, acc, backend):
    assert inference.choose_backend(requested, acc) == backend


@pytest.mark.parametrize("requested, acc, reason, says", [
    ("gpu", CPU_BUILD, NO_GPU, "CPU build"),
    ("tensorrt", CPU_BUILD, NO_GPU, "CPU build"),
    ("gpu", NO_DEVICE, NO_GPU, "CUDA 11.8 sees 0 devices"),
    ("tensorrt", NO_DEVICE, NO_GPU, "request spec.resources.gpu"),
    ("gpu", GPU_NO_TRT, NO_TENSORRT, "(RuntimeError: (NotFound) TensorRT is needed)"),
    ("tensorrt", GPU_NO_TRT, NO_TENSORRT, "TensorRT 8"),
])
def test_a_gpu_request_that_cannot_be_met_says_what_is_missing(requested, acc, reason, says):
    with pytest.raises(BadInput) as ei:
        inference.choose_backend(requested, acc)
    assert ei.value.reason == reason and ei.value.exit_code == 3
    msg = ei.value.message
    assert msg.startswith(f"spec.verification.backend is {requested} but ") and says in msg
    assert "spec.verification.backend to auto or cpu" in msg


def test_this_venvs_cpu_paddle_is_a_cpu_build():
    """The real probes: the dev venv's Paddle is the CPU wheel (the GPU image's are tested in it)."""
    import paddle

    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle is a CUDA build")
    assert inference.accelerator() == CPU_BUILD


class _Untouchable:
    """Storage that fails the test if the stage reads or writes anything."""
    bytes_read = 0

    def __getattr__(self, name):
        raise AssertionError(f"storage.{name} used before the backend was checked")


SPEC = {
    "model": {"builtin": {"architecture": "lenet", "numClasses": 10}, "inputShape": [1, 28, 28]},
    "data": {"calibration": {"uri": "s3://d/train.npz", "format": "npz"},
             "evaluation": {"uri": "s3://d/val.npz", "format": "npz"}},
    "output": {"uri": "s3://m/out/"},
}


@pytest.mark.parametrize("acc, reason", [(None, NO_GPU), (NO_DEVICE, NO_GPU), (GPU_NO_TRT, NO_TENSORRT)])
def test_export_refuses_a_gpu_backend_before_touching_s3(tmp_path, monkeypatch, acc, reason):
    # acc None: this venv's real Paddle (a CPU build).
    if acc is not None:
        monkeypatch.setattr(inference, "accelerator", lambda: acc)
    monkeypatch.setattr("kubeslim_job.storage.Storage.from_spec", classmethod(lambda cls, spec: _Untouchable()))
    monkeypatch.setenv(cli.SPEC_ENV, json.dumps({**SPEC, "verification": {"backend": "gpu"}}))
    msg = tmp_path / "msg"
    assert cli.main(["export", "--work-dir", str(tmp_path / "w"), "--termination-log", str(msg)]) == 3
    res = decode(msg.read_text())
    assert (res.stage, res.ok, res.reason) == ("export", False, reason)
    assert "spec.verification.backend is gpu" in res.message


def test_auto_and_cpu_ask_nothing_of_the_gpu_before_export(monkeypatch):
    def asked():
        raise AssertionError("the accelerator was probed for a backend that needs no GPU")

    monkeypatch.setattr(inference, "accelerator", asked)
    for requested in ("auto", "cpu"):
        spec = parse_spec({**SPEC, "verification": {"backend": requested}})
        # Past the backend, preflight goes on to S3: the first object it asks for is the calibration npz.
        with pytest.raises(AssertionError, match="storage.size_of used"):
            export.preflight(spec, _Untouchable())
