"""The GPU job image (Dockerfile target job, `make images-gpu`) where no GPU is: the devenv's node
has none, so what is proved is what a GPU node would load. Inside the image, as its own user with a
read-only root: Paddle is a CUDA build and loads the cuDNN it was built with; every library Paddle
dlopens for CUDA loads, and `ldd` resolves every library of Paddle's core and of each CUDA wheel's
lib dir; TensorRT's libraries do not resolve (PyPI has no TensorRT library wheel: see
job_image/gpu-requirements.txt), and Paddle says so; `kubeslim-job export` asked for the GPU fails at
once with NoGPU naming spec.verification.backend; with backend auto the whole job runs (devenv S3)
and verifies on oneDNN int8.

Runs on the image `make images-gpu` last built (it is several GB, and no other target builds it);
skipped when there is none, failed instead under `make test-gpu-image`, which builds it first."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

import pytest

from kubeslim_api.contract import EXIT_BAD_INPUT, decode
from kubeslim_dev.devenv import DEVENV_DIR

pytestmark = pytest.mark.timeout(600)

# What paddlepaddle-gpu 2.6.2 (PyPI's, built without Paddle's pip-CUDA option) dlopens, by these
# unversioned names (seen with strace; Paddle's phi/backends/dynload): the CUDA libraries, and TensorRT.
PADDLE_CUDA_DLOPENS = ("libcudnn.so", "libcublas.so", "libcublasLt.so", "libcurand.so", "libcusolver.so",
                       "libcusparse.so", "libcufft.so", "libnvrtc.so")
PADDLE_TENSORRT_DLOPENS = ("libnvinfer.so", "libnvinfer_plugin.so")

MARK = "KUBESLIM-GPU-PROBE "
# Run by the image's python. ldd lists what the loader cannot find as "NAME => not found".
PROBE = f"""
import zlib
import ctypes, glob, json, os, subprocess
import paddle
from kubeslim_job import inference

# paddle/libs is on the path as it is in Paddle's process: libpaddle.so's RUNPATH loads libiomp5.so
# from there before Paddle dlopens libmklml_intel.so (no RUNPATH of its own) by its full path.
ENV = dict(os.environ, LD_LIBRARY_PATH=os.environ.get("LD_LIBRARY_PATH", "") + ":" + os.path.dirname(paddle.__file__) + "/libs")

def missing(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, env=ENV).stdout
    return sorted(line.split()[0] for line in out.splitlines() if "not found" in line)

def dlopen(name):
    try:
        ctypes.CDLL(name)
        return "loaded"
    except OSError as exc:
        return str(exc)

def found(name):
    for d in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if d and os.path.exists(os.path.join(d, name)):
            return os.path.realpath(os.path.join(d, name))
    return None

root = os.path.dirname(paddle.__file__)
core = sorted(glob.glob(root + "/base/*.so") + glob.glob(root + "/libs/*.so*"))
libdirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
wheel_libs = sorted(f for d in libdirs for f in glob.glob(d + "/lib*.so*") if not os.path.islink(f))
names = {list(PADDLE_CUDA_DLOPENS + PADDLE_TENSORRT_DLOPENS)!r}
acc = inference.accelerator()
print({MARK!r} + json.dumps({{
    "compiled_with_cuda": paddle.is_compiled_with_cuda(), "cuda": paddle.version.cuda(),
    "cudnn": paddle.version.cudnn(), "cudnn_loaded": paddle.device.get_cudnn_version(),
    "trt_compiled": list(paddle.inference.get_trt_compile_version()),
    "accelerator": {{"cuda": acc.cuda, "gpus": acc.gpus, "tensorrt": acc.tensorrt, "tensorrt_error": acc.tensorrt_error}},
    "libdirs": libdirs, "core": len(core), "wheel_libs": len(wheel_libs),
    "unresolved": {{f: m for f in core + wheel_libs if (m := missing(f))}},
    "dlopen": {{n: dlopen(n) for n in names}}, "found": {{n: found(n) for n in names}}}}))
"""


@dataclass(frozen=True)
class GpuImage:
    ref: str
    docker: list[str]
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """The image with a job container's constraints: its own numeric user, a read-only root with
        only /tmp writable, no network. (A tmpfs on /work would keep the image's root-owned mode,
        where the operator's emptyDir is writable by all: the job's work dir goes under /tmp.)"""
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return subprocess.run([*self.docker, "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                               *flags, *args], env=self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gpu_image() -> GpuImage:
    required = os.environ.get("KUBESLIM_GPU_IMAGE") == "required"
    give_up = pytest.fail if required else pytest.skip
    env_file = DEVENV_DIR / "images-gpu.env"
    if not env_file.exists():
        give_up(f"no GPU job image built ({env_file} missing): make images-gpu, or make test-gpu-image")
    cfg = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    image = GpuImage(cfg["KUBESLIM_GPU_JOB_IMAGE"], [cfg["KUBESLIM_DOCKER_CLI"]],
                     {**os.environ, "DOCKER_HOST": cfg["KUBESLIM_DOCKER_HOST"]})
    if subprocess.run([*image.docker, "image", "inspect", image.ref], env=image.env, capture_output=True).returncode:
        give_up(f"the GPU job image {image.ref} is not in the devenv's dockerd (is the node's runtime up? "
                "make images-gpu builds it)")
    return image


@pytest.fixture(scope="module")
def probe(gpu_image) -> dict:
    proc = gpu_image.run("--entrypoint", "python", gpu_image.ref, "-c", PROBE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line[len(MARK):] for line in proc.stdout.splitlines() if line.startswith(MARK)))


def test_paddle_is_a_cuda_build_and_loads_the_cudnn_it_was_built_with(probe):
    assert probe["compiled_with_cuda"] is True
    assert (probe["cuda"], probe["cudnn"]) == ("11.8", "8.6.0"), probe
    # Paddle's own loader found libcudnn.so through LD_LIBRARY_PATH and asked it its version.
    assert probe["cudnn_loaded"] == 8600, probe
    assert probe["accelerator"]["cuda"] == "11.8" and probe["accelerator"]["gpus"] == 0, probe


def test_every_cuda_library_paddle_dlopens_loads_from_the_wheels(probe):
    for name in PADDLE_CUDA_DLOPENS:
        assert probe["dlopen"][name] == "loaded", (name, probe["dlopen"][name])
        assert probe["found"][name] and probe["found"][name].startswith(tuple(probe["libdirs"])), (name, probe["found"])


def test_ldd_resolves_paddles_core_and_every_cuda_library(probe):
    # paddle/base/libpaddle.so, paddle/libs/* (libphi, oneDNN, MKL, flash-attn, ...) and every file of
    # the CUDA wheels' lib dirs (cuDNN's sub-libraries included): nothing left "not found".
    assert probe["core"] >= 10 and probe["wheel_libs"] >= 15, probe
    assert probe["unresolved"] == {}, probe["unresolved"]


def test_tensorrt_is_not_in_the_image_and_paddle_says_so(probe):
    # Paddle was built against TensorRT 8.5.3; no TensorRT library is on the package index.
    assert probe["trt_compiled"] == [8, 5, 3], probe
    for name in PADDLE_TENSORRT_DLOPENS:
        assert probe["found"][name] is None and probe["dlopen"][name] != "loaded", (name, probe["dlopen"][name])
    assert probe["accelerator"]["tensorrt"] is None
    assert "TensorRT dynamic library is not found" in probe["accelerator"]["tensorrt_error"], probe["accelerator"]


SPEC = {
    "model": {"builtin": {"architecture": "lenet", "numClasses": 10}, "inputShape": [1, 28, 28]},
    "data": {"calibration": {"uri": "s3://data/train.npz", "format": "npz"},
             "evaluation": {"uri": "s3://data/val.npz", "format": "npz"}},
    "output": {"uri": "s3://models/out/"},
    # Nothing listens there and the container has no network: any S3 call would fail otherwise.
    "storage": {"endpoint": "http://127.0.0.1:9"},
}


@pytest.mark.parametrize("backend", ["gpu", "tensorrt"])
def test_kubeslim_job_asked_for_the_gpu_fails_at_once_with_no_gpu(gpu_image, backend):
    spec = {**SPEC, "verification": {"backend": backend}}
    proc = gpu_image.run(gpu_image.ref, "export", "--work-dir", "/tmp/work", "--termination-log", "-",
                         env={"KUBESLIM_SPEC": json.dumps(spec)})
    assert proc.returncode == EXIT_BAD_INPUT, (proc.stdout[-2000:], proc.stderr[-2000:])
    res = decode(proc.stdout.strip().splitlines()[-1])
    assert (res.stage, res.ok, res.reason) == ("export", False, "NoGPU"), res
    assert res.message.startswith(f"spec.verification.backend is {backend} but no GPU is visible"), res.message
    assert "CUDA 11.8 sees 0 devices" in res.message and "spec.resources.gpu" in res.message
    assert "bytesReadTotal" in res.details and res.details["bytesReadTotal"] == 0, res.details


def test_without_a_gpu_auto_runs_the_whole_job_on_onednn_int8(gpu_image, s3, s3_env, bucket, tmp_path):
    # This image's Paddle has no TensorRT and here no GPU: auto must still quantize and verify, on
    # the CPU with oneDNN int8, the backend the results name. The devenv's S3 is on the host network.
    from kubeslim_dev import demo

    demo.seed(s3, bucket, "digits")
    doc = demo.example_manifest("gpu-image-on-cpu", bucket, s3_env["AWS_ENDPOINT_URL"])
    doc["spec"]["quantization"]["algos"] = ["avg"]
    manifest = tmp_path / "job.json"
    manifest.write_text(json.dumps(doc))
    manifest.chmod(0o644)
    proc = subprocess.run([*gpu_image.docker, "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
                           *[f"--env={k}={v}" for k, v in s3_env.items()], "--env=KUBESLIM_THREADS=1",
                           "-v", f"{manifest}:/spec/job.json:ro", gpu_image.ref,
                           "run", "-f", "/spec/job.json", "--result", "/tmp/result.json", "--work-dir", "/tmp/work"],
                          env=gpu_image.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = decode(proc.stdout.strip().splitlines()[-1])
    assert (res.stage, res.ok) == ("verify", True), res
    assert res.results.backend == "cpu-onednn-int8" and res.results.int8.algo == "avg", res.results
    assert res.gate.passed and res.results.fp32.top1 > 0.9, res.results
