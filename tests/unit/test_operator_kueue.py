"""A Job that Kueue holds: what its Workload's conditions become on the QuantizationJob (pure
status derivation, with the GitOps verdicts of that status), when a pass reads the Workload (and
when not), and the reconciler's requests against a fake API with and without Kueue."""
from __future__ import annotations

import asyncio
import copy

import pytest

from kubeslim_api import reasons
from kubeslim_operator import constants as c
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.decide import Attempt, JobsDecision, queued_job
from kubeslim_operator.handlers.reconcile import Reconciler
from kubeslim_operator.kube import ApiError
from kubeslim_operator.objects import trim_job, trim_workload
from kubeslim_operator.status import Queue, build_status, observe, queued_verdict, transition_event
from operator_fakes import KEY, NS, FakeApi, job, qj
from tests.gitops import argocd_health, kstatus
from tests.invalid_specs import VALID_SPEC

pytestmark = pytest.mark.unit

LQ = "gpu-queue"
NOW = "2026-01-01T00:10:00Z"
CONFIG = OperatorConfig()


def workload(*conds, cluster_queue=None):
    """A Workload as Kueue writes it (untrimmed); `conds`: (type, status, reason, message)."""
    st = {"conditions": [{"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": NOW,
                          "observedGeneration": 1} for t, s, r, m in conds]}
    if cluster_queue:
        st["admission"] = {"clusterQueue": cluster_queue, "podSetAssignments": [{"name": "main", "count": 1}]}
    return {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload",
            "metadata": {"name": "job-qj-g1-1a2b3", "namespace": NS, "creationTimestamp": NOW,
                         "labels": {c.LABEL_KUEUE_JOB_UID: "job-uid-g1"}},
            "spec": {"queueName": LQ}, "status": st}


QUOTA = "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor default-flavor, 1 more needed"
PENDING_QUOTA = workload(("QuotaReserved", "False", "Pending", QUOTA))
NO_LQ = workload(("QuotaReserved", "False", "Inadmissible", f"LocalQueue {LQ} doesn't exist"))
NO_CQ = workload(("QuotaReserved", "False", "Inadmissible", "ClusterQueue team-a doesn't exist"))
RESERVED = workload(("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                    ("Admitted", "False", "NoChecks", "The workload has not all checks ready"), cluster_queue="cq")
ADMITTED = workload(("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                    ("Admitted", "True", "Admitted", "The workload is admitted"), cluster_queue="cq")
EVICTED = workload(("QuotaReserved", "False", "Pending", QUOTA),
                   ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: u) in the ClusterQueue"))
HELD = job(queue=LQ, suspend=True)

# (id, job, what the pass learnt, reason, words the message must hold)
CASES = [
    ("no workload yet", HELD, Queue(), "", [f"LocalQueue {LQ}", "create its Workload"]),
    ("workload not evaluated yet", HELD, Queue(trim_workload(workload())), "", [f"LocalQueue {LQ}", "not yet evaluated"]),
    ("waiting for quota", HELD, Queue(trim_workload(PENDING_QUOTA)), reasons.QUEUED,
     [f"Kueue LocalQueue {LQ}", "insufficient unused quota for nvidia.com/gpu", "1 more needed"]),
    ("local queue missing", HELD, Queue(trim_workload(NO_LQ)), reasons.LOCAL_QUEUE_NOT_FOUND,
     [f"LocalQueue {LQ} (spec.scheduling.queueName) does not exist in namespace {NS}", "create it"]),
    ("cluster queue missing", HELD, Queue(trim_workload(NO_CQ)), reasons.QUEUE_INADMISSIBLE,
     [f"LocalQueue {LQ}", "ClusterQueue team-a doesn't exist"]),
    ("quota reserved, checks pending", HELD, Queue(trim_workload(RESERVED)), reasons.QUEUED,
     ["ClusterQueue cq", "admission checks"]),
    ("admitted, not yet resumed", HELD, Queue(trim_workload(ADMITTED)), "", ["admitted", "ClusterQueue cq"]),
    ("preempted, waiting again", HELD, Queue(trim_workload(EVICTED)), reasons.QUEUED,
     ["evicted earlier: Preempted", "1 more needed"]),
    ("no Kueue Workload API", HELD, Queue(api="absent"), reasons.KUEUE_UNAVAILABLE,
     ["serves no Kueue Workloads", "spec.scheduling.queueName"]),
    ("workloads not readable", HELD, Queue(api="forbidden"), reasons.QUEUED, [f"LocalQueue {LQ}", "RBAC"]),
    ("suspended without a queue", job(suspend=True), None, reasons.QUEUED, ["suspended"]),
]


@pytest.mark.parametrize("job_obj, queue, reason, words", [x[1:] for x in CASES], ids=[x[0] for x in CASES])
def test_a_held_job_says_why_it_waits(job_obj, queue, reason, words):
    v = observe(generation=1, spec=None, spec_error=None, job=job_obj, pods=[], queue=queue, now=NOW)
    assert (v.phase, v.reason, v.stage) == ("Pending", reason, "")
    for w in words:
        assert w in v.message
    assert v.message.endswith(".") and v.start_time == "2026-01-01T00:00:00Z"


def test_kueues_message_is_cut_to_one_short_line():
    long = workload(("QuotaReserved", "False", "Pending", "x" * 5000 + "\n\n  tail"))
    v = queued_verdict(HELD, Queue(trim_workload(long)))
    assert len(v.message) < 500 and "\n" not in v.message


def _status(job_obj, queue):
    v = observe(generation=1, spec=None, spec_error=None, job=job_obj, pods=[], queue=queue, now=NOW)
    status = build_status(v, generation=1, job_name="qj-g1", prev=None, now=NOW)
    return {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": "qj", "generation": 1}, "status": status}


# What GitOps tools make of a waiting QuantizationJob: a Job waiting for quota is Suspended in
# Argo CD, anything else still coming is Progressing; kstatus sees work in progress throughout.
GITOPS = [
    ("waiting for quota", Queue(trim_workload(PENDING_QUOTA)), "Suspended", "InProgress", "Normal"),
    ("local queue missing", Queue(trim_workload(NO_LQ)), "Progressing", "InProgress", "Warning"),
    ("no workload yet", Queue(), "Progressing", "InProgress", None),
    ("admitted", Queue(trim_workload(ADMITTED)), "Progressing", "InProgress", None),
]


@pytest.mark.parametrize("queue, argocd, kstat, event", [x[1:] for x in GITOPS], ids=[x[0] for x in GITOPS])
def test_gitops_tools_see_a_waiting_job_as_in_progress(queue, argocd, kstat, event):
    obj = _status(HELD, queue)
    health, message = argocd_health(obj)
    assert (health, kstatus(obj)) == (argocd, kstat)
    assert message == obj["status"]["message"]
    ev = transition_event(None, obj["status"])
    assert ev is not None and ev.type == (event or "Normal")


# -- when a pass reads the Workload ------------------------------------------------------------

READ_CASES = [
    ("held by Kueue", JobsDecision(current=HELD), None, True),
    ("running", JobsDecision(current=job(queue=LQ)), None, False),
    ("suspended without a queue", JobsDecision(current=job(suspend=True)), None, False),
    ("held but being deleted", JobsDecision(current=job(queue=LQ, suspend=True, deleting=True)), None, False),
    ("no Job", JobsDecision(), None, False),
    ("created in this pass", JobsDecision(create=True), Attempt(job=HELD, created=True), False),
    ("ours, found after a 409", JobsDecision(create=True), Attempt(job=HELD), True),
]


@pytest.mark.parametrize("jobs, attempt, reads", [x[1:] for x in READ_CASES], ids=[x[0] for x in READ_CASES])
def test_a_pass_reads_the_workload_only_of_a_job_kueue_holds(jobs, attempt, reads):
    assert (queued_job(jobs, attempt) is not None) == reads


# -- the reconciler against a fake API ---------------------------------------------------------

def _spec_with_queue():
    spec = copy.deepcopy(VALID_SPEC)
    spec.setdefault("scheduling", {})["queueName"] = LQ
    return spec


def _pass(api: FakeApi, jobs: list[dict]) -> float | None:
    r = Reconciler(CONFIG, api)
    r.bind({KEY: [qj(spec=_spec_with_queue())]}, {KEY: jobs}, {})
    return asyncio.run(r.reconcile(KEY))


def test_a_held_job_is_reported_from_its_workload_and_looked_at_again():
    api = FakeApi(workloads={"job-uid-g1": [PENDING_QUOTA]})
    assert _pass(api, [HELD]) == CONFIG.recheck_seconds      # Kueue does not touch the Job while it waits
    assert [x[0] for x in api.calls] == ["workloads", "status", "event"]
    assert api.calls[0] == ("workloads", "job-uid-g1")
    st = api.statuses[0]
    assert (st["phase"], st["reason"]) == ("Pending", reasons.QUEUED) and LQ in st["message"]
    assert api.of("event") == [("event", "Normal", reasons.QUEUED)]


def test_without_kueue_a_held_job_says_so_and_a_running_one_costs_no_request():
    api = FakeApi(workloads_error=ApiError(404, {"message": "the server could not find the requested resource"}, "GET", "/apis"))
    _pass(api, [HELD])
    assert api.statuses[0]["reason"] == reasons.KUEUE_UNAVAILABLE
    api = FakeApi()
    assert _pass(api, [job(queue=LQ)]) is None
    assert not api.of("workloads")


def test_a_workload_list_the_operator_may_not_make_is_named_not_retried_forever():
    api = FakeApi(workloads_error=ApiError(403, {"message": "forbidden"}, "GET", "/apis"))
    assert _pass(api, [HELD]) == CONFIG.recheck_seconds
    assert api.statuses[0]["reason"] == reasons.QUEUED and "RBAC" in api.statuses[0]["message"]


def test_the_watched_job_keeps_the_queue_label_the_pass_needs():
    full = {"metadata": {"name": "qj-g1", "namespace": NS, "uid": "u",
                         "labels": {c.LABEL_KUEUE_QUEUE: LQ, "other": "x", c.LABEL_GENERATION: "1"}},
            "spec": {"suspend": True, "template": {}}, "status": {}}
    trimmed = trim_job(full)
    assert trimmed["metadata"]["labels"] == {c.LABEL_KUEUE_QUEUE: LQ, c.LABEL_GENERATION: "1"}
    assert trimmed["spec"] == {"suspend": True}
