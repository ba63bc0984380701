"""A planted credential never shows up anywhere a user, a log collector or another tenant can read:
the QuantizationJob (status included), events, the Job and Pod objects (specs, statuses,
termination messages), the operator's log and every container's log.

Real pods on the devenv's real node, so the job image really reads the credentials and really fails
with them (the planted values are wrong: the S3 server refuses them, the most talkative path).
"""
from __future__ import annotations

import json
import uuid

import pytest

from operator_harness import crd, operator_identity, qj, qj_manifest  # noqa: F401
from operator_harness import operator_on_real_node as operator  # noqa: F401

pytestmark = pytest.mark.timeout(300)


def test_planted_credentials_leak_nowhere(operator, qj, namespace, kubectl, s3_env, bucket, real_node):
    canary_secret = f"leak-canary-secret-{uuid.uuid4().hex}"
    canary_id = f"LEAKCANARYID{uuid.uuid4().hex[:12].upper()}"
    secrets = {
        # The right key id with a wrong secret: the server checks the signature and refuses it.
        "wrong-secret": ({"AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": canary_secret},
                         "SignatureDoesNotMatch"),
        # An unknown key id: the error a server answers names the key it does not know, if anyone's does.
        "unknown-id": ({"AWS_ACCESS_KEY_ID": canary_id, "AWS_SECRET_ACCESS_KEY": canary_secret}, "InvalidAccessKeyId"),
    }
    for name, (data, _) in secrets.items():
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                                      "metadata": {"name": name, "namespace": namespace}, "stringData": data}))
        manifest = qj_manifest(name, namespace,
                               model={"builtin": {"architecture": "mobilenet_v3_small", "weights": f"s3://{bucket}/w.pdparams"}},
                               storage={"endpoint": s3_env["AWS_ENDPOINT_URL"], "addressingStyle": "path",
                                        "credentialsSecret": {"name": name}},
                               resources={"gpu": 1, "cpu": "1", "memory": "2Gi"},
                               runPolicy={"backoffLimit": 0, "activeDeadlineSeconds": 180})
        manifest["spec"]["scheduling"] = real_node.scheduling
        qj.apply(manifest)
    for name, (_, reason) in secrets.items():
        st = qj.wait_phase(name, "Failed", timeout=180)
        # The control: the planted values did reach the pod and were used (and refused).
        assert st["reason"] == reason, st

    places = {
        "QuantizationJobs": kubectl("get", "qj", "-n", namespace, "-o", "json").stdout,
        "events": kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "Jobs": kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout,
        "Pods (specs, statuses, termination messages)": kubectl("get", "pods", "-n", namespace, "-o", "json").stdout,
        "operator log": operator.log(),
    }
    for pod in qj.pods():
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            logs = kubectl("logs", pod["metadata"]["name"], "-n", namespace, "-c", c["name"], check=False)
            places[f"log of {pod['metadata']['name']}/{c['name']}"] = logs.stdout + logs.stderr
    assert any("export" in p for p in places), "no pod log was read"
    for canary in (canary_secret, canary_id):
        leaked = [where for where, text in places.items() if canary in text]
        assert not leaked, f"{canary} found in: {leaked}"
