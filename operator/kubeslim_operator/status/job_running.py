"""Rules for a Job that has not concluded: held in a queue, a pod under way, a failed attempt the
Job controller may retry, or a pod still to come — in the order derive.py gives."""
from __future__ import annotations

import dataclasses

from kubeslim_api import reasons

from .. import constants as c
from .evidence import JobEvidence
from .kubelet import pod_progress, work_volume_full
from .kueue import queued_verdict
from .retry import job_will_retry
from .stage_result import terminal_outcome, verdict_from_failed_stage
from .sweep import indexed, named, shown_pod, with_candidates_done
from .verdict import Verdict, pod_live, pod_phase


def suspended(e: JobEvidence) -> Verdict | None:
    if not (e.job.get("spec") or {}).get("suspend"):
        return None
    return dataclasses.replace(queued_verdict(e.job, e.queue), **e.times)


def pod_running(e: JobEvidence) -> Verdict | None:
    live = [p for p in e.pods if pod_live(p)]
    if not live:
        return None
    pod = shown_pod(e.job, live)
    held = [(p, v) for p in live if p is not pod and (v := pod_progress(p, e.spec)).reason] if indexed(e.job) else []
    v = with_candidates_done(pod_progress(pod, e.spec), e.job, pod, e.pods, e.spec, held)
    if v.final:
        v = dataclasses.replace(v, completion_time=e.now)
    return dataclasses.replace(v, **e.times)


def _because(v: Verdict | None) -> str:
    return f" ({v.reason}: {v.message.rstrip('.')})" if v is not None else ""


def attempt_failed(e: JobEvidence) -> Verdict | None:
    """Failed pods and no live one: another attempt comes, or the Job's failure condition does."""
    if not e.failed_pods:
        return None
    attempts, last = len(e.failed_pods), e.failed_pods[-1]
    out = terminal_outcome(last)
    cause = work_volume_full(last, attempts) or \
        (verdict_from_failed_stage(out, e.spec, attempts) if out is not None and out.exit_code != 0 else None)
    cause = named(cause, e.job, last, e.spec) if cause is not None else None
    if not job_will_retry(e.job, e.failed_pods):
        # The Job's failure condition is on its way and will say why: announcing a retry now
        # would be withdrawn a moment later.
        return Verdict(c.PENDING, "", f"Attempt {attempts} failed{_because(cause)}; waiting for the Job's verdict.",
                       hold=True, **e.times)
    return Verdict(c.PENDING, reasons.RETRYING, f"Attempt {attempts} failed{_because(cause)}; the Job retries.", **e.times)


def pods_finished(e: JobEvidence) -> Verdict | None:
    if not e.pods or not all(pod_phase(p) == "Succeeded" for p in e.pods):
        return None
    return Verdict(c.RUNNING, "", "The pod finished; waiting for the Job to complete.", c.STAGE_NAMES["verify"],
                   hold=True, **e.times)


def waiting_for_pod(e: JobEvidence) -> Verdict:
    return Verdict(c.PENDING, "", f"Job {e.job.get('metadata', {}).get('name', '')} is waiting for its pod.", **e.times)
