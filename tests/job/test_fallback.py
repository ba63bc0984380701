"""Accuracy-aware quantization through the real CLI, on a model where plain int8 PTQ really fails.

The model (kubeslim_dev.outliers): the digits CNN trained normally, then given one massive-
activation channel by an exact, function-preserving rescale (the reverse of SmoothQuant's
migration) -- the kind of channel that makes per-tensor int8 collapse on LLMs. Its fp32 top-1
equals the trained model's sample for sample (checked below); per-tensor int8 rounds every other
channel of conv2's input to almost nothing, so every algo misses a 2-point gate. Nothing tells the
job which layer it is: it has to rank the layers and find conv2.
"""
from __future__ import annotations

import zlib  # noqa: F401

import json
import uuid

import pytest

from kubeslim_api.contract import EXIT_ACCURACY_GATE, EXIT_OK

from kubeslim_dev import digits, outliers

pytestmark = pytest.mark.cluster

GATE = 0.02


@pytest.fixture(scope="module")
def outlier_model(s3, job_bucket):
    seeded = outliers.seed(s3, job_bucket["bucket"], "outlier", calib_samples=64)
    # the rescale is exact: the same predictions as the model as trained (whatever its accuracy)
    assert seeded["same_predictions"] == 1.0
    return seeded


def _manifest(job_bucket, seeded, name: str, **extra):
    out = f"{job_bucket['prefix']}/out/{name}-{uuid.uuid4().hex[:6]}/"
    m = digits.manifest(name, seeded["model"], seeded["calibration"], seeded["evaluation"], out, ["hist"],
                        max_drop=GATE, **extra)
    return m, out


def test_fallback_finds_the_outlier_layer_and_passes_the_gate(kubeslim_job, job_bucket, outlier_model, s3):
    # speedAware off: the fallback's step is then the model chosen (speed-aware may keep one more
    # layer in fp32 where this CPU runs it faster, and is tested on its own)
    m, out = _manifest(job_bucket, outlier_model, "fallback", **{"quantization.accuracyControl": {"rankingSamples": 128},
                                                                 "quantization.speedAware": "off"})
    run = kubeslim_job("run", m, timeout=400)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r = run.result.results
    fb = r.fallback
    n = outlier_model["eval_samples"]
    assert round(r.fp32.top1 * n) == round(outlier_model["fp32_top1"] * n)
    # plain PTQ really missed the gate: its row is in the table, far below it
    plain = next(c for c in r.candidates if c.fp32_layers is None)
    assert plain.accuracy_drop > GATE and fb.plain_accuracy_drop == pytest.approx(plain.accuracy_drop)
    # ...and keeping the one layer that reads the outlier tensor in fp32 recovers it
    assert fb.mode == "onGateFailure" and fb.passed and fb.stop_reason == "GatePassed"
    assert fb.fp32_layers == [outlier_model["outlier_layer"]] and fb.ranked_layers == 3 and fb.steps == 1
    assert r.int8.fp32_layers == 1 and r.int8.top1 >= r.fp32.top1 - GATE and run.result.gate.passed
    step = next(c for c in r.candidates if c.fp32_layers == 1)
    assert step.top1 == r.int8.top1 and fb.latency_cost == pytest.approx(step.latency_ms / plain.latency_ms, rel=0.01)
    prefix = out.split("/", 3)[3]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=job_bucket["bucket"], Prefix=prefix)["Contents"]}
    assert {f"{prefix}sensitivity.png", f"{prefix}fallback.png", f"{prefix}model.pdmodel"} <= keys
    report = json.loads(s3.get_object(Bucket=job_bucket["bucket"], Key=f"{prefix}report.json")["Body"].read())
    sens = sorted(report["fallback"]["sensitivity"], key=lambda s: -s["flipRate"])
    assert [s["layer"] for s in sens][0] == outlier_model["outlier_layer"]
    assert sens[0]["flipRate"] > 2 * sens[1]["flipRate"]


def test_without_fallback_the_same_model_fails_its_gate(kubeslim_job, job_bucket, outlier_model):
    m, _ = _manifest(job_bucket, outlier_model, "nofallback", **{"quantization.accuracyControl": {"mode": "off"}})
    run = kubeslim_job("run", m)
    assert run.rc == EXIT_ACCURACY_GATE, (run.result, run.stderr[-3000:])
    assert run.result.results.fallback is None and run.result.results.accuracy_drop > GATE
    assert "accuracyControl" in run.result.message
