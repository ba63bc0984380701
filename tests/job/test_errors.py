"""Every failure the job can explain: the exit code the operator acts on and a message that names
the field, the URI and the fix. Storage errors come from the real devenv S3 server (or a real
socket that never answers); data and model errors from real files."""
from __future__ import annotations

import zlib  # noqa: F401

import io
import socket

import numpy as np
import pytest

from kubeslim_api.contract import EXIT_ACCURACY_GATE, EXIT_BAD_INPUT, EXIT_TRANSIENT, MAX_MESSAGE_BYTES

from kubeslim_dev import digits

pytestmark = pytest.mark.cluster

FAST_FAIL = {"KUBESLIM_S3_MAX_ATTEMPTS": "1", "KUBESLIM_S3_CONNECT_TIMEOUT": "2", "KUBESLIM_S3_READ_TIMEOUT": "1"}


def _manifest(jb, model="custom", calib="calib_npz", evaluation="eval_npz", algos=("avg",), **extra):
    m = digits.manifest("err", jb[model] if isinstance(model, str) else model,
                        jb[calib] if isinstance(calib, str) else calib,
                        jb[evaluation] if isinstance(evaluation, str) else evaluation,
                        f"{jb['prefix']}/out/errors/", list(algos), **extra)
    return m


def _assert_fails(run, code: int, reason: str, *words: str):
    assert run.rc == code, (run.rc, run.result, run.stderr[-2000:])
    assert run.result is not None and not run.result.ok and run.result.reason == reason, run.result
    for w in words:
        assert w in run.result.message, (w, run.result.message)
    assert len(run.stdout.strip().splitlines()[-1].encode()) <= MAX_MESSAGE_BYTES


def test_no_such_bucket(kubeslim_job, job_bucket):
    uri = "s3://kubeslim-no-such-bucket/train.npz"
    m = _manifest(job_bucket, calib={"uri": uri, "format": "npz"})
    run = kubeslim_job("export", m, **FAST_FAIL)
    _assert_fails(run, EXIT_BAD_INPUT, "NoSuchBucket", "spec.data.calibration.uri", uri, "does not exist")


def test_no_such_key(kubeslim_job, job_bucket):
    uri = f"{job_bucket['prefix']}/models/missing.pdparams"
    model = {"custom": {**job_bucket["custom"]["custom"], "weights": uri}}
    run = kubeslim_job("export", _manifest(job_bucket, model=model), **FAST_FAIL)
    _assert_fails(run, EXIT_BAD_INPUT, "NoSuchKey", "spec.model.custom.weights", uri, "upload it or fix the URI")


def test_unknown_access_key(kubeslim_job, job_bucket):
    run = kubeslim_job("export", _manifest(job_bucket), AWS_ACCESS_KEY_ID="KSUNKNOWNKEY00000000", **FAST_FAIL)
    _assert_fails(run, EXIT_BAD_INPUT, "InvalidAccessKeyId", "credentialsSecret")


def test_wrong_secret_is_named_but_never_printed(kubeslim_job, job_bucket):
    secret = "wrong-secret-value-must-not-leak"
    run = kubeslim_job("export", _manifest(job_bucket), AWS_SECRET_ACCESS_KEY=secret, **FAST_FAIL)
    _assert_fails(run, EXIT_BAD_INPUT, "SignatureDoesNotMatch", "secret access key is wrong")
    assert secret not in run.stdout + run.stderr


def test_wrong_endpoint(kubeslim_job, job_bucket):
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = kubeslim_job("export", _manifest(job_bucket), AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", **FAST_FAIL)
    # Transient (the Job retries): a refused connection may be an S3 server that is down for now.
    _assert_fails(run, EXIT_TRANSIENT, "EndpointUnreachable", f"127.0.0.1:{port}", "spec.storage.endpoint")


def test_timeout_is_transient(kubeslim_job, job_bucket):
    with socket.socket() as s:          # accepts connections (kernel backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        port = s.getsockname()[1]
        run = kubeslim_job("export", _manifest(job_bucket), AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", **FAST_FAIL)
    _assert_fails(run, EXIT_TRANSIENT, "StorageTimeout", "timed out", "backoffLimit")


def test_min_max_is_refused(kubeslim_job, job_bucket):
    run = kubeslim_job("export", _manifest(job_bucket, algos=("hist", "min_max")))
    _assert_fails(run, EXIT_BAD_INPUT, "InvalidSpec", "spec.quantization.algos")


def test_unknown_architecture(kubeslim_job, job_bucket):
    model = {"builtin": {"architecture": "notanet", "numClasses": 10}}
    run = kubeslim_job("export", _manifest(job_bucket, model=model))
    _assert_fails(run, EXIT_BAD_INPUT, "UnknownArchitecture", "spec.model.builtin.architecture", "mobilenet_v3_small")


def test_weights_for_another_model(kubeslim_job, job_bucket):
    model = {"builtin": {**job_bucket["builtin"]["builtin"], "weights": job_bucket["custom"]["custom"]["weights"]}}
    run = kubeslim_job("export", _manifest(job_bucket, model=model))
    _assert_fails(run, EXIT_BAD_INPUT, "WeightsMismatch", "spec.model.builtin.weights", "does not fit the model")


@pytest.fixture(scope="module")
def bad_data(s3, job_bucket, digits_data):
    """Broken datasets: a corrupt image (line 2), a label out of range (line 3), float tensors of the wrong shape."""
    b, x, y = job_bucket["bucket"], digits_data["train_x"], digits_data["train_y"]
    s3.put_object(Bucket=b, Key="bad/img/ok.png", Body=digits.png_bytes(x[0]))
    s3.put_object(Bucket=b, Key="bad/img/corrupt.png", Body=b"\x89PNG\r\n\x1a\n this is not a png")
    s3.put_object(Bucket=b, Key="bad/corrupt.txt", Body=b"img/ok.png 1\nimg/corrupt.png 2\n")
    s3.put_object(Bucket=b, Key="bad/labels.txt", Body=b"img/ok.png 1\nimg/ok.png 2\nimg/ok.png 12\n")
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((8, 1, 20, 20), np.float32), labels=y[:8])
    s3.put_object(Bucket=b, Key="bad/shape.npz", Body=buf.getvalue())
    p = job_bucket["prefix"]
    return {
        "corrupt": {"uri": f"{p}/bad/", "format": "imageList", "listFile": "corrupt.txt"},
        "labels": {"uri": f"{p}/bad/", "format": "imageList", "listFile": "labels.txt"},
        "shape": {"uri": f"{p}/bad/shape.npz", "format": "npz"},
    }


@pytest.mark.parametrize("case, reason, words", [
    ("corrupt", "CorruptImage", ["bad/corrupt.txt line 2", "unusable"]),
    ("shape", "ShapeMismatch", ["spec.data.calibration.uri", "bad/shape.npz", "1,28,28", "[8, 1, 20, 20]"]),
])
def test_bad_calibration_data(kubeslim_job, job_bucket, bad_data, case, reason, words):
    run = kubeslim_job("run", _manifest(job_bucket, calib=bad_data[case]))
    assert run.result is not None and run.result.stage == "calibrate", run.result
    _assert_fails(run, EXIT_BAD_INPUT, reason, *words)


def test_labels_are_checked_only_where_they_are_read(kubeslim_job, job_bucket, bad_data):
    """A label out of range: calibration on that list succeeds (it never reads labels), evaluation fails."""
    run = kubeslim_job("run", _manifest(job_bucket, calib=bad_data["labels"], evaluation=bad_data["labels"]))
    assert run.result is not None and run.result.stage == "verify", run.result
    _assert_fails(run, EXIT_BAD_INPUT, "LabelOutOfRange", "bad/labels.txt line 3", "label 12", "[0, 10)")


def test_accuracy_gate(kubeslim_job, job_bucket, trained, digits_data, s3):
    """hist clipping at the 20th percentile wrecks the activations: exit 4, numbers reported, report
    published, the failed model not."""
    m = _manifest(job_bucket, algos=("hist",), **{"quantization.histPercent": 0.2,
                                 "verification.maxAccuracyDrop": 0.0, "output.uri": f"{job_bucket['prefix']}/out/gate/"})
    run = kubeslim_job("run", m)
    _assert_fails(run, EXIT_ACCURACY_GATE, "AccuracyGateFailed", "maxAccuracyDrop", "hist")
    r = run.result
    assert r.gate is not None and not r.gate.passed
    # fp32 is the model as trained (this session's own evaluation), whatever accuracy it reached.
    n = len(digits_data["test_y"])
    assert r.results.accuracy_drop > 0 and round(r.results.fp32.top1 * n) == round(trained["cnn_top1"] * n)
    assert r.artifacts.model is None and r.artifacts.report.endswith("out/gate/report.html")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=job_bucket["bucket"], Prefix="out/gate/").get("Contents", [])}
    assert "out/gate/report.html" in keys and "out/gate/model.pdmodel" not in keys
