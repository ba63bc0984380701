"""A missing credentials Secret (or key) is reported on the CR and picked up once it exists —
although the operator may not read Secrets. A real kubelet stand-in is needed here (kwok does not
resolve env): the dev node agent (hack/devnode), on a Node of its own with a private taint,
reports CreateContainerConfigError with kubelet's messages exactly as kubelet does."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from operator_harness import crd, operator, operator_identity, qj, qj_manifest  # noqa: F401
from tests.devnode_agent import private_devnode

pytestmark = pytest.mark.timeout(240)
TAINT = "kubeslim.io/devnode-operator-test"
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex     # must never show up in status, events or logs


@pytest.fixture(scope="module")
def devnode(kubeconfig, tmp_path_factory):
    with private_devnode(kubeconfig, "devnode-op", TAINT, tmp_path_factory.mktemp("devnode"), ("--gpus", "1")) as node:
        yield {"name": node.name, "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]}


def test_missing_secret_then_key_then_both(operator, qj, namespace, kubectl, devnode):
    manifest = qj_manifest(
        "creds", namespace,
        storage={"endpoint": "http://127.0.0.1:9", "credentialsSecret": {"name": "s3-creds"}},
        resources={"gpu": 1, "cpu": "1", "memory": "2Gi"},
        runPolicy={"backoffLimit": 0, "activeDeadlineSeconds": 120})
    manifest["spec"]["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": devnode["name"]},
                                      "tolerations": devnode["tolerations"]}
    qj.apply(manifest)
    st = qj.wait_phase("creds", "Pending", "SecretNotFound", timeout=60)
    cond = qj.conditions("creds")["CredentialsReady"]
    assert cond["status"] == "False" and cond["reason"] == "SecretNotFound"
    assert "s3-creds" in st["message"] and "spec.storage.credentialsSecret.name" in st["message"]
    assert any(e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in qj.events("creds"))

    kubectl("create", "secret", "generic", "s3-creds", "-n", namespace, f"--from-literal=AWS_ACCESS_KEY_ID={SECRET_VALUE}")
    st = qj.wait_phase("creds", "Pending", "SecretKeyNotFound", timeout=60)
    assert "AWS_SECRET_ACCESS_KEY" in st["message"]

    kubectl("patch", "secret", "s3-creds", "-n", namespace, "--type=merge",
            "-p", json.dumps({"stringData": {"AWS_SECRET_ACCESS_KEY": SECRET_VALUE}}))
    st = qj.wait("creds", lambda s: s if s.get("reason") not in ("SecretNotFound", "SecretKeyNotFound") else None,
                 what="credentials found", timeout=60)
    qj.wait("creds", lambda s: qj.conditions("creds").get("CredentialsReady", {}).get("status") == "True",
            what="CredentialsReady=True", timeout=60)
    # No secret value anywhere the operator writes.
    time.sleep(1)
    everything = json.dumps(qj.get("creds")) + json.dumps(qj.events("creds")) + operator.log()
    assert SECRET_VALUE not in everything
