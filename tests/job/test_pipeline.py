"""The job image's pipeline end to end: real models trained on real digits, real S3 (devenv),
the real CLI in a subprocess, every model source, both data formats, a sweep, and the errors."""
from __future__ import annotations

import zlib  # noqa: F401

import io
import json

import numpy as np
import pytest

from kubeslim_api.contract import EXIT_BAD_INPUT, EXIT_OK, MAX_MESSAGE_BYTES

from kubeslim_dev import digits

pytestmark = pytest.mark.cluster


def _assert_published(s3, bucket: str, prefix: str, model: bool = True) -> dict:
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}
    for name in ("report.html", "report.json", "accuracy.png", "latency.png", "size.png"):
        assert f"{prefix}{name}" in keys, keys
    assert (f"{prefix}model.pdmodel" in keys and f"{prefix}model.pdiparams" in keys) == model, keys
    html = s3.get_object(Bucket=bucket, Key=f"{prefix}report.html")["Body"].read().decode()
    assert html.count("data:image/png;base64,") == 3   # self-contained
    return json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}report.json")["Body"].read())


def _assert_good_results(res, independent_top1: float, n_eval: int, algos: list[str]) -> None:
    r = res.results
    assert r.backend == "cpu-onednn-int8"
    # No accuracy floor (a correct training may land anywhere): the job's fp32 accuracy (Paddle Inference + oneDNN) equals the test's own (dygraph, by hand preprocessing)
    assert round(r.fp32.top1 * n_eval) == round(independent_top1 * n_eval), (r.fp32.top1, independent_top1)
    assert r.int8.top1 >= r.fp32.top1 - 0.02
    assert r.int8.algo in algos
    # one row per algo, besides a speed-aware row (speedFp32Layers) when some group timed slower in int8
    assert sorted(c.algo for c in r.candidates if c.speed_fp32_layers is None) == sorted(algos)
    assert all(c.error is None and c.top1 is not None and c.calibration_seconds > 0 for c in r.candidates)
    assert r.int8.size_bytes < r.fp32.size_bytes            # int8 weights (onnxFormat)
    assert r.fp32.latency_ms > 0 and r.int8.latency_ms > 0 and r.speedup > 0
    assert res.gate.passed and res.gate.metric == "top1"
    best = max(c.top1 for c in r.candidates)
    assert r.int8.top1 == pytest.approx(best)


def test_custom_code_stage_by_stage_like_the_pod(kubeslim_job, job_bucket, trained, digits_data, s3, tmp_path):
    """The three pod stages as separate processes sharing a work dir, spec from KUBESLIM_SPEC,
    results in termination-message files; a sweep of three algos."""
    algos = ["hist", "avg", "mse"]
    out = "out/custom/"
    m = digits.manifest("custom", job_bucket["custom"], job_bucket["calib_npz"], job_bucket["eval_png"],
                        f"{job_bucket['prefix']}/{out}", algos)
    work = tmp_path / "work"
    runs = {}
    for stage in ("export", "calibrate", "verify"):
        runs[stage] = run = kubeslim_job(stage, m, work=work, via="env")
        assert run.rc == EXIT_OK, (stage, run.result, run.stderr[-3000:])
        assert run.result.ok and run.result.stage == stage
    exp = runs["export"].result.details
    assert exp["inputShape"] == digits.INPUT_SHAPE and exp["numClasses"] == 10 and exp["ops"] > 0 and exp["params"] > 0
    cal = runs["calibrate"].result.details
    assert cal["samples"] == 64 and [c["algo"] for c in cal["candidates"]] == algos
    assert cal["device"] == "cpu"        # the job's Paddle here is the CPU build (this machine kind has no GPU)
    # only the 64 calibration samples were read from the 1257-image npz (plus zip/npy headers)
    assert cal["bytesRead"] <= 1.2 * cal["bytesUsed"] and cal["bytesUsed"] < 64 * 28 * 28 * 1.2 + 2048
    res = runs["verify"].result
    _assert_good_results(res, trained["cnn_top1"], len(digits_data["test_y"]), algos)
    assert res.artifacts.model == f"{job_bucket['prefix']}/{out}model.pdmodel"
    assert res.artifacts.report == f"{job_bucket['prefix']}/{out}report.html"
    report = _assert_published(s3, job_bucket["bucket"], out)
    assert report["results"] == res.results.dump()
    assert len(runs["verify"].stdout.strip().splitlines()[-1].encode()) <= MAX_MESSAGE_BYTES


def test_builtin_lenet_run_locally(kubeslim_job, job_bucket, trained, digits_data, s3):
    """`kubeslim-job run -f` on a manifest: builtin architecture, calibration from PNG files, NHWC npz eval."""
    algos = ["hist", "abs_max"]
    out = "out/builtin/"
    m = digits.manifest("builtin", job_bucket["builtin"], job_bucket["calib_png"], job_bucket["eval_npz"],
                        f"{job_bucket['prefix']}/{out}", algos)
    run = kubeslim_job("run", m)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    assert run.result.stage == "verify"
    _assert_good_results(run.result, trained["lenet_top1"], len(digits_data["test_y"]), algos)
    _assert_published(s3, job_bucket["bucket"], out)


def test_inference_model_with_limit(kubeslim_job, job_bucket, trained, digits_data, s3):
    """An exported static model (export validates and skips), compressed npz, evaluation limit."""
    out = "out/inference/"
    limit = 300
    ev = {**job_bucket["eval_npz_z"], "limit": limit}
    m = digits.manifest("inference", job_bucket["inference"], job_bucket["calib_npz"], ev,
                        f"{job_bucket['prefix']}/{out}", ["avg"])
    m["spec"]["model"]["inputShape"] = digits.INPUT_SHAPE
    run = kubeslim_job("run", m)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r = run.result.results
    expect = float((trained["cnn_pred"][:limit] == digits_data["test_y"][:limit]).mean())
    assert run.result.details["evalSamples"] == limit
    assert round(r.fp32.top1 * limit) == round(expect * limit)
    assert r.int8.top1 >= r.fp32.top1 - m["spec"]["verification"]["maxAccuracyDrop"]
    _assert_published(s3, job_bucket["bucket"], out)


def test_custom_module_in_the_image(kubeslim_job, job_bucket, tmp_path):
    """custom.module: a module importable in the job image (here via PYTHONPATH) instead of S3 code."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "kj_nets.py").write_text(digits.SMALL_CNN_SOURCE)
    model = {"custom": {"module": "kj_nets", "factory": "build_model", "kwargs": {"num_classes": 10, "width": 16},
                        "weights": job_bucket["custom"]["custom"]["weights"]}}
    m = digits.manifest("module", model, job_bucket["calib_npz"], job_bucket["eval_npz"],
                        f"{job_bucket['prefix']}/out/module/", ["avg"])
    from .conftest import REPO

    run = kubeslim_job("export", m, PYTHONPATH=f"{REPO / 'job_image'}:{lib}")
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    assert run.result.details["source"] == "custom" and run.result.details["numClasses"] == 10


@pytest.fixture(scope="module")
def new_user_data(s3, job_bucket, digits_data):
    """Data as new users bring it: float32 tensors already preprocessed (the calibration set without
    labels), a plain prefix of PNGs (the session's calibration PNGs, no list file) and a list of bare paths."""
    b, d, p = job_bucket["bucket"], digits_data, job_bucket["prefix"]

    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    s3.put_object(Bucket=b, Key="new-user/calib-tensors.npz", Body=npz(images=digits.to_tensor(d["train_x"][:64])))
    s3.put_object(Bucket=b, Key="new-user/eval-tensors.npz", Body=npz(images=digits.to_tensor(d["test_x"]), labels=d["test_y"]))
    s3.put_object(Bucket=b, Key="data/train-png/bare.txt", Body="".join(f"img/{i:05d}.png\n" for i in range(64)).encode())
    png = s3.list_objects_v2(Bucket=b, Prefix="data/train-png/img/")["Contents"]
    return {
        "calib_tensors": {"uri": f"{p}/new-user/calib-tensors.npz", "format": "npz"},
        "eval_tensors": {"uri": f"{p}/new-user/eval-tensors.npz", "format": "npz"},
        "prefix": {"uri": f"{p}/data/train-png/img", "format": "imagePrefix"},
        "bare": {"uri": f"{p}/data/train-png/", "format": "imageList", "listFile": "bare.txt"},
        "png_sizes": [o["Size"] for o in sorted(png, key=lambda o: o["Key"])],
    }


def test_inference_model_on_model_ready_tensors_needs_no_preprocess(kubeslim_job, job_bucket, trained, digits_data,
                                                                    new_user_data):
    """An exported model, float32 tensors for both sets, no spec.data.preprocess: the ImageNet
    defaults (crop 224 against a 28x28 model) are not held against data that is never preprocessed,
    and the calibration npz has no labels at all."""
    m = digits.manifest("tensors", job_bucket["inference"], new_user_data["calib_tensors"], new_user_data["eval_tensors"],
                        f"{job_bucket['prefix']}/out/tensors/", ["avg"])
    del m["spec"]["data"]["preprocess"]
    run = kubeslim_job("run", m)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r = run.result.results
    n = len(digits_data["test_y"])
    assert round(r.fp32.top1 * n) == round(trained["cnn_top1"] * n)     # the tensors went in untouched
    assert r.int8.top1 >= r.fp32.top1 - 0.02 and run.result.gate.passed


def test_preprocess_set_against_the_model_is_still_refused_for_tensors(kubeslim_job, job_bucket, new_user_data):
    m = digits.manifest("tensors-crop", job_bucket["inference"], new_user_data["calib_tensors"],
                        new_user_data["eval_tensors"], f"{job_bucket['prefix']}/out/tensors-crop/", ["avg"])
    m["spec"]["data"]["preprocess"] = {"crop": 224}
    run = kubeslim_job("run", m)
    assert run.rc == EXIT_BAD_INPUT and run.result.stage == "calibrate", (run.result, run.stderr[-3000:])
    assert run.result.reason == "PreprocessMismatch"
    assert "spec.data.preprocess.crop 224 does not match the model input 28x28" in run.result.message


@pytest.mark.parametrize("source", ["prefix", "bare"])
def test_calibration_without_labels_or_list_file(kubeslim_job, job_bucket, new_user_data, tmp_path, source):
    """Calibration from a plain image prefix (only the first `samples` objects, in key order, are
    fetched) and from a list of bare paths; export and calibrate as the pod runs them."""
    samples = 20
    calib = {**new_user_data[source], "samples": samples}
    m = digits.manifest(source, job_bucket["inference"], calib, job_bucket["eval_npz"],
                        f"{job_bucket['prefix']}/out/{source}/", ["avg"])
    work = tmp_path / "work"
    for stage in ("export", "calibrate"):
        run = kubeslim_job(stage, m, work=work)
        assert run.rc == EXIT_OK, (stage, run.result, run.stderr[-3000:])
    cal = run.result.details
    assert cal["samples"] == samples and "error" not in cal["candidates"][0]
    png_bytes = sum(new_user_data["png_sizes"][:samples])
    if source == "prefix":
        assert cal["bytesRead"] == cal["bytesUsed"] == png_bytes
    else:
        assert cal["bytesUsed"] == png_bytes + sum(len(f"img/{i:05d}.png\n") for i in range(samples))
