"""What Argo CD (with the chart's health.lua) and kstatus, running their own code, say about every
phase of a QuantizationJob."""
import pytest

from tests.gitops import argocd_health, kstatus


def _obj(generation=2, status=None, deleting=False):
    meta = {"name": "mv3", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-25T10:00:00Z"
    obj = {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob", "metadata": meta}
    if status is not None:
        obj["status"] = status
    return obj


def _cond(t, s, reason="R", message="m"):
    return {"type": t, "status": s, "reason": reason, "message": message}


RUNNING = {"observedGeneration": 2, "phase": "Running", "stage": "Calibrating",
           "conditions": [_cond("Reconciling", "True", "Calibrating"), _cond("Ready", "False", "Running"), _cond("Stalled", "False")]}
SUCCEEDED = {"observedGeneration": 2, "phase": "Succeeded", "stage": "",
             "conditions": [_cond("Reconciling", "False"), _cond("Ready", "True", "Succeeded", "int8 top1 0.98"), _cond("Stalled", "False"),
                            _cond("AccuracyGate", "True")]}
GATE_FAILED = {"observedGeneration": 2, "phase": "Failed", "reason": "AccuracyGateFailed", "message": "int8 lost 3 points",
               "conditions": [_cond("Reconciling", "False"), _cond("Ready", "False", "AccuracyGateFailed"),
                              _cond("Stalled", "True", "AccuracyGateFailed", "int8 lost 3 points"), _cond("AccuracyGate", "False")]}
SUSPENDED = {"observedGeneration": 2, "phase": "Pending", "reason": "Queued", "message": "The Job is suspended until its queue (Kueue) admits it.",
             "conditions": [_cond("Reconciling", "True", "Queued"), _cond("Ready", "False", "Queued")]}
UNSCHEDULABLE = {"observedGeneration": 2, "phase": "Pending", "reason": "Unschedulable", "message": "0/3 nodes are available",
                 "conditions": [_cond("Reconciling", "True", "Pending"), _cond("Ready", "False"), _cond("Scheduled", "False", "Unschedulable")]}

CASES = [
    # kstatus cannot tell an object no controller has seen from a current one: without
    # status.observedGeneration it skips the generation check (cli-utils #632), and the status
    # subresource drops any status sent with the create, so only Argo CD waits here.
    ("new, no status", _obj(status=None), "Progressing", "Current"),
    ("spec changed, old status", _obj(generation=3, status=SUCCEEDED), "Progressing", "InProgress"),
    ("running", _obj(status=RUNNING), "Progressing", "InProgress"),
    ("unschedulable", _obj(status=UNSCHEDULABLE), "Progressing", "InProgress"),
    ("succeeded", _obj(status=SUCCEEDED), "Healthy", "Current"),
    ("accuracy gate failed", _obj(status=GATE_FAILED), "Degraded", "Failed"),
    ("suspended by kueue", _obj(status=SUSPENDED), "Suspended", "InProgress"),
]


@pytest.mark.parametrize("name, obj, argo, ks", CASES, ids=[c[0] for c in CASES])
def test_argocd_and_kstatus_verdicts(name, obj, argo, ks):
    assert argocd_health(obj)[0] == argo
    assert kstatus(obj) == ks


def test_degraded_message_names_the_reason():
    status, message = argocd_health(_obj(status=GATE_FAILED))
    assert status == "Degraded" and message.startswith("AccuracyGateFailed: int8 lost 3 points")


def test_running_message_is_the_stage():
    assert argocd_health(_obj(status=RUNNING)) == ("Progressing", "Calibrating")


def test_deleting_is_terminating_for_kstatus_and_progressing_for_argocd():
    deleting = _obj(status=SUCCEEDED, deleting=True)
    assert kstatus(deleting) == "Terminating"
    assert argocd_health(deleting) == ("Progressing", "Pending deletion")


@pytest.mark.parametrize("progress", [
    None,
    {"stage": "Calibrating", "percent": 0},
    {"stage": "Calibrating", "step": "hist", "done": 300, "total": 1024, "unit": "batches", "percent": 29,
     "eta": "2026-11-25T10:01:00Z", "updatedAt": "2026-11-25T10:00:00Z"},
    {"stage": "Calibrating", "step": "mse", "done": 1024, "total": 1024, "unit": "batches", "percent": 99,
     "updatedAt": "2026-11-25T10:00:40Z"},
])
def test_progress_changes_do_not_change_the_verdicts(progress):
    # status.progress moves every few seconds while a stage runs; it is no condition, and neither
    # tool may read it as one (no Healthy at 99 %, no Degraded at 0 %).
    obj = _obj(status={**RUNNING, **({"progress": progress} if progress else {})})
    assert argocd_health(obj) == ("Progressing", "Calibrating")
    assert kstatus(obj) == "InProgress"
    done = _obj(status={**SUCCEEDED, "progress": {"percent": 100}})
    assert argocd_health(done)[0] == "Healthy" and kstatus(done) == "Current"
