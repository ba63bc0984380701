"""Job + Pods → QuantizationJob status. Pure: the reconciler passes in everything it saw (and the
clock), so a restarted operator derives the same status from the same children.

The flow: `observe()` (derive.py) condenses the Job and its pods into a `Verdict` (phase, stage,
reason, message, results, per-condition facts) by trying ordered rules; `build_status()`
(conditions.py) turns a verdict into the status mapping with kstatus conditions, keeping each
condition's lastTransitionTime while its status holds.

One module per source of evidence, each read into Facts and Verdicts (verdict.py):
  kubelet.py        the kubelet's messages about a pod (config errors, image pulls, scheduling, evictions)
  stage_result.py   a stage's exit and the result in its termination message
  kueue.py          the Workload of a Job Kueue holds
  rejection.py      the API server's refusal to create the Job, mapped back to spec fields
  retry.py          the Job controller's podFailurePolicy/backoffLimit rules
  sweep.py          a parallel sweep's Indexed Job: the final index's result, the candidates done
  conditions.py     verdict → status conditions, and the Event for a visible transition
and the derivation over them: derive.py (the order), before_job.py, job_concluded.py,
job_running.py (the rules), evidence.py (what the rules read).
"""
from __future__ import annotations

from .conditions import EventSpec, build_status, is_final_for, transition_event, transitioned, visible
from .derive import observe
from .kubelet import config_problem_from_kubelet
from .kueue import Queue, queued_verdict
from .rejection import JobRejection, job_rejection, spec_field
from .retry import job_will_retry, pod_failure_action
from .stage_result import StageOutcome
from .verdict import Fact, Verdict

__all__ = [
    "EventSpec", "Fact", "JobRejection", "Queue", "StageOutcome", "Verdict",
    "build_status", "config_problem_from_kubelet", "is_final_for", "job_rejection", "job_will_retry", "observe",
    "pod_failure_action", "queued_verdict", "spec_field", "transition_event", "transitioned", "visible",
]
