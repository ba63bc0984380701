"""A pod taken off a node that stopped answering (status/node_lost.py): Retrying, naming the node
and the pod, while the Job waits for the node to let the pod go; a replacement or the Job's own
conclusion speaks instead once there is one."""
from __future__ import annotations

import pytest

from kubeslim_operator.jobs import pod_failure_policy
from kubeslim_operator.status import observe

from test_operator_status import NOW, OK_MSG, RUN, SPEC, job, pod, term

pytestmark = pytest.mark.unit

TAINT_EVICTED = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                 "message": "Taint manager: deleting due to NoExecute taint"}


def lost(phase="Running", condition=TAINT_EVICTED, **kw):
    """The first pod, calibrating on node gpu-0 when the node stopped answering."""
    p = pod(name="mv3-int8-g1-aaaaa", phase=phase, export=term(0), calibrate=RUN, deleting=True, **kw)
    p["status"]["conditions"].append(condition)
    return p


def running_job():
    return job(backoffLimit=0, podFailurePolicy=pod_failure_policy())


def derive(*pods, j=None):
    return observe(generation=1, spec=SPEC, spec_error=None, job=j or running_job(), pods=list(pods), now=NOW)


@pytest.mark.parametrize("phase", ["Running", "Failed"], ids=["node-still-away", "kubelet-stopped-it"])
def test_a_pod_taken_off_a_lost_node_is_retrying_naming_the_node(phase):
    v = derive(lost(phase))
    assert (v.phase, v.reason) == ("Pending", "Retrying")
    assert "Node gpu-0" in v.message and "mv3-int8-g1-aaaaa" in v.message and "while calibrating" in v.message
    # What to do when the node never comes back, and that the retry is free.
    assert "node.kubernetes.io/out-of-service" in v.message and "backoffLimit" in v.message


def test_the_replacement_pod_speaks_once_it_runs():
    new = pod(name="mv3-int8-g1-bbbbb", phase="Pending", export=RUN, created="2026-01-01T00:09:00Z", node="gpu-1")
    v = derive(lost("Failed"), new)
    assert (v.phase, v.stage) == ("Running", "Exporting") and "gpu-0" not in v.message


def test_another_disruption_is_not_called_a_lost_node():
    evicted = lost("Failed", {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"})
    v = derive(evicted)
    assert "stopped answering" not in v.message


def test_the_jobs_conclusion_beats_the_lost_pod():
    won = pod(name="mv3-int8-g1-bbbbb", phase="Succeeded", export=term(0), calibrate=term(0), verify=term(0, message=OK_MSG),
              created="2026-01-01T00:09:00Z")
    v = derive(lost("Failed"), won, j=job(("Complete", "", ""), backoffLimit=0, podFailurePolicy=pod_failure_policy()))
    assert v.phase == "Succeeded"


def test_a_deadline_that_ends_the_wait_for_a_lost_node_says_node_lost():
    j = job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"), backoffLimit=0,
            podFailurePolicy=pod_failure_policy())
    v = derive(lost("Running"), j=j)
    assert (v.phase, v.reason, v.stage) == ("Failed", "NodeLost", "Calibrating")
    assert "Node gpu-0" in v.message and "activeDeadlineSeconds (7200 s)" in v.message


def test_a_deadline_with_no_lost_pod_stays_deadline_exceeded():
    j = job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"), backoffLimit=0)
    v = derive(pod(phase="Running", export=term(0), calibrate=RUN), j=j)
    assert v.reason == "DeadlineExceeded"


@pytest.mark.parametrize("new_pod", [
    pod(name="mv3-int8-g1-bbbbb", phase="Pending", created="2026-01-01T00:09:00Z", node="gpu-1"),
    pod(name="mv3-int8-g1-bbbbb", phase="Pending", created="2026-01-01T00:09:00Z", scheduled=None),
], ids=["scheduled", "unscheduled"])
def test_the_replacement_pod_is_still_retrying_until_it_starts(new_pod):
    # Running -> Retrying -> Pending would read as a step back to a run that never started.
    v = derive(lost("Failed"), new_pod)
    assert (v.phase, v.reason) == ("Pending", "Retrying")
    assert v.message.startswith("Pod mv3-int8-g1-aaaaa was taken off node gpu-0; the Job retries: Pod mv3-int8-g1-bbbbb")


def test_the_pod_after_a_crash_is_still_retrying_in_the_crashs_words():
    # "Attempt N failed" with N within backoffLimit is what the chaos harness accepts as a true retry.
    crashed = pod(name="mv3-int8-g1-aaaaa", phase="Failed", export=term(0), calibrate=term(1))
    v = derive(crashed, pod(name="mv3-int8-g1-bbbbb", phase="Pending", created="2026-01-01T00:09:00Z", node="gpu-1"),
               j=job(backoffLimit=1, podFailurePolicy=pod_failure_policy()))
    assert (v.phase, v.reason) == ("Pending", "Retrying")
    assert v.message.startswith("Attempt 1 failed; the Job retries: Pod mv3-int8-g1-bbbbb"), v.message


def test_a_first_pod_waiting_to_start_is_plain_pending():
    v = derive(pod(name="mv3-int8-g1-aaaaa", phase="Pending", node="gpu-0"))
    assert (v.phase, v.reason) == ("Pending", "")
