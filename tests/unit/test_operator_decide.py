"""The pure decisions of a reconcile pass (decide.py): what is seen → which actions."""
from __future__ import annotations

import copy

import pytest

from kubeslim_api import reasons
from kubeslim_api.spec import SpecError, parse_spec
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.progress import status_progress
from kubeslim_operator.decide import (Attempt, JobRef, JobsDecision, Seen, decide_jobs, decide_status, progress_wait,
                                      settled)
from kubeslim_operator.status import Fact, job_rejection
from operator_fakes import RUNNING, done, job, pod, waiting
from tests.invalid_specs import VALID_SPEC

pytestmark = pytest.mark.unit

SPEC = parse_spec(copy.deepcopy(VALID_SPEC))
CONFIG = OperatorConfig()
NOW = "2026-01-01T00:10:00Z"
G1, G2 = "qj-g1", "qj-g2"


def status(generation=1, phase="Pending", reason="", stage="", job_name=G1):
    st = {"observedGeneration": generation, "phase": phase, "reason": reason, "stage": stage, "jobName": job_name}
    st["progress"] = status_progress(st, {}, None)    # as the operator writes it when no progress line was read
    return st


def seen(generation=1, prev=None, jobs=(), pods=(), recent=None, spec=SPEC, spec_error=None, deleting=False):
    return Seen(generation, f"qj-g{generation}", prev or {}, tuple(jobs), tuple(pods), recent, deleting, spec, spec_error)


# -- decide_jobs: (id, seen, Jobs stopped, the current Job, done, create, job_deleted) ------------

JOB_CASES = [
    ("new: create", seen(), [], None, False, True, False),
    ("being deleted: nothing", seen(deleting=True, jobs=[job(1)]), [], None, True, False, False),
    ("invalid spec: no Job", seen(spec=None, spec_error=SpecError("spec.model", "required")), [], None, False, False, False),
    ("the watch shows it", seen(jobs=[job(1)]), [], G1, False, False, False),
    ("the watch lags: the recent copy stands in", seen(recent=job(1)), [], G1, False, False, False),
    ("recorded once and gone: never a second Job", seen(prev=status(1)), [], None, False, False, True),
    ("recorded for another generation: create", seen(2, prev=status(1)), [], None, False, True, False),
    ("same generation, other name: not ours", seen(jobs=[job(1, name="other")]), [], None, False, True, False),
    ("new generation stops the old one", seen(2, jobs=[job(1)]), [G1], None, False, True, False),
    ("new generation, old one finished", seen(2, jobs=[job(1, "Complete")]), [], None, False, True, False),
    ("new generation, old one failing", seen(2, jobs=[job(1, "FailureTarget")]), [], None, False, True, False),
    ("new generation, old one already deleting", seen(2, jobs=[job(1, deleting=True)]), [], None, False, True, False),
    ("new generation, old one running beside the new", seen(2, jobs=[job(1), job(2)]), [G1], G2, False, False, False),
    ("final: the pass ends", seen(prev=status(1, "Succeeded"), jobs=[job(1, "Complete")]), [], G1, True, False, False),
    ("final, Job still runs: stop it", seen(prev=status(1, "Failed", "ImagePullBackOff"), jobs=[job(1)]),
     [G1], G1, True, False, False),
    ("final, Job gone (TTL)", seen(prev=status(1, "Failed")), [], None, True, False, False),
    ("final, the recent copy still runs", seen(prev=status(1, "Failed"), recent=job(1)), [G1], G1, True, False, False),
    ("final, old and current both run", seen(2, prev=status(2, "Failed", job_name=G2), jobs=[job(1), job(2)]),
     [G1, G2], G2, True, False, False),
    ("final for an older generation: the new one runs", seen(2, prev=status(1, "Succeeded")), [], None, False, True, False),
]


@pytest.mark.parametrize("s,stopped,current,done_,create,job_deleted", [x[1:] for x in JOB_CASES],
                         ids=[x[0] for x in JOB_CASES])
def test_decide_jobs(s, stopped, current, done_, create, job_deleted):
    d = decide_jobs(s)
    assert [r.name for r in d.stop] == stopped
    assert (d.current or {}).get("metadata", {}).get("name") == current
    assert (d.done, d.create, d.job_deleted) == (done_, create, job_deleted)
    assert d.watched == (current is not None and s.recent_job is None)


def test_stopping_is_guarded_by_the_uid_and_names_the_replaced_generation():
    d = decide_jobs(seen(3, jobs=[job(1, uid="a"), job(2, uid="b")]))
    assert d.stop == (JobRef(G1, "a", 1), JobRef(G2, "b", 2))
    d = decide_jobs(seen(prev=status(1, "Failed"), jobs=[job(1, uid="a")]))
    assert d.stop == (JobRef(G1, "a"),)


def test_a_job_without_a_generation_label_is_left_alone():
    unlabelled = job(1)
    del unlabelled["metadata"]["labels"]["kubeslim.io/generation"]
    assert decide_jobs(seen(2, jobs=[unlabelled])).stop == ()


@pytest.mark.parametrize("deleting,prev,generation,expected", [
    (True, {}, 1, True),
    (False, status(1, "Succeeded"), 1, True),
    (False, status(1, "Failed"), 1, True),
    (False, status(1, "Running"), 1, False),
    (False, status(1, "Succeeded"), 2, False),
    (False, {}, 1, False),
])
def test_settled(deleting, prev, generation, expected):
    assert settled(deleting, prev, generation) is expected


# -- decide_status: (id, seen, jobs decision, attempt, since_write, written phase/reason, stop, requeue) --

J1 = job(1)
EXPORTING = [pod(J1, export=RUNNING, calibrate=waiting("PodInitializing"))]
CALIBRATING = [pod(J1, export=done(), calibrate=RUNNING)]
FOUND = JobsDecision(current=J1, watched=True)
CREATE = JobsDecision(create=True)
RECHECK, COALESCE, PROGRESS = CONFIG.recheck_seconds, CONFIG.status_coalesce_seconds, CONFIG.status_progress_seconds
CM_MISSING = Fact(False, reasons.CONFIGMAP_NOT_FOUND, "ConfigMap s3-ca does not exist.")
FORBIDDEN = job_rejection(403, {"message": "exceeded quota: jobs"}, G1)
INVALID = job_rejection(422, {"message": "Job.batch is invalid"}, G1)

STATUS_CASES = [
    ("created: the Job's own event writes the first status", seen(), CREATE, Attempt(job=J1, created=True), None,
     None, None, COALESCE),
    ("ours after a 409", seen(), CREATE, Attempt(job=J1), None, ("Pending", ""), None, None),
    ("CA ConfigMap missing", seen(), CREATE, Attempt(config_problem=CM_MISSING), None,
     ("Pending", reasons.CONFIGMAP_NOT_FOUND), None, RECHECK),
    ("name held by a foreign Job", seen(), CREATE, Attempt(conflict=G1), None, ("Pending", reasons.JOB_NAME_CONFLICT), None, RECHECK),
    ("rejected: final, never retried", seen(), CREATE, Attempt(rejection=INVALID), None, ("Failed", reasons.JOB_REJECTED), None, None),
    ("forbidden: reported, tried again", seen(), CREATE, Attempt(rejection=FORBIDDEN), None,
     ("Pending", reasons.JOB_FORBIDDEN), None, RECHECK),
    ("forbidden again: already said", seen(prev=status(1, "Pending", reasons.JOB_FORBIDDEN, job_name=None)), CREATE,
     Attempt(rejection=FORBIDDEN), 1.0, None, None, RECHECK),
    ("invalid spec", seen(spec=None, spec_error=SpecError("spec.model", "required")), JobsDecision(), None, None,
     ("Failed", reasons.INVALID_SPEC), None, None),
    ("the Job was deleted", seen(prev=status(1)), JobsDecision(job_deleted=True), None, None,
     ("Failed", reasons.JOB_DELETED), None, None),
    ("first status: Running", seen(pods=EXPORTING), FOUND, None, None, ("Running", ""), None, None),
    ("nothing visible changed", seen(prev=status(1, "Running", stage="Exporting"), pods=EXPORTING), FOUND, None, 1.0,
     None, None, None),
    ("progress soon after a write waits", seen(prev=status(1, "Running", stage="Exporting"), pods=CALIBRATING), FOUND, None,
     1.0, None, None, PROGRESS - 1.0),
    ("progress after the window", seen(prev=status(1, "Running", stage="Exporting"), pods=CALIBRATING), FOUND, None,
     PROGRESS + 1, ("Running", ""), None, None),
    ("progress never written by this process", seen(prev=status(1, "Running", stage="Exporting"), pods=CALIBRATING), FOUND,
     None, None, ("Running", ""), None, None),
    ("a problem is written at once", seen(prev=status(1, "Running", stage="Exporting"),
                                          pods=[pod(J1, export=waiting("ErrImagePull", "pull access denied"))]), FOUND,
     None, 1.0, ("Pending", "ErrImagePull"), None, None),
    ("final while the Job runs: written, then the Job stops",
     seen(prev=status(1, "Pending"), pods=[pod(J1, export=waiting("ImagePullBackOff", "Back-off"))]), FOUND, None, 1.0,
     ("Failed", "ImagePullBackOff"), G1, None),
    ("final, already written: the Job still stops",
     seen(prev=status(1, "Failed", "ImagePullBackOff", "Exporting"),
          pods=[pod(J1, export=waiting("ImagePullBackOff", "Back-off"))]), FOUND, None, 1.0, None, G1, None),
    ("pod done, the Job has not concluded: hold", seen(prev=status(1, "Running", stage="Calibrating"),
                                                       pods=[pod(J1, export=done(), calibrate=done(), phase="Succeeded")]),
     FOUND, None, PROGRESS + 1, None, None, None),
]


@pytest.mark.parametrize("s,jobs,attempt,since_write,written,stop,requeue", [x[1:] for x in STATUS_CASES],
                         ids=[x[0] for x in STATUS_CASES])
def test_decide_status(s, jobs, attempt, since_write, written, stop, requeue):
    d = decide_status(s, jobs, attempt, now=NOW, since_write=since_write, config=CONFIG)
    assert (None if d.write is None else (d.write["phase"], d.write.get("reason") or "")) == written
    assert (d.stop.name if d.stop else None) == stop
    assert d.requeue == pytest.approx(requeue) if requeue is not None else d.requeue is None
    if d.write is not None:
        assert d.write["observedGeneration"] == s.generation


def test_the_status_names_the_job_it_saw():
    d = decide_status(seen(pods=EXPORTING), FOUND, None, now=NOW, since_write=None, config=CONFIG)
    assert d.write["jobName"] == G1
    d = decide_status(seen(), CREATE, Attempt(config_problem=CM_MISSING), now=NOW, since_write=None, config=CONFIG)
    assert "jobName" not in d.write or d.write["jobName"] is None


def test_only_the_current_jobs_pods_count():
    other = pod(job(1, uid="someone-else"), export=RUNNING)
    d = decide_status(seen(pods=[other]), FOUND, None, now=NOW, since_write=None, config=CONFIG)
    assert (d.write["phase"], d.write.get("stage") or "") == ("Pending", "")


@pytest.mark.parametrize("prev,new,since_write,expected", [
    (status(1, "Running", stage="Exporting"), status(1, "Running", stage="Calibrating"), 1.0, PROGRESS - 1.0),
    (status(1, "Running", stage="Exporting"), status(1, "Running", stage="Calibrating"), PROGRESS + 1, 0.0),
    (status(1, "Running", stage="Exporting"), status(1, "Running", stage="Calibrating"), None, 0.0),
    (status(1, "Running", stage="Exporting"), status(1, "Succeeded"), 1.0, 0.0),
    (status(1, "Running", stage="Exporting"), status(1, "Pending", "ErrImagePull"), 1.0, 0.0),
    (status(1, "Pending", "ErrImagePull"), status(1, "Running", stage="Exporting"), 1.0, 0.0),
    (status(1, "Running", stage="Exporting"), status(2, "Running", stage="Exporting"), 1.0, 0.0),
    ({}, status(1, "Pending"), 1.0, 0.0),
])
def test_progress_wait(prev, new, since_write, expected):
    assert progress_wait(prev, new, since_write, PROGRESS) == pytest.approx(expected)
