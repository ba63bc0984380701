"""Rules for a Job the Job controller concluded (Complete, Failed, or deciding so): the verdict is
final and comes from the pods' last states, read in the order derive.py gives."""
from __future__ import annotations

from kubeslim_api import reasons
from kubeslim_api.contract import BadResultMessage, decode

from .. import constants as c
from ..times import parse_time
from .evidence import JobEvidence
from .kubelet import pod_progress, work_volume_full
from .stage_result import terminal_outcome, verdict_from_failed_stage, verdict_from_result
from .sweep import named, result_pod
from .verdict import Verdict, pod_ended, pod_live, sentence


# Jobs and Pods come on separate watch streams, and after an outage kopf reconnects them one by
# one: the Job may be seen concluded while its pod is still seen running. The pod's final state
# (and the result in its termination message) is on its way; a verdict from the Job's condition
# alone would be final and wrong (PodFailurePolicy for a failed gate, ResultUnavailable for a
# success). The wait is bounded, for a pod deleted while no watch was open.
POD_VIEW_LAG_SECONDS = 300


def pod_view_lagging(e: JobEvidence) -> Verdict | None:
    """A Job that concluded (other than by its deadline, which stops running pods itself) while a
    pod of it is seen running, less than POD_VIEW_LAG_SECONDS ago: wait for the pod's last state."""
    conds = e.conditions
    concluded = conds.get("Complete") or conds.get("SuccessCriteriaMet") or e.failure
    if concluded is None or concluded.get("reason") == "DeadlineExceeded" or not any(pod_live(p) for p in e.pods):
        return None
    t0, t1 = parse_time(concluded.get("lastTransitionTime")), parse_time(e.now)
    if t0 is not None and t1 is not None and t1 - t0 >= POD_VIEW_LAG_SECONDS:
        return None
    return Verdict(c.RUNNING, "", "The Job concluded; reading its pod's result.", hold=True, **e.times)


def job_complete(e: JobEvidence) -> Verdict | None:
    """A completed Job: the result its succeeded pod left in verify's termination message."""
    complete = e.conditions.get("Complete") or e.conditions.get("SuccessCriteriaMet")
    if complete is None:
        return None
    done = (e.job.get("status") or {}).get("completionTime") or complete.get("lastTransitionTime") or e.now
    winner = result_pod(e.job, e.pods)
    outcome = terminal_outcome(winner) if winner is not None else None
    if outcome is None:
        return Verdict(c.FAILED, reasons.RESULT_LOST,
                       "The Job completed but its pod is gone, so its result cannot be read; delete and re-create "
                       "the QuantizationJob to run again.", completion_time=done, **e.times)
    try:
        result = decode(outcome.message)
    except BadResultMessage as exc:
        return Verdict(c.FAILED, reasons.BAD_RESULT,
                       f"The verify stage finished but its termination message is not a result ({exc}); check that "
                       "the job image matches the operator version.", c.STAGE_NAMES[outcome.container],
                       completion_time=done, **e.times)
    return verdict_from_result(outcome, result, completion_time=done, **e.times)


def deadline_passed(e: JobEvidence) -> Verdict | None:
    if e.failure is None or e.failure.get("reason") != "DeadlineExceeded":
        return None
    deadline = (e.job.get("spec") or {}).get("activeDeadlineSeconds")
    running = [pod_progress(p, e.spec).stage for p in e.pods if not pod_ended(p)]
    stage = next((s for s in reversed(running) if s), "")
    during = f" while {stage.lower()}" if stage else ""
    return Verdict(c.FAILED, reasons.DEADLINE,
                   f"The run passed spec.runPolicy.activeDeadlineSeconds ({deadline} s){during}; raise it or "
                   "shrink the work (fewer algos, a smaller spec.data.evaluation.limit).", stage,
                   completion_time=e.failed_at, **e.times)


def work_volume_evicted(e: JobEvidence) -> Verdict | None:
    if e.failure is None:
        return None
    attempts = len(e.failed_pods)
    return next((v for p in reversed(e.failed_pods)
                 if (v := work_volume_full(p, attempts, completion_time=e.failed_at, **e.times)) is not None), None)


def stage_failed(e: JobEvidence) -> Verdict | None:
    """The latest failed pod's stage that exited non-zero, in its own words."""
    if e.failure is None:
        return None
    found = next(((p, o) for p in reversed(e.failed_pods) if (o := terminal_outcome(p)) is not None and o.exit_code != 0),
                 None)
    if found is None:
        return None
    pod, out = found
    return named(verdict_from_failed_stage(out, e.spec, len(e.failed_pods), completion_time=e.failed_at, **e.times),
                 e.job, pod, e.spec)


def job_failed(e: JobEvidence) -> Verdict | None:
    if e.failure is None:
        return None
    return Verdict(c.FAILED, e.failure.get("reason") or reasons.STAGE_FAILED,
                   sentence(e.failure.get("message") or "The Job failed"), completion_time=e.failed_at, **e.times)
