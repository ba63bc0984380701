"""spec.output.onnx on the real node: the job-cpu image (paddle2onnx and onnxruntime from its
wheelhouse) writes model.onnx beside the Paddle files and the operator links it in the status."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import BUCKET, REPO, applied_until_final

pytestmark = pytest.mark.timeout(900)


def test_onnx_is_exported_and_linked(operator_release, e2e_namespace, digits_manifest, kubectl, seeded):
    # maxAccuracyDelta 0.05: onnxruntime's int8 kernels on this AVX2-only CPU lose about 2 points
    # against Paddle's oneDNN int8 on the digits CNN (measured in tests/job/test_onnx.py).
    # Helm installs crds/ only where the CRD is absent: a cluster with an older one would prune
    # spec.output.onnx and status.results.onnx without a word.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "kubeslim.io_quantizationjobs.yaml"))
    doc = digits_manifest("onnx", **{"quantization.algos": ["hist"],
                                     "output.onnx": {"enabled": True, "maxAccuracyDelta": 0.05}})
    st = applied_until_final(kubectl, e2e_namespace, doc, timeout=600)
    assert st.get("phase") == "Succeeded", st
    onnx, uri = st["results"]["onnx"], st["artifacts"]["onnx"]
    assert onnx["exported"] is True and onnx["reason"] == "Exported", onnx
    assert onnx["converter"] == "paddle2onnx 1.2.11" and onnx["runtime"].startswith("onnxruntime 1.32.0")
    assert uri == st["artifacts"]["model"].rsplit("/", 1)[0] + "/model.onnx"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["OnnxExported"]["status"] == "True" and conds["OnnxExported"]["reason"] == "Exported"
    assert f"ONNX at {uri}" in st["message"]
    key = uri[len(f"s3://{BUCKET}/"):]
    body = seeded.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert len(body) == onnx["sizeBytes"] and b"QuantizeLinear" in body and b"DequantizeLinear" in body
