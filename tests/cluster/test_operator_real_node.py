"""What only a real kubelet reports, seen by the operator on the CR: a missing credentials Secret
(or key), picked up once it exists although the operator may not read Secrets (the kubelet's
CreateContainerConfigError), and a job image the node does not have (ErrImageNeverPull). The pods
run on the devenv's real node (devenv/node.sh) with the job image built from our Dockerfile."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from operator_harness import OperatorProcess, crd, operator_identity, qj, qj_manifest  # noqa: F401

pytestmark = pytest.mark.timeout(240)
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex     # must never show up in status, events or logs


@pytest.fixture
def start_operator(crd, operator_identity, namespace, tmp_path):
    started = []

    def start(job_image: str) -> OperatorProcess:
        op = OperatorProcess(Path(operator_identity["kubeconfig"]), namespace, tmp_path,
                             env={"KUBESLIM_JOB_IMAGE": job_image, "KUBESLIM_JOB_IMAGE_PULL_POLICY": "Never"}).start()
        started.append(op)
        return op
    yield start
    for op in started:
        op.stop()


@pytest.fixture
def operator(start_operator, node_images):
    return start_operator(node_images.job)


def test_missing_secret_then_key_then_both(operator, qj, namespace, kubectl, real_node):
    manifest = qj_manifest(
        "creds", namespace,
        storage={"endpoint": "http://127.0.0.1:9", "credentialsSecret": {"name": "s3-creds"}},
        resources={"gpu": 1, "cpu": "1", "memory": "2Gi"},
        runPolicy={"backoffLimit": 0, "activeDeadlineSeconds": 120})
    manifest["spec"]["scheduling"] = real_node.scheduling
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


def test_image_missing_on_the_node_fails_naming_the_image(start_operator, node_images, qj, namespace, real_node):
    # The devenv's reference may pin a digest (repo:tag@sha256:…): the repository, another tag.
    repository = node_images.job.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    missing = f"{repository}:not-built-{uuid.uuid4().hex[:6]}"
    start_operator(missing)
    manifest = qj_manifest("noimage", namespace, storage={"endpoint": "http://127.0.0.1:9"},
                           resources={"gpu": 1, "cpu": "1", "memory": "2Gi"}, runPolicy={"backoffLimit": 0, "activeDeadlineSeconds": 120})
    manifest["spec"]["scheduling"] = real_node.scheduling
    qj.apply(manifest)
    st = qj.wait_phase("noimage", "Failed", timeout=90)
    assert st["reason"] == "ImagePullBackOff"
    assert "ErrImageNeverPull" in st["message"] and missing in st["message"]
    assert "KUBESLIM_JOB_IMAGE" in st["message"]
