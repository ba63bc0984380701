"""A detector as a QuantizationJob on the real node: examples/ppyoloe.yaml (PP-YOLOE+ s exported as
PaddleDetection exports it, inputs image + scale_factor, NMS output; npz data keyed by input name;
verification.metric fidelity) applied as a user would, through the Helm-installed operator to the
job image's export, calibration and verification containers (see conftest.py)."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import json

import pytest
import yaml

from kubeslim_dev import zoo
from tests.e2e.conftest import BUCKET, REPO

pytestmark = pytest.mark.timeout(900)


def test_detector_quantized_on_the_real_node(operator_release, e2e_namespace, kubectl, s3, s3_env, wait_for, tmp_path):
    zoo.seed(s3, BUCKET, "ppyoloe", tmp_path)
    text = (REPO / "examples" / "ppyoloe.yaml").read_text().replace(f"s3://{zoo.EXAMPLE_BUCKET}/", f"s3://{BUCKET}/")
    doc = yaml.safe_load(text)
    spec = doc["spec"]
    spec["output"]["uri"] = f"s3://{BUCKET}/out/{e2e_namespace}/ppyoloe/"
    spec["storage"]["endpoint"] = s3_env["AWS_ENDPOINT_URL"]
    # The plain gate's verdict: the fp32 fallback (on by default) would take minutes on a failure.
    spec["quantization"]["accuracyControl"] = {"mode": "off"}
    name = doc["metadata"]["name"]
    kubectl("-n", e2e_namespace, "apply", "-f", "-", input=json.dumps(doc))

    def final_status() -> dict | None:
        st = json.loads(kubectl("-n", e2e_namespace, "get", "qj", name, "-o", "json").stdout).get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    st = wait_for(final_status, timeout=600, interval=3, what=f"qj/{name} to finish")
    assert st["phase"] == "Succeeded", st
    res = st["results"]
    assert res["backend"] == "cpu-onednn-int8"
    fid = res["int8"]["fidelity"]
    assert spec["verification"]["minCosine"] <= fid["cosine"] <= 1.0
    # Both outputs of the export are compared or named as not comparable: the boxes and bbox_num.
    assert len(fid["perOutput"]) == 2 and all(o["comparable"] or o.get("reason") for o in fid["perOutput"])
    assert st["artifacts"]["model"] == spec["output"]["uri"] + "model.pdmodel"
    key = st["artifacts"]["model"][len(f"s3://{BUCKET}/"):]
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0

    # The wide table leaves FP32/INT8/DROP blank under fidelity: read COSINE at its header's offset.
    header, row = kubectl("-n", e2e_namespace, "get", "qj", name, "-o", "wide").stdout.splitlines()[:2]
    assert float(row[header.index("COSINE"):].split()[0]) == pytest.approx(fid["cosine"], abs=1e-4)
