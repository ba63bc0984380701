"""QuantizationJobs through a real Kueue (devenv/kueue.sh: the controller built from its module at
KUEUE_VERSION, its own webhook certificates, a ClusterQueue with nvidia.com/gpu quota 2): Kueue's
webhook suspends each Job, Kueue admits two, and the third waits — with 4 GPUs and the CPU to
spare on the real node, only Kueue's quota holds it — until a slot frees. What the status says
meanwhile is judged by Argo CD's and kstatus's own code.

The module starts Kueue if it is not running and then stops it again (`devenv/kueue.sh down`), so
the tests after it see the cluster as they would without Kueue; a Kueue someone else started is
left running."""
from __future__ import annotations

import json

import pytest

from kubeslim_dev import kueue
from kubeslim_dev.devenv import DevenvCommandFailed, run_kueue
from tests.conftest import wait_until
from tests.e2e.test_quantizationjob_e2e import apply, get_qj
from tests.gitops import argocd_health, kstatus

pytestmark = pytest.mark.timeout(900)

@pytest.fixture(scope="module")
def local_queue(devenv, e2e_namespace, kubectl):
    """The LocalQueue kubeslim-queue in the e2e namespace, on a running Kueue."""
    started = run_kueue("status").returncode != 0
    if started:
        try:
            run_kueue("up")
        except DevenvCommandFailed as err:
            pytest.fail(f"{err}; see its output above")
    kubectl("apply", "-f", "-", input=json.dumps(kueue.local_queue_manifest(e2e_namespace)))
    yield kueue.LOCAL_QUEUE
    kubectl("-n", e2e_namespace, "delete", "localqueues.v1beta2.kueue.x-k8s.io", kueue.LOCAL_QUEUE, "--ignore-not-found", check=False)
    if started:
        run_kueue("down")


def _manifest(digits_manifest, name: str, queue: str) -> dict:
    # One algorithm and half a CPU: two runs fit the real node side by side with room for a third.
    return digits_manifest(name, **{"quantization.algos": ["hist"], "resources.cpu": "500m",
                                    "scheduling.queueName": queue})


def _job(kubectl, namespace: str, name: str) -> dict | None:
    out = kubectl("-n", namespace, "get", "job", name, "-o", "json", "--ignore-not-found").stdout
    return json.loads(out) if out.strip() else None


def _workloads(kubectl, namespace: str, job_uid: str) -> list[dict]:
    out = kubectl("-n", namespace, "get", "workloads.v1beta2.kueue.x-k8s.io", "-l", f"kueue.x-k8s.io/job-uid={job_uid}",
                  "-o", "json").stdout
    return json.loads(out)["items"]


def _status(kubectl, namespace: str, name: str) -> dict:
    return get_qj(kubectl, namespace, name).get("status") or {}


def test_two_of_three_gpu_runs_are_admitted_and_the_third_waits_for_a_slot(operator_release, e2e_namespace, local_queue,
                                                                         digits_manifest, kubectl, real_node):
    ns, names = e2e_namespace, ["queued-a", "queued-b", "queued-c", "queued-d"]
    for name in names:
        apply(kubectl, ns, _manifest(digits_manifest, name, local_queue))

    # Kueue's webhook suspended every Job; it resumes exactly as many as the GPU quota (2) allows.
    def split():
        jobs = {n: _job(kubectl, ns, f"{n}-g1") for n in names}
        if any(j is None for j in jobs.values()):
            return None
        admitted = sorted(n for n, j in jobs.items() if not j["spec"].get("suspend"))
        waiting = sorted(n for n in names if n not in admitted)
        statuses = {n: _status(kubectl, ns, n) for n in waiting}
        if len(admitted) == 2 and all(s.get("reason") == "Queued" for s in statuses.values()):
            return admitted, waiting, jobs
        return None
    admitted, waiting, jobs = wait_until(split, timeout=180, interval=2, what="two Jobs admitted and two Queued")
    for name in waiting:
        qj = get_qj(kubectl, ns, name)
        st = qj["status"]
        assert st["phase"] == "Pending" and st["jobName"] == f"{name}-g1", st
        assert f"LocalQueue {local_queue}" in st["message"] and "nvidia.com/gpu" in st["message"], st["message"]
        conds = {c["type"]: c for c in st["conditions"]}
        assert conds["Ready"]["status"] == "False" and conds["Reconciling"]["status"] == "True"
        assert argocd_health(qj) == ("Suspended", st["message"])
        assert kstatus(qj) == "InProgress"
        (wl,) = _workloads(kubectl, ns, jobs[name]["metadata"]["uid"])
        reserved = {c["type"]: c for c in wl["status"]["conditions"]}["QuotaReserved"]
        assert reserved["status"] == "False" and reserved["message"].split(":")[0] in st["message"]
    # Node capacity is not what holds them: the real node has the GPUs for a third run.
    node = json.loads(kubectl("get", "node", real_node.name, "-o", "json").stdout)
    assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 3

    # Deleting a waiting QuantizationJob removes its Job and, through the Job, its Workload.
    gone = waiting[-1]
    gone_uid = jobs[gone]["metadata"]["uid"]
    assert _workloads(kubectl, ns, gone_uid)
    kubectl("-n", ns, "delete", "qj", gone, "--wait=false")
    wait_until(lambda: not _workloads(kubectl, ns, gone_uid) and _job(kubectl, ns, f"{gone}-g1") is None,
               timeout=120, interval=2, what=f"the Workload of {gone} to be deleted")

    # A slot frees (one admitted run is deleted): Kueue admits the one still waiting, and it runs to the end.
    kubectl("-n", ns, "delete", "qj", admitted[0], "--wait=false")
    survivor, last = admitted[1], waiting[0]
    for name in (survivor, last):
        wait_until(lambda: _status(kubectl, ns, name).get("phase") in ("Succeeded", "Failed"),
                   timeout=600, interval=2, what=f"{name} to finish")
    for name in (survivor, last):
        qj = get_qj(kubectl, ns, name)
        assert qj["status"]["phase"] == "Succeeded", qj["status"]
        assert argocd_health(qj)[0] == "Healthy" and kstatus(qj) == "Current"
        (wl,) = _workloads(kubectl, ns, _job(kubectl, ns, f"{name}-g1")["metadata"]["uid"])
        assert {c["type"]: c["status"] for c in wl["status"]["conditions"]}.get("Finished") == "True"
    events = json.loads(kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={last}", "-o", "json").stdout)
    assert "Queued" in [e["reason"] for e in events["items"]]


def test_a_queue_that_does_not_exist_is_reported_until_it_is_created(operator_release, e2e_namespace, local_queue,
                                                                   digits_manifest, kubectl):
    ns, name, queue = e2e_namespace, "noqueue", "no-such-queue"
    apply(kubectl, ns, _manifest(digits_manifest, name, queue))
    st = wait_until(lambda: (s := _status(kubectl, ns, name)).get("reason") == "LocalQueueNotFound" and s,
                    timeout=120, interval=2, what="LocalQueueNotFound on the QuantizationJob")
    assert st["phase"] == "Pending"
    assert f"LocalQueue {queue} (spec.scheduling.queueName) does not exist in namespace {ns}" in st["message"]
    qj = get_qj(kubectl, ns, name)
    assert argocd_health(qj)[0] == "Progressing" and kstatus(qj) == "InProgress"
    events = json.loads(kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json").stdout)
    assert ("Warning", "LocalQueueNotFound") in [(e["type"], e["reason"]) for e in events["items"]]

    # The message's advice holds: once the queue exists, Kueue admits the Job.
    kubectl("apply", "-f", "-", input=json.dumps(kueue.local_queue_manifest(ns, queue)))
    try:
        wait_until(lambda: not (_job(kubectl, ns, f"{name}-g1") or {}).get("spec", {}).get("suspend", True),
                   timeout=120, interval=2, what="the Job to be admitted once its LocalQueue exists")
        wait_until(lambda: _status(kubectl, ns, name).get("reason") != "LocalQueueNotFound",
                   timeout=60, interval=2, what="the status to leave LocalQueueNotFound")
    finally:
        kubectl("-n", ns, "delete", "qj", name, "--wait=false", check=False)
        kubectl("-n", ns, "delete", "localqueues.v1beta2.kueue.x-k8s.io", queue, "--ignore-not-found", check=False)
