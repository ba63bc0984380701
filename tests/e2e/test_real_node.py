"""What only real containers on a real kubelet can show: memory limits enforced by the kernel,
the job image's own contents, containers stopped when their QuantizationJob goes, and each
stage's log kept by the kubelet (see conftest.py for the Helm-installed operator)."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import wait_until
from tests.e2e.test_quantizationjob_e2e import apply, get_qj

pytestmark = pytest.mark.timeout(900)


def pods_of(kubectl, namespace: str, qj_name: str) -> list[dict]:
    """The pods of the first generation's Job (the operator names it <name>-g1)."""
    out = kubectl("-n", namespace, "get", "pods", "-l", f"batch.kubernetes.io/job-name={qj_name}-g1", "-o", "json").stdout
    return json.loads(out)["items"]


def running_task_ids(devenv) -> set[str]:
    """Container ids the node's containerd is running right now (its k8s.io namespace: the kubelet's)."""
    out = subprocess.run(["ctr", "--address", devenv.info["node"]["containerd"], "-n", "k8s.io", "tasks", "ls"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines()[1:] if line.split()[-1] == "RUNNING"}


def wait_phase(kubectl, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 600) -> dict:
    def reached():
        st = get_qj(kubectl, namespace, name).get("status", {})
        return st if st.get("phase") in phases else None
    return wait_until(reached, timeout=timeout, interval=1, what=f"{name} in {phases}")


def test_calibration_out_of_memory_is_reported(operator_release, e2e_namespace, digits_manifest, kubectl):
    # Measured on the real node: the export fits in 200Mi, calibrating batches of 512 does not
    # fit in 400Mi; 320Mi sits well inside both margins, and the kernel's OOM killer decides.
    apply(kubectl, e2e_namespace, digits_manifest("oom", **{
        "resources.memory": "320Mi", "runPolicy": {"backoffLimit": 0},
        "quantization.algos": ["hist"], "quantization.batchSize": 512, "quantization.batchNums": 2,
        "data.calibration.samples": 1024}))
    st = wait_phase(kubectl, e2e_namespace, "oom", ("Failed", "Succeeded"))
    assert st["phase"] == "Failed" and st["reason"] == "OOMKilled", st
    assert "calibrate stage ran out of memory (320Mi)" in st["message"] and "spec.resources.memory" in st["message"]
    (pod,) = pods_of(kubectl, e2e_namespace, "oom")
    states = {s["name"]: s["state"] for s in pod["status"]["initContainerStatuses"]}
    assert states["export"]["terminated"]["exitCode"] == 0
    assert states["calibrate"]["terminated"]["reason"] == "OOMKilled"


def test_module_missing_from_the_image_is_named(operator_release, e2e_namespace, digits_manifest, kubectl):
    doc = digits_manifest("nomodule")
    doc["spec"]["model"]["custom"] = {"module": "kubeslim_models.not_in_image", "factory": "build_model"}
    apply(kubectl, e2e_namespace, doc)
    st = wait_phase(kubectl, e2e_namespace, "nomodule", ("Failed", "Succeeded"))
    assert st["phase"] == "Failed", st
    assert "kubeslim_models.not_in_image" in st["message"] and "spec.model.custom.module" in st["message"]
    assert st["stage"] == "Exporting"


def test_deleting_a_running_quantizationjob_stops_its_containers(operator_release, e2e_namespace, digits_manifest, kubectl, devenv):
    apply(kubectl, e2e_namespace, digits_manifest("stopme", **{"quantization.algos": ["hist"]}))

    def running_containers():
        for pod in pods_of(kubectl, e2e_namespace, "stopme"):
            ids = {s["containerID"].split("://", 1)[1] for s in pod["status"].get("initContainerStatuses", []) + pod["status"].get("containerStatuses", [])
                   if "running" in s.get("state", {}) and s.get("containerID")}
            if ids:
                return ids
        return None
    ids = wait_until(running_containers, timeout=300, interval=0.5, what="a running stage container of stopme")
    assert ids <= running_task_ids(devenv)
    kubectl("-n", e2e_namespace, "delete", "qj", "stopme", "--wait=false")
    wait_until(lambda: not (ids & running_task_ids(devenv)), timeout=60, what="the stage containers of stopme to stop")
    wait_until(lambda: not pods_of(kubectl, e2e_namespace, "stopme"), timeout=60, what="the pods of stopme to go")


def test_each_stage_log_is_readable(operator_release, e2e_namespace, digits_manifest, kubectl):
    apply(kubectl, e2e_namespace, digits_manifest("logs", **{"quantization.algos": ["avg"]}))
    kubectl("-n", e2e_namespace, "wait", "--for=condition=Ready", "qj/logs", "--timeout=600s", timeout=620)
    (pod,) = pods_of(kubectl, e2e_namespace, "logs")
    logs = {stage: kubectl("-n", e2e_namespace, "logs", pod["metadata"]["name"], "-c", stage).stdout
            for stage in ("export", "calibrate", "verify")}
    for stage, text in logs.items():
        assert text.strip(), f"{stage}: empty log"
    # Each stage logs what it did, in its own container's log.
    assert "export" in logs["export"].lower()
    assert "avg" in logs["calibrate"]
    assert "top1" in logs["verify"].lower() or "accuracy" in logs["verify"].lower()
