"""Speed-aware quantization (spec.quantization.speedAware) through the real CLI, real Paddle
Inference with oneDNN int8 and S3.

The model has a group of layers that oneDNN runs slower in int8 for a structural reason: seven thin
1x1 convolutions (4 channels) at 112x112, each after an ELU, which oneDNN cannot run in int8, so
each of those convolutions in int8 needs its input quantized and its output dequantized, two passes
over the whole activation, for a few multiply-adds per pixel (measured on this machine: the model
with that group in fp32 5-12 % faster than all-int8 in most timings, within the noise in others).
The rest (two 3x3 convolutions with 4-64 channels and a fully connected head) is what int8 is good
at. Nothing tells the job which layers are slow: it times the groups.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import io
import json
import uuid

import numpy as np
import paddle
import pytest
from paddle import nn

from kubeslim_api.contract import EXIT_OK
from kubeslim_dev.devenv import remove_bucket

pytestmark = pytest.mark.cluster

IMAGE = [3, 112, 112]
THIN = 4                    # channels of the slow 1x1 convolutions
EVAL_N, CALIB_N, BATCH = 32, 32, 16
SLOW_GROUP = "pointwise, 1-16 in-channels"      # the thin 1x1 convolutions, and the first (3 -> 4)


class SlowGroupNet(nn.Layer):
    """(At module level: paddle.jit.save translates forward from its module's names.)"""

    def __init__(self):
        super().__init__()
        self.thin = nn.LayerList([nn.Conv2D(3 if i == 0 else THIN, THIN, 1) for i in range(7)])
        self.body1 = nn.Conv2D(THIN, 32, 3, padding=1, stride=4)
        self.body2 = nn.Conv2D(32, 64, 3, padding=1, stride=4)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.thin[0](x)
        for conv in self.thin[1:]:
            x = conv(nn.functional.elu(x))
        x = nn.functional.relu(self.body2(nn.functional.relu(self.body1(x))))
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _smooth_images(rng, n: int) -> np.ndarray:
    """Images with structure at several scales (pure noise makes every layer's input alike)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, IMAGE[1]), np.linspace(0, 1, IMAGE[2]), indexing="ij")
    f = rng.uniform(1, 6, size=(n, IMAGE[0], 2, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, IMAGE[0], 1, 1))
    img = np.sin(f[:, :, 0] * np.pi * yy + phase) * np.cos(f[:, :, 1] * np.pi * xx)
    return (img + 0.1 * rng.normal(size=img.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def slow_group_model(s3, tmp_path_factory):
    out = tmp_path_factory.mktemp("slow-group")
    paddle.seed(17)
    net = SlowGroupNet()
    net.eval()
    paddle.jit.save(net, str(out / "model"), input_spec=[paddle.static.InputSpec([None, *IMAGE], "float32", "x")])
    rng = np.random.default_rng(17)
    bucket = f"kj-speed-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for ext in ("pdmodel", "pdiparams"):
        s3.upload_file(str(out / f"model.{ext}"), bucket, f"models/slow/model.{ext}")
    s3.put_object(Bucket=bucket, Key="data/calib.npz", Body=_npz(x=_smooth_images(rng, CALIB_N)))
    s3.put_object(Bucket=bucket, Key="data/eval.npz", Body=_npz(x=_smooth_images(rng, EVAL_N)))
    yield {"bucket": bucket, "prefix": f"s3://{bucket}", "thin": [c.weight.name for c in net.thin],
           "body": {net.body1.weight.name, net.body2.weight.name}}
    remove_bucket(s3, bucket)


def _manifest(b: str, out: str, speed_aware: str | None) -> dict:
    quantization = {"algos": ["avg"], "batchSize": BATCH, "batchNums": 2, "accuracyControl": {"mode": "off"}}
    if speed_aware is not None:
        quantization["speedAware"] = speed_aware
    return {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": "slow-group"},
            "spec": {"model": {"inference": {"uri": f"{b}/models/slow/"}},
                     "data": {"calibration": {"uri": f"{b}/data/calib.npz", "format": "npz"},
                              "evaluation": {"uri": f"{b}/data/eval.npz", "format": "npz"}},
                     "quantization": quantization,
                     "verification": {"metric": "fidelity", "batchSize": BATCH, "backend": "cpu"},
                     "output": {"uri": f"{b}/{out}"},
                     "storage": {"addressingStyle": "path"}}}


def _int8_layers(s3, bucket: str, key: str) -> set[str]:
    """The weights of the published model's layers that run in int8: those whose activation input
    comes through a quantize/dequantize pair (a layer kept in fp32 reads its input as is)."""
    paddle.enable_static()
    try:
        program = paddle.static.Program.parse_from_string(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    finally:
        paddle.disable_static()
    dq = ".quantized.dequantized"
    return {op.input("Filter")[0].removesuffix(dq) for op in program.global_block().ops
            if op.type == "conv2d" and op.input("Input")[0].endswith(dq)}


def test_auto_times_every_group_and_ships_what_it_decided(kubeslim_job, slow_group_model, s3):
    """Whether the thin group's gain clears the noise on the shared 2-core machine is timing, which
    is the benchmark's to report (bench-pipeline; measured here: found in some runs, not all, at
    load 5-7); what this test holds is everything the job does with its timings: every group timed
    with its layers, the decision consistent with its own figures, the chosen model the one
    published, with exactly the kept layers in fp32 and the gate passed."""
    m = slow_group_model
    run = kubeslim_job("run", _manifest(m["prefix"], "out/auto/", None), timeout=420)     # auto is the default
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    res, r = run.result, run.result.results
    sa = r.speed_aware
    assert sa is not None and sa.mode == "auto" and sa.seconds > 0, sa
    groups = {g.group: g for g in sa.groups}
    assert {k: g.layers for k, g in groups.items()} == {SLOW_GROUP: len(m["thin"]), "conv 3x3, 1-16 in-channels": 1,
                                                         "conv 3x3, 17-64 in-channels": 1, "fc matmul_v2": 1}
    for g in sa.groups:      # each decision follows from its own figures (decide's rule)
        assert g.kept_fp32 == (g.gain >= 0.03 and g.faster_share >= 0.7), g
        assert 0.0 <= g.faster_share <= 1.0
    kept = [g for g in sa.groups if g.kept_fp32]
    plain = next(c for c in r.candidates if c.speed_fp32_layers is None)
    assert plain.algo == "avg" and res.gate.passed
    assert sa.reason == ("NoSlowerGroup" if not kept else "Faster" if sa.applied else "CombinedNotFaster"), sa
    int8_layers = _int8_layers(s3, m["bucket"], "out/auto/model.pdmodel")
    if sa.applied:
        assert sa.gain >= 0 and len(sa.fp32_layers) == sum(g.layers for g in kept)
        chosen = r.candidates[-1]
        assert chosen.speed_fp32_layers == len(sa.fp32_layers) == r.int8.speed_fp32_layers
        assert chosen.latency_ms == r.int8.latency_ms and r.int8.fidelity.cosine >= 0.99
        # what was published: the kept layers run in fp32, every other one still in int8
        assert int8_layers == (set(m["thin"]) | m["body"]) - set(sa.fp32_layers), int8_layers
    else:
        assert [c.algo for c in r.candidates] == ["avg"] and r.int8.speed_fp32_layers is None
        assert int8_layers == set(m["thin"]) | m["body"]
    report = json.loads(s3.get_object(Bucket=m["bucket"], Key="out/auto/report.json")["Body"].read())
    assert report["results"]["speedAware"] == sa.dump()


def test_off_keeps_every_layer_int8_as_before(kubeslim_job, slow_group_model, s3):
    m = slow_group_model
    run = kubeslim_job("run", _manifest(m["prefix"], "out/off/", "off"), timeout=420)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r = run.result.results
    assert r.speed_aware is None and r.int8.speed_fp32_layers is None
    assert [c.algo for c in r.candidates] == ["avg"]
    assert set(m["thin"]) | m["body"] <= _int8_layers(s3, m["bucket"], "out/off/model.pdmodel")
    report = json.loads(s3.get_object(Bucket=m["bucket"], Key="out/off/report.json")["Body"].read())
    assert "speedAware" not in report["results"]
