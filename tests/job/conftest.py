"""Fixtures for the job pipeline tests: trained models and digits data in the devenv S3, and a
runner that calls the real `kubeslim-job` CLI in a subprocess (real exit codes, real termination
message files). Uses `s3_env` / `s3` from tests/conftest.py."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle: libpaddle's bundled zlib crashes later sklearn/gzip use

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubeslim_dev import devenv, digits

REPO = Path(__file__).resolve().parents[2]
KUBESLIM_JOB = [sys.executable, "-m", "kubeslim_job.cli"]
CALIB_IMAGES = 64          # calibration imageList size (only what the tests calibrate on is uploaded)


@dataclass
class StageRun:
    rc: int
    result: Any              # contract.StageResult decoded from the message file, or None
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def digits_data() -> dict[str, np.ndarray]:
    return digits.load()


@pytest.fixture(scope="session")
def trained(digits_data, tmp_path_factory) -> dict[str, Any]:
    """A small CNN (custom code + inference export) and LeNet (builtin), trained on the digits train
    split; their held-out accuracy computed here, independently of the job."""
    import paddle

    out = tmp_path_factory.mktemp("models")
    cnn = digits.train(digits.small_cnn(), digits_data)
    lenet = digits.train(digits.lenet(), digits_data, epochs=8)
    paddle.save(cnn.state_dict(), str(out / "cnn.pdparams"))
    paddle.save(lenet.state_dict(), str(out / "lenet.pdparams"))
    paddle.jit.save(cnn, str(out / "inference" / "model"),
                    input_spec=[paddle.static.InputSpec([None, *digits.INPUT_SHAPE], "float32", "image")])
    y = digits_data["test_y"]
    return {
        "dir": out,
        "cnn_pred": digits.predict(cnn, digits_data["test_x"]),
        "lenet_pred": digits.predict(lenet, digits_data["test_x"]),
        "cnn_top1": float((digits.predict(cnn, digits_data["test_x"]) == y).mean()),
        "lenet_top1": float((digits.predict(lenet, digits_data["test_x"]) == y).mean()),
    }


@pytest.fixture(scope="session")
def job_bucket(s3, digits_data, trained) -> dict[str, str]:
    """One bucket holding models, code and datasets for the whole session; URIs by name."""
    name = f"kj-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    d, m = digits_data, trained["dir"]
    s3.upload_file(str(m / "cnn.pdparams"), name, "models/cnn.pdparams")
    s3.upload_file(str(m / "lenet.pdparams"), name, "models/lenet.pdparams")
    s3.upload_file(str(m / "inference" / "model.pdmodel"), name, "models/cnn-fp32/model.pdmodel")
    s3.upload_file(str(m / "inference" / "model.pdiparams"), name, "models/cnn-fp32/model.pdiparams")
    s3.put_object(Bucket=name, Key="code/small_cnn.py", Body=digits.SMALL_CNN_SOURCE.encode())
    s3.put_object(Bucket=name, Key="data/train-nchw.npz", Body=digits.npz_bytes(d["train_x"], d["train_y"], "NCHW"))
    s3.put_object(Bucket=name, Key="data/test-nhwc.npz", Body=digits.npz_bytes(d["test_x"], d["test_y"], "NHWC"))
    s3.put_object(Bucket=name, Key="data/test-z.npz", Body=digits.npz_bytes(d["test_x"], d["test_y"], "NHW", True))
    digits.upload_image_list(s3, name, "data/test-png", d["test_x"], d["test_y"])
    digits.upload_image_list(s3, name, "data/train-png", d["train_x"][:CALIB_IMAGES], d["train_y"][:CALIB_IMAGES])
    b = f"s3://{name}"
    yield {
        "bucket": name,
        "custom": {"custom": {"code": f"{b}/code/small_cnn.py", "factory": "build_model", "kwargs": {"num_classes": 10},
                              "weights": f"{b}/models/cnn.pdparams"}},
        "builtin": {"builtin": {"architecture": "lenet", "weights": f"{b}/models/lenet.pdparams", "numClasses": 10}},
        "inference": {"inference": {"uri": f"{b}/models/cnn-fp32/"}},
        "calib_npz": {"uri": f"{b}/data/train-nchw.npz", "format": "npz"},
        "calib_png": {"uri": f"{b}/data/train-png/", "format": "imageList", "listFile": "list.txt"},
        "eval_png": {"uri": f"{b}/data/test-png/", "format": "imageList", "listFile": "list.txt"},
        "eval_npz": {"uri": f"{b}/data/test-nhwc.npz", "format": "npz"},
        "eval_npz_z": {"uri": f"{b}/data/test-z.npz", "format": "npz"},
        "prefix": b,
    }
    devenv.remove_bucket(s3, name)


def job_env(s3_env: dict[str, str], **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBESLIM_"))}
    env.update(s3_env)
    env["PYTHONPATH"] = str(REPO / "job_image")
    env["KUBESLIM_LATENCY_SECONDS"] = "0.2"     # timing is the benchmark's job, not the tests'
    env.update(overrides)
    return env


@pytest.fixture
def kubeslim_job(s3_env, tmp_path):
    """kubeslim_job(stage_or_run, manifest, work=None, env=..., via='file'|'env') -> StageRun."""
    from kubeslim_api.contract import decode

    def call(command: str, manifest: dict[str, Any], work: Path | None = None, via: str = "file",
             timeout: float = 240, **env_overrides: str) -> StageRun:
        env = job_env(s3_env, **env_overrides)
        work = work or tmp_path / "work"
        msg = tmp_path / f"{command}-{uuid.uuid4().hex[:6]}.msg"
        if command == "run":
            mf = tmp_path / "job.yaml"
            mf.write_text(json.dumps(manifest))
            args = ["run", "-f", str(mf), "--result", str(msg), "--work-dir", str(work)]
        else:
            args = [command, "--work-dir", str(work), "--termination-log", str(msg)]
            if via == "env":
                env["KUBESLIM_SPEC"] = json.dumps(manifest["spec"])
            else:
                sf = tmp_path / "spec.json"
                sf.write_text(json.dumps(manifest["spec"]))
                args += ["--spec-file", str(sf)]
        proc = subprocess.run(KUBESLIM_JOB + args, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=tmp_path)
        result = decode(msg.read_text()) if msg.exists() else None
        return StageRun(proc.returncode, result, proc.stdout, proc.stderr)

    return call

