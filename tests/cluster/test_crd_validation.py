"""The API server itself rejects invalid QuantizationJobs (OpenAPI schema + CEL), naming the field.
The same table runs against the typed model in tests/unit/test_spec.py."""
from __future__ import annotations

import json
import uuid

import pytest

from operator_harness import crd  # noqa: F401
from tests.invalid_specs import INVALID_SPECS, VALID_SPEC, invalid_spec


def manifest(name: str, namespace: str, spec: dict) -> str:
    return json.dumps({"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


@pytest.fixture(scope="module")
def target_namespace(kubectl):
    # Server-side dry runs persist nothing: one namespace for the module is enough (its own, removed after).
    name = f"kubeslim-crd-validation-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_valid_spec_is_accepted_and_defaulted(crd, kubectl, target_namespace):
    out = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=manifest("ok", target_namespace, VALID_SPEC)).stdout
    spec = json.loads(out)["spec"]
    assert spec["quantization"]["algos"] == ["hist"]
    assert spec["verification"]["maxAccuracyDrop"] == 0.01
    assert "preprocess" not in spec["data"]     # the job, not the apiserver, fills it: it must tell set from unset
    assert spec["runPolicy"] == {"backoffLimit": 1, "activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 86400}


def test_calibration_from_a_plain_image_prefix_is_accepted(crd, kubectl, target_namespace):
    """What a new user writes first: a prefix of JPEG/PNG files, no list file, no preprocess."""
    calibration = {"uri": "s3://datasets/digits/train-png/", "format": "imagePrefix", "samples": 64}
    spec = {**VALID_SPEC, "data": {**VALID_SPEC["data"], "calibration": calibration}}
    out = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=manifest("prefix", target_namespace, spec)).stdout
    data = json.loads(out)["spec"]["data"]
    assert data["calibration"] == calibration and "preprocess" not in data


def test_unlabelled_evaluation_prefix_is_accepted_under_metric_agreement(crd, kubectl, target_namespace):
    """Users without labels: evaluation from a plain prefix, gated on int8/fp32 top-1 agreement (the
    same spec with metric top1 is the rejected case evaluation-image-prefix-has-no-labels)."""
    evaluation = {"uri": "s3://datasets/digits/val-png/", "format": "imagePrefix"}
    spec = {**VALID_SPEC, "data": {**VALID_SPEC["data"], "evaluation": evaluation},
            "verification": {"metric": "agreement", "maxAccuracyDrop": 0.02}}
    out = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=manifest("agree", target_namespace, spec)).stdout
    got = json.loads(out)["spec"]
    assert got["data"]["evaluation"] == evaluation
    assert got["verification"] == {"metric": "agreement", "maxAccuracyDrop": 0.02, "minCosine": 0.99, "batchSize": 64,
                                   "backend": "auto"}


@pytest.mark.parametrize("case_id, mutate, field", INVALID_SPECS, ids=[c[0] for c in INVALID_SPECS])
def test_invalid_spec_is_rejected_by_the_apiserver(crd, kubectl, target_namespace, case_id, mutate, field):
    proc = kubectl("create", "--dry-run=server", "-f", "-", input=manifest(case_id, target_namespace, invalid_spec(mutate)), check=False)
    assert proc.returncode != 0, f"{case_id} was accepted"
    assert "is invalid" in proc.stderr and field in proc.stderr, proc.stderr


def test_unknown_field_is_rejected(crd, kubectl, target_namespace):
    spec = {**VALID_SPEC, "quantization": {"algo": ["hist"]}}
    proc = kubectl("create", "--dry-run=server", "-f", "-", input=manifest("typo", target_namespace, spec), check=False)
    assert proc.returncode != 0 and 'unknown field "spec.quantization.algo"' in proc.stderr
