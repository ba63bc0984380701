"""Will the Job retry? The Job controller decides from its podFailurePolicy and backoffLimit; a
failed pod's watch event can arrive before the Job's failure condition, and in that window the
same rules say whether a new pod is coming."""
from __future__ import annotations

from .. import constants as c
from ..constants import Obj
from .verdict import container_statuses


def _exit_code_matches(pod: Obj, requirement: Obj) -> bool:
    """batch/v1 onExitCodes: any terminated container (init ones included) with a non-zero code."""
    values = set(requirement.get("values") or [])
    wanted = requirement.get("containerName")
    for s in container_statuses(pod):
        code = int(((s.get("state") or {}).get("terminated") or {}).get("exitCode") or 0)
        if code != 0 and (wanted is None or wanted == s.get("name")):
            if (code in values) == (requirement.get("operator") == "In"):
                return True
    return False


def _pod_condition_matches(pod: Obj, patterns: list[Obj]) -> bool:
    conds = {x.get("type"): x.get("status") for x in (pod.get("status") or {}).get("conditions") or []}
    return any(conds.get(p.get("type")) == (p.get("status") or "True") for p in patterns)


def pod_failure_action(pod: Obj, policy: Obj | None) -> str:
    """The action of the first podFailurePolicy rule a failed pod matches (Count if none does)."""
    for rule in (policy or {}).get("rules") or []:
        on_codes, on_conds = rule.get("onExitCodes"), rule.get("onPodConditions")
        if (on_codes and _exit_code_matches(pod, on_codes)) or (on_conds and _pod_condition_matches(pod, on_conds)):
            return rule.get("action") or c.POD_FAILURE_COUNT
    return c.POD_FAILURE_COUNT


def job_will_retry(job: Obj, failed_pods: list[Obj]) -> bool:
    """Whether the Job controller starts another pod after these failures."""
    spec = job.get("spec") or {}
    actions = [pod_failure_action(p, spec.get("podFailurePolicy")) for p in failed_pods]
    if c.POD_FAILURE_FAIL_JOB in actions:
        return False
    # The Job's own count may lag the pods (or outlive them); either one can be ahead.
    counted = max(actions.count(c.POD_FAILURE_COUNT), int((job.get("status") or {}).get("failed") or 0))
    limit = spec.get("backoffLimit")
    return counted <= (c.JOB_DEFAULT_BACKOFF_LIMIT if limit is None else int(limit))
