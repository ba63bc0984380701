"""The operator on the real control plane: one QuantizationJob's journey per test, pods finished
by kwok Stages as the pod annotations say (spec.podMetadata). The operator runs with exactly the
ClusterRole in operator/rbac/clusterrole.yaml (see operator_harness.py)."""
from __future__ import annotations

import json
import re

import pytest

from operator_harness import (JOB_IMAGE, bad_input_message, crd, fake, gate_failed_message, operator,  # noqa: F401
                               operator_identity, qj, qj_manifest, verify_ok_message)

pytestmark = pytest.mark.timeout(180)


def writes_by_operator(metrics_text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        m = re.match(r'kubeslim_api_requests_total\{code="(\d+)",resource="([^"]+)",verb="([A-Z]+)"\} ([0-9.e+]+)', line)
        if m and m.group(3) != "GET":
            key = f"{m.group(3)} {m.group(2)}"
            out[key] = out.get(key, 0) + float(m.group(4))
    return out


def test_success_results_in_status_and_kubectl_get(operator, qj, kubectl, namespace):
    qj.apply(qj_manifest("mv3", namespace, annotations=fake(exit_code=0, message=verify_ok_message(), container="verify")))
    st = qj.wait_phase("mv3", "Succeeded")
    assert st["observedGeneration"] == 1 and st["jobName"] == "mv3-g1"
    assert st["reason"] == "" or "reason" not in st
    assert st["results"]["int8"] == {"algo": "hist", "top1": 0.7488, "top5": 0.921, "latencyMs": 1.9,
                                     "throughput": 3300.0, "sizeBytes": 5900000}
    assert st["results"]["fp32"]["top1"] == 0.7532 and st["results"]["accuracyDrop"] == 0.0044
    assert st["results"]["candidates"][0]["calibrationSeconds"] == 41.0
    assert st["artifacts"] == {"model": "s3://models/out/model.pdmodel", "params": "s3://models/out/model.pdiparams",
                               "report": "s3://models/out/report.html", "reportJson": "s3://models/out/report.json"}
    assert st["startTime"] and st["completionTime"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["Reconciling"]["status"] == "False" and conds["Stalled"]["status"] == "False"
    assert conds["AccuracyGate"]["status"] == "True" and conds["Scheduled"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in st["conditions"])
    # kubectl get qj shows the printer columns
    table = kubectl("get", "qj", "mv3", "-n", namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:8] == ["NAME", "PHASE", "STAGE", "ALGO", "FP32", "INT8", "DROP", "AGE"] or \
        {"PHASE", "ALGO", "FP32", "INT8", "DROP"} <= set(header)
    assert "Succeeded" in row and "hist" in row and "0.7532" in row and "0.7488" in row and "0.0044" in row
    # the Job: deterministic name, owner reference, the configured image, one pod
    (job,) = qj.jobs()
    assert job["metadata"]["name"] == "mv3-g1"
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("QuantizationJob", "mv3", qj.get("mv3")["metadata"]["uid"], True)
    tmpl = job["spec"]["template"]["spec"]
    assert {c["image"] for c in tmpl["initContainers"] + tmpl["containers"]} == {JOB_IMAGE}
    assert tmpl["automountServiceAccountToken"] is False
    # one event per transition, the last one says Succeeded
    events = qj.events("mv3")
    assert events and events[-1]["reason"] == "Succeeded" and events[-1]["type"] == "Normal"
    assert events[-1]["source"]["component"] == "kubeslim-operator"
    # the write budget: Job create + (status patch + event) per visible transition
    writes = writes_by_operator(operator.metrics())
    assert writes.get("POST jobs") == 1
    assert sum(writes.values()) <= 6, writes
    assert f'kubeslim_quantizationjobs{{namespace="{namespace}",phase="Succeeded"}} 1.0' in operator.metrics()


def test_accuracy_gate_failed(operator, qj, namespace):
    qj.apply(qj_manifest("gate", namespace, runPolicy={"backoffLimit": 3},
                         annotations=fake(exit_code=4, message=gate_failed_message(), container="verify")))
    st = qj.wait_phase("gate", "Failed", "AccuracyGateFailed")
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["AccuracyGate"]["status"] == "False" and conds["AccuracyGate"]["reason"] == "AccuracyGateFailed"
    assert conds["Ready"]["status"] == "False" and conds["Stalled"]["status"] == "True"
    assert conds["Reconciling"]["status"] == "False"
    assert st["results"]["accuracyDrop"] == 0.0044 and st["artifacts"]["report"].endswith("report.html")
    assert "maxAccuracyDrop" in st["message"] and st["stage"] == "Verifying"
    assert len(qj.pods("gate-g1")) == 1                 # exit 4 is not retried (podFailurePolicy)
    assert qj.events("gate")[-1]["type"] == "Warning"


@pytest.mark.parametrize("spec,needle", [
    ({"scheduling": {"tolerations": []}}, "untolerated taint"),
    ({"resources": {"gpu": 16}}, "Insufficient nvidia.com/gpu"),
], ids=["no-toleration", "too-many-gpus"])
def test_unschedulable(operator, qj, namespace, spec, needle):
    qj.apply(qj_manifest("unsched", namespace, **spec))
    st = qj.wait_phase("unsched", "Pending", "Unschedulable")
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Scheduled"]["status"] == "False" and conds["Scheduled"]["reason"] == "Unschedulable"
    assert needle in conds["Scheduled"]["message"]          # the scheduler's own words
    assert needle in st["message"]
    assert conds["Reconciling"]["status"] == "True" and conds["Ready"]["status"] == "False"
    assert any(e["reason"] == "Unschedulable" and e["type"] == "Warning" for e in qj.events("unsched"))


def test_oom_killed(operator, qj, namespace):
    qj.apply(qj_manifest("oom", namespace, annotations=fake(exit_code=137, reason="OOMKilled", container="calibrate")))
    st = qj.wait_phase("oom", "Failed", "OOMKilled")
    assert st["stage"] == "Calibrating" and "4Gi" in st["message"] and "spec.resources.memory" in st["message"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Stalled"]["status"] == "True" and conds["Stalled"]["reason"] == "OOMKilled"


def test_non_retryable_exit_code_fails_at_once(operator, qj, namespace):
    qj.apply(qj_manifest("badin", namespace, runPolicy={"backoffLimit": 4},
                         annotations=fake(exit_code=3, message=bad_input_message(), container="export")))
    st = qj.wait_phase("badin", "Failed")
    assert (st["reason"], st["stage"]) == ("NoSuchKey", "Exporting")
    assert "spec.model.builtin.weights" in st["message"]
    assert len(qj.pods("badin-g1")) == 1
    job = qj.jobs()[0]
    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["reason"] == "PodFailurePolicy"


def test_crash_without_result_is_retried_then_fails(operator, qj, namespace):
    qj.apply(qj_manifest("crash", namespace, runPolicy={"backoffLimit": 1},
                         annotations=fake(exit_code=1, message="Traceback (most recent call last):\nKeyError: 'x'", container="export")))
    st = qj.wait_phase("crash", "Failed", timeout=90)
    assert st["reason"] == "StageFailed" and "KeyError: 'x'" in st["message"]
    assert len(qj.pods("crash-g1")) == 2


def test_bad_result_message(operator, qj, namespace):
    qj.apply(qj_manifest("badmsg", namespace, annotations=fake(exit_code=0, message="not json", container="verify")))
    st = qj.wait_phase("badmsg", "Failed", "BadResultMessage")
    assert "not a result" in st["message"]


def test_retry_then_success(operator, qj, namespace, wait_for):
    qj.apply(qj_manifest("retry", namespace, runPolicy={"backoffLimit": 2}, annotations=fake(duration="24h")))
    first = wait_for(lambda: [p for p in qj.pods("retry-g1") if p["status"].get("phase") == "Running"], what="first pod running")[0]
    qj.wait_phase("retry", "Running")
    # the first attempt fails transiently (EX_TEMPFAIL) ...
    qj.annotate_pod(first["metadata"]["name"], fake(exit_code=75, duration="0s"))
    qj.wait_phase("retry", "Pending", "Retrying")
    # ... the Job makes a second pod, which succeeds
    second = wait_for(lambda: [p for p in qj.pods("retry-g1") if p["metadata"]["name"] != first["metadata"]["name"]
                               and p["status"].get("phase") == "Running"], timeout=60, what="second pod")[0]
    qj.annotate_pod(second["metadata"]["name"], fake(exit_code=0, message=verify_ok_message(), container="verify", duration="0s"))
    st = qj.wait_phase("retry", "Succeeded")
    assert st["results"]["int8"]["algo"] == "hist"
    assert len(qj.jobs()) == 1


def test_deadline_exceeded(operator, qj, namespace):
    qj.apply(qj_manifest("late", namespace, runPolicy={"activeDeadlineSeconds": 3}, annotations=fake(duration="24h")))
    st = qj.wait_phase("late", "Failed", "DeadlineExceeded", timeout=60)
    assert "activeDeadlineSeconds (3 s)" in st["message"]


def test_missing_ca_configmap_then_created(operator, qj, namespace, kubectl):
    qj.apply(qj_manifest("ca", namespace, storage={"caBundle": {"configMapName": "s3-ca", "key": "ca.crt"}},
                         annotations=fake(exit_code=0, message=verify_ok_message(), container="verify")))
    st = qj.wait_phase("ca", "Pending", "ConfigMapNotFound")
    assert {c["type"]: c for c in st["conditions"]}["CredentialsReady"]["status"] == "False"
    assert "s3-ca" in st["message"]
    assert qj.jobs() == []                                   # before any pod (or Job) is made
    assert any(e["reason"] == "ConfigMapNotFound" for e in qj.events("ca"))
    kubectl("create", "configmap", "s3-ca", "-n", namespace, "--from-literal=other=x")
    qj.wait_phase("ca", "Pending", "ConfigMapKeyNotFound")
    kubectl("create", "configmap", "s3-ca", "-n", namespace, "--from-literal=ca.crt=PEM", "--dry-run=client", "-o", "yaml")
    kubectl("patch", "configmap", "s3-ca", "-n", namespace, "--type=merge", "-p", json.dumps({"data": {"ca.crt": "PEM"}}))
    st = qj.wait_phase("ca", "Succeeded", timeout=60)
    vols = {v["name"]: v for v in qj.jobs()[0]["spec"]["template"]["spec"]["volumes"]}
    assert vols["ca-bundle"]["configMap"]["name"] == "s3-ca"


def test_spec_change_stops_the_old_run_and_starts_a_new_one(operator, qj, namespace, kubectl, wait_for):
    qj.apply(qj_manifest("change", namespace, annotations=fake(duration="24h")))
    qj.wait_phase("change", "Running")
    kubectl("patch", "qj", "change", "-n", namespace, "--type=merge", "-p", json.dumps(
        {"spec": {"quantization": {"algos": ["KL", "hist"]},
                  "podMetadata": {"annotations": fake(exit_code=0, message=verify_ok_message(), container="verify", duration="0s")}}}))
    st = qj.wait("change", lambda s: s if s.get("observedGeneration") == 2 and s.get("phase") == "Succeeded" else None,
                 what="generation 2 succeeded")
    assert st["jobName"] == "change-g2"
    names = wait_for(lambda: (lambda n: n if n == ["change-g2"] else None)(sorted(j["metadata"]["name"] for j in qj.jobs())),
                     what="the g1 Job deleted")
    assert names == ["change-g2"]
    spec_env = next(e for e in qj.jobs()[0]["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "KUBESLIM_SPEC")
    assert json.loads(spec_env["value"])["quantization"]["algos"] == ["KL", "hist"]


def test_deletion_removes_children(operator, qj, namespace, kubectl, wait_for):
    qj.apply(qj_manifest("gone", namespace, annotations=fake(duration="24h")))
    qj.wait_phase("gone", "Running")
    assert qj.jobs() and qj.pods()
    kubectl("delete", "qj", "gone", "-n", namespace, "--wait=true")
    wait_for(lambda: not qj.jobs() and not qj.pods(), timeout=60, what="Job and pods garbage-collected")


def test_result_survives_a_zero_ttl(operator, qj, namespace, wait_for):
    """ttlSecondsAfterFinished: 0 deletes the Job and its pods (with the results in their
    termination messages) right after the end: the result must be in the status by then, and
    the status must stay once the Job is gone."""
    qj.apply(qj_manifest("ttl0", namespace, runPolicy={"ttlSecondsAfterFinished": 0},
                         annotations=fake(exit_code=0, message=verify_ok_message(), container="verify", duration="1s")))
    st = qj.wait_phase("ttl0", "Succeeded")
    assert st["results"]["int8"]["algo"] == "hist"
    wait_for(lambda: not qj.jobs(), timeout=60, what="the TTL controller deleted the Job")
    import time as _t
    _t.sleep(2)
    assert qj.status("ttl0")["phase"] == "Succeeded" and qj.status("ttl0")["results"]["int8"]["algo"] == "hist"
