"""The derivation: a generation's Job and pods (and what the reconcile pass learnt around them) →
one Verdict. Pure: the reconciler passes in everything it saw (and the clock), so a restarted
operator derives the same status from the same children.

`observe` tries an ordered list of rules; each reads one situation and returns a Verdict, or None
to leave it to the next. The first verdict wins, so the order is the policy:

No Job yet (`BEFORE_JOB`; a pass sets at most one of the inputs these read, so their order only
puts the final verdicts first):
  invalid_spec       a spec that does not parse decides everything: nothing is built from it.
  job_deleted        the generation's Job was seen and is gone: final, never a second Job.
  config_missing, job_refused, job_name_taken
                     why creating the Job did not happen (Pending, or Failed for a spec the API
                     server refuses whatever the retry).
  creating_job       none of these: the Job is on its way.

With a Job (`WITH_JOB`):
  invalid_spec       as above, even when a Job exists.
  pod_view_lagging   the Job concluded but a pod of it is still seen running: its result is on its
                     way on the other watch stream, and every later rule would decide from the
                     Job's condition alone — final and wrong. So it goes first, and holds.
  job_complete       the Job controller's conclusions beat anything a pod says: they are final,
                     and the pods may be gone (TTL, a restarted operator).
  deadline_on_lost_node  the deadline ended a run whose pod a lost node still held: NodeLost, the
                     cause the user can act on, not a run too slow for its deadline.
  deadline_passed    before the pods' own failures: the deadline killed them, so their exit
                     codes (137) say nothing about the cause.
  work_volume_evicted  before a stage's failure for the same reason: an eviction for a full /work
                     kills the containers, and exit 137 alone would read as a crash.
  stage_failed       a failed stage's own account (out of memory, its result, its log tail) is
                     more precise than…
  job_failed         …the Job controller's failure condition, the fallback for a failed Job.
  suspended          a suspended Job runs no pod: the queue (Kueue's Workload) says why it waits.
  pod_running        a live pod says where the run is; failed pods are earlier attempts. In a
                     parallel sweep (an Indexed Job) the pod furthest on, led by the candidates
                     done; job_complete reads the final index's result (sweep.py).
  pod_on_lost_node   no live pod, and the newest was taken off a node that stopped answering:
                     Retrying, naming the node, while the Job waits for the node to let it go.
  attempt_failed     no live pod but failed ones: a retry is coming, or the Job's failure is.
  pods_finished      every pod succeeded and the Job has not concluded yet: hold.
  waiting_for_pod    none of these: the Job controller has not made a pod yet.

After the verdict, `observe` adds what the last pod proves whichever rule spoke: a pod on a node
was scheduled, and a pod whose container ran had its Secret and CA bundle; and while the attempt
that follows a failed or lost pod has not started, the run is still Retrying (a bare Pending would
read as a run that never started, and as a step back from the Running it was).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kubeslim_api import reasons
from kubeslim_api.spec import QuantizationJobSpec, SpecError

from .. import constants as c
from ..constants import Obj
from .before_job import config_missing, creating_job, invalid_spec, job_deleted, job_name_taken, job_refused
from .evidence import Evidence, JobEvidence
from .job_concluded import deadline_passed, job_complete, job_failed, pod_view_lagging, stage_failed, work_volume_evicted
from .job_running import attempt_failed, pod_running, pods_finished, suspended, waiting_for_pod
from .kubelet import scheduled_fact
from .kueue import Queue
from .node_lost import deadline_on_lost_node, pod_on_lost_node, taken_off_node
from .rejection import JobRejection
from .verdict import CONFIG_FOUND, Fact, Verdict, container_statuses, created, pod_phase

BEFORE_JOB: tuple[Callable[[Evidence], Verdict | None], ...] = (
    invalid_spec, job_deleted, config_missing, job_refused, job_name_taken, creating_job)
WITH_JOB: tuple[Callable[[JobEvidence], Verdict | None], ...] = (
    invalid_spec, pod_view_lagging, job_complete, deadline_on_lost_node, deadline_passed, work_volume_evicted,
    stage_failed, job_failed, suspended, pod_running, pod_on_lost_node, attempt_failed, pods_finished, waiting_for_pod)

E = TypeVar("E", bound=Evidence)


def _first_verdict(rules: Sequence[Callable[[E], Verdict | None]], evidence: E) -> Verdict:
    for rule in rules:
        if (verdict := rule(evidence)) is not None:
            return verdict
    raise AssertionError(f"no rule answered; the last of {[r.__name__ for r in rules]} must always answer")


def _with_pod_facts(v: Verdict, pods: Sequence[Obj]) -> Verdict:
    """A pod that ran was scheduled and had its Secret: say so even when no earlier pass saw it
    happen (status writes are coalesced, and a restarted operator only sees the end)."""
    if not pods:
        return v
    last = pods[-1]
    if v.scheduled is None and (last.get("spec") or {}).get("nodeName"):
        v = dataclasses.replace(v, scheduled=scheduled_fact(last))
    if v.config is None and any("terminated" in (s.get("state") or {}) or "running" in (s.get("state") or {})
                                for s in container_statuses(last)):
        v = dataclasses.replace(v, config=CONFIG_FOUND)
    return v


def _still_retrying(v: Verdict, pods: Sequence[Obj]) -> Verdict:
    """A next attempt that waits for its pod (to be made, scheduled or started) after an earlier
    pod failed or was taken off a lost node keeps the Retrying the failure announced, in its words:
    "Attempt N failed" counts the failures backoffLimit allows, as attempt_failed said it."""
    if v.phase != c.PENDING or v.reason or v.hold:
        return v
    lost = [p for p in pods if taken_off_node(p)]
    failed = [p for p in pods if pod_phase(p) == "Failed" and not taken_off_node(p)]
    if failed:
        why = f"Attempt {len(failed)} failed"
    elif lost:
        name, node = (lost[-1].get("metadata") or {}).get("name", ""), (lost[-1].get("spec") or {}).get("nodeName")
        why = f"Pod {name} was taken off node {node or 'its node'}"
    else:
        return v
    return dataclasses.replace(v, reason=reasons.RETRYING, message=f"{why}; the Job retries: {v.message}")


def observe(*, generation: int, spec: QuantizationJobSpec | None, spec_error: SpecError | None,
            job: Obj | None, pods: list[Obj], config_problem: Fact | None = None,
            job_conflict: str | None = None, job_deleted: bool = False,
            job_rejection: JobRejection | None = None, queue: Queue | None = None, now: str = "") -> Verdict:
    """What the run of this generation is doing, from the Job and its pods (and, while Kueue holds
    the Job, its Workload)."""
    seen: dict[str, Any] = dict(spec=spec, spec_error=spec_error, config_problem=config_problem, job_conflict=job_conflict,
                job_deleted=job_deleted, job_rejection=job_rejection, now=now)
    if job is None:
        return _first_verdict(BEFORE_JOB, Evidence(**seen))
    evidence = JobEvidence(**seen, job=job, pods=tuple(sorted(pods, key=created)), queue=queue)
    return _with_pod_facts(_still_retrying(_first_verdict(WITH_JOB, evidence), evidence.pods), evidence.pods)
