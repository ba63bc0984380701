"""Issue 16's done-when through the real CLI, real Paddle and S3: a model with two named inputs
(an image and a side vector) and a dense, non-classification output, quantized from an npz keyed
by input name with verification.metric fidelity. The cosine the job reports is recomputed here
independently with paddle.inference on the fp32 and int8 model files."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import io
import uuid

import numpy as np
import paddle
import pytest
from paddle import nn

from kubeslim_api.contract import EXIT_BAD_INPUT, EXIT_OK
from kubeslim_dev import devenv, plain_paddle
from kubeslim_job import inference

pytestmark = pytest.mark.cluster

IMAGE = [3, 16, 16]
AUX = 8
EVAL_N, CALIB_N, BATCH = 48, 32, 16


class TwoInputNet(nn.Layer):
    """A feature map modulated by a side vector: [N, 8, 16, 16] out, like a segmentation head.
    (At module level: paddle.jit.save translates forward from its module's names.)"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2D(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2D(16, 8, 3, padding=1)
        self.fc = nn.Linear(AUX, 8)

    def forward(self, image, aux):
        f = self.conv2(nn.functional.relu(self.conv1(image)))
        g = nn.functional.sigmoid(self.fc(aux))
        return f * g.unsqueeze(-1).unsqueeze(-1)


def _two_input_net() -> TwoInputNet:
    paddle.seed(16)
    net = TwoInputNet()
    net.eval()
    return net


# A user's metric: how well each sample's mean activation tracks a per-sample target (higher is
# better); `broken` fails on line 10 of the file.
METRIC_SOURCE = """import numpy as np


def evaluate(outputs, data):
    (y,) = outputs.values()
    return float(-np.mean((y.reshape(len(y), -1).mean(1) - data["targets"]) ** 2))


def broken(outputs, data):
    return data["no such array"]
"""


def _user_metric(y: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean((y.reshape(len(y), -1).mean(1) - targets) ** 2))


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture(scope="module")
def two_input_model(s3, tmp_path_factory):
    out = tmp_path_factory.mktemp("two-input")
    paddle.jit.save(_two_input_net(), str(out / "model"),
                    input_spec=[paddle.static.InputSpec([None, *IMAGE], "float32", "image"),
                                paddle.static.InputSpec([None, AUX], "float32", "aux")])
    rng = np.random.default_rng(16)
    data = {name: {"image": rng.normal(size=(n, *IMAGE)).astype(np.float32),
                   "aux": rng.normal(size=(n, AUX)).astype(np.float32)} for name, n in (("calib", CALIB_N), ("eval", EVAL_N))}
    bucket = f"kj-multi-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for ext in ("pdmodel", "pdiparams"):
        s3.upload_file(str(out / f"model.{ext}"), bucket, f"models/two/model.{ext}")
    # targets: what a user's own metric would read; calibration and fidelity ignore it
    s3.put_object(Bucket=bucket, Key="data/calib.npz", Body=_npz(**data["calib"], targets=np.zeros(CALIB_N)))
    targets = rng.normal(size=EVAL_N)
    s3.put_object(Bucket=bucket, Key="data/eval.npz", Body=_npz(**data["eval"], targets=targets))
    s3.put_object(Bucket=bucket, Key="code/metric.py", Body=METRIC_SOURCE.encode())
    s3.put_object(Bucket=bucket, Key="data/eval-no-aux.npz", Body=_npz(image=data["eval"]["image"]))
    yield {"bucket": bucket, "prefix": f"s3://{bucket}", "dir": out, "eval": data["eval"], "targets": targets}
    devenv.remove_bucket(s3, bucket)


def _manifest(b: str, out: str, evaluation: str = "data/eval.npz", **verification) -> dict:
    return {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": "two-input"},
            "spec": {"model": {"inference": {"uri": f"{b}/models/two/"}},
                     "data": {"calibration": {"uri": f"{b}/data/calib.npz", "format": "npz"},
                              "evaluation": {"uri": f"{b}/{evaluation}", "format": "npz"}},
                     "quantization": {"algos": ["avg", "hist"], "batchSize": BATCH, "batchNums": 2,
                                      "accuracyControl": {"mode": "off"}},
                     "verification": {"metric": "fidelity", "batchSize": BATCH, "minCosine": 0.9, **verification},
                     "output": {"uri": f"{b}/{out}"},
                     "storage": {"addressingStyle": "path"}}}


def _outputs(model_dir, int8: bool, feeds: dict[str, np.ndarray], threads: int) -> np.ndarray:
    """The model's output on the evaluation set by plain Paddle Inference, as the test computes it,
    int8 on the op types the job runs in int8 (what the README tells a server to set: plain
    enable_mkldnn_int8() also runs pool2d and elementwise_mul in int8 and answers otherwise)."""
    _, runs = plain_paddle.predictor_outputs(model_dir, feeds, batch=BATCH, int8=int8, threads=threads,
                                             int8_ops=inference.ONEDNN_INT8_OPS)
    return np.concatenate([run[0] for run in runs]).astype(np.float64)


def test_two_named_inputs_dense_output_fidelity_matches_paddle_inference(kubeslim_job, two_input_model, s3, tmp_path):
    m = two_input_model
    run = kubeslim_job("run", _manifest(m["prefix"], "out/fidelity/"), timeout=420)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    res = run.result
    r = res.results
    assert res.gate.metric == "fidelity" and res.gate.passed and res.gate.min_cosine == 0.9
    assert r.fp32.top1 is None and r.int8.top1 is None and r.int8.agreement is None     # not a classifier
    fid = r.int8.fidelity
    (out,) = fid.per_output
    assert out.comparable and fid.cosine == out.cosine and fid.sqnr_db == out.sqnr_db and out.max_abs_error > 0
    assert r.accuracy_drop == pytest.approx(1 - fid.cosine, abs=1e-6)
    assert r.fp32.fidelity.cosine == 1.0
    assert all(c.fidelity is not None and c.fidelity.cosine is not None for c in r.candidates)
    assert r.int8.algo in ("avg", "hist") and res.artifacts.model

    # independently: download the published int8 model, run both with paddle.inference
    local = tmp_path / "int8"
    local.mkdir()
    for ext in ("pdmodel", "pdiparams"):
        s3.download_file(m["bucket"], f"out/fidelity/model.{ext}", str(local / f"model.{ext}"))
    threads = res.details["threads"]
    ref = _outputs(m["dir"], False, m["eval"], threads).reshape(EVAL_N, -1)
    got = _outputs(local, True, m["eval"], threads).reshape(EVAL_N, -1)
    cosine = float(np.mean((ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))))
    assert fid.cosine == pytest.approx(cosine, abs=1e-3)
    assert cosine < 0.99999, "int8 must differ from fp32, or the comparison proves nothing"
    sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum())
    assert out.sqnr_db == pytest.approx(sqnr, abs=0.5)


def test_an_npz_missing_an_input_is_refused_naming_the_array(kubeslim_job, two_input_model):
    m = two_input_model
    run = kubeslim_job("run", _manifest(m["prefix"], "out/no-aux/", evaluation="data/eval-no-aux.npz"), timeout=420)
    assert run.rc == EXIT_BAD_INPUT, (run.result, run.stderr[-3000:])
    assert run.result.reason == "BadNpz" and run.result.stage == "export"      # before any calibration
    assert "spec.data.evaluation.uri" in run.result.message and "has no array 'aux'" in run.result.message
    assert "np.savez(path, aux=...)" in run.result.message


def test_a_classifier_metric_on_a_dense_output_is_refused_at_export(kubeslim_job, two_input_model):
    m = two_input_model
    run = kubeslim_job("run", _manifest(m["prefix"], "out/top1/", metric="agreement"), timeout=240)
    assert run.rc == EXIT_BAD_INPUT, (run.result, run.stderr[-3000:])
    assert run.result.stage == "export" and run.result.reason == "BadModel"
    assert "[N, classes]" in run.result.message and "use metric fidelity" in run.result.message


def test_a_custom_metric_from_s3_gates_and_equals_the_function_on_paddle_inference_outputs(kubeslim_job, two_input_model,
                                                                                          s3, tmp_path):
    m = two_input_model
    man = _manifest(m["prefix"], "out/custom/", metric="custom", maxAccuracyDrop=0.05,
                    custom={"code": f"{m['prefix']}/code/metric.py"})
    run = kubeslim_job("run", man, timeout=420)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r = run.result.results
    assert run.result.gate.metric == "custom" and run.result.gate.passed
    assert r.accuracy_drop == pytest.approx(r.fp32.custom - r.int8.custom, abs=1e-6)
    assert r.int8.fidelity.cosine is not None          # fidelity is reported with every metric
    local = tmp_path / "int8"
    local.mkdir()
    for ext in ("pdmodel", "pdiparams"):
        s3.download_file(m["bucket"], f"out/custom/model.{ext}", str(local / f"model.{ext}"))
    threads = run.result.details["threads"]
    fp32 = _user_metric(_outputs(m["dir"], False, m["eval"], threads), m["targets"])
    int8 = _user_metric(_outputs(local, True, m["eval"], threads), m["targets"])
    assert r.fp32.custom == pytest.approx(fp32, abs=1e-4) and r.int8.custom == pytest.approx(int8, abs=1e-4)


def test_a_custom_metric_that_raises_fails_naming_the_file_and_line(kubeslim_job, two_input_model):
    m = two_input_model
    man = _manifest(m["prefix"], "out/broken/", metric="custom",
                    custom={"code": f"{m['prefix']}/code/metric.py", "function": "broken"})
    run = kubeslim_job("run", man, timeout=420)
    assert run.rc == EXIT_BAD_INPUT, (run.result, run.stderr[-3000:])
    assert run.result.reason == "MetricError" and run.result.stage == "verify"
    assert f"{m['prefix']}/code/metric.py line 10" in run.result.message and "KeyError" in run.result.message
