"""Accuracy-aware quantization in the cluster: a QuantizationJob on the real node (operator from the
chart, job-cpu image) whose plain int8 misses the gate, recovered by keeping the one layer that
reads a massive-activation channel in fp32 (the model is explained in kubeslim_dev.outliers and
tests/job/test_fallback.py). Small on purpose: 64 calibration digits, ranking on 64 samples."""
from __future__ import annotations

import json

import pytest

from kubeslim_dev import digits, outliers
from tests.e2e.conftest import BUCKET

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def outlier_seeded(seeded):
    return outliers.seed(seeded, BUCKET, "outlier", calib_samples=64)


def test_fallback_recovers_the_gate_in_the_cluster(operator_release, e2e_namespace, kubectl, s3_env, outlier_seeded):
    m = digits.manifest("fallback", outlier_seeded["model"], outlier_seeded["calibration"], outlier_seeded["evaluation"],
                        f"s3://{BUCKET}/out/{e2e_namespace}/fallback/", ["hist"], endpoint=s3_env["AWS_ENDPOINT_URL"], max_drop=0.02,
                        # speedAware off: speed-aware may keep one more layer in fp32 where this CPU runs it
                        # faster (a third candidate row); it is tested on its own
                        **{"quantization.accuracyControl": {"rankingSamples": 64}, "quantization.speedAware": "off",
                           "storage.credentialsSecret": {"name": "s3-creds"},
                           "resources": {"gpu": 1, "cpu": "1", "memory": "4Gi"},
                           "scheduling.tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]})
    kubectl("-n", e2e_namespace, "apply", "-f", "-", input=json.dumps(m))
    kubectl("-n", e2e_namespace, "wait", "--for=condition=Ready", "qj/fallback", "--timeout=600s", timeout=620)
    st = json.loads(kubectl("-n", e2e_namespace, "get", "qj", "fallback", "-o", "json").stdout)["status"]
    res = st["results"]
    fb = res["fallback"]
    assert st["phase"] == "Succeeded" and res["backend"] == "cpu-onednn-int8"
    assert fb["plainAccuracyDrop"] > 0.02 and fb["passed"] and fb["fp32Layers"] == [outlier_seeded["outlier_layer"]]
    assert res["int8"]["fp32Layers"] == 1 and res["accuracyDrop"] <= 0.02
    assert sorted((c.get("fp32Layers") or 0) for c in res["candidates"]) == [0, 1]
    assert f"kept in fp32 ({outlier_seeded['outlier_layer']}" in st["message"]
