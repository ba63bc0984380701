"""What the derivation's rules read: the evidence one reconcile pass gathered about a generation,
with the few readings of the Job that several rules share."""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any

from kubeslim_api.spec import QuantizationJobSpec, SpecError

from ..constants import Obj
from .kueue import Queue
from .rejection import JobRejection
from .verdict import Fact, pod_phase, true_conditions


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evidence:
    """What a reconcile pass knows of a generation before it has a Job: the spec, and what
    creating the Job came to (the pass sets at most one of config_problem, job_conflict,
    job_deleted and job_rejection)."""
    spec: QuantizationJobSpec | None
    spec_error: SpecError | None
    config_problem: Fact | None = None
    job_conflict: str | None = None
    job_deleted: bool = False
    job_rejection: JobRejection | None = None
    now: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobEvidence(Evidence):
    """… and, once the generation has a Job, the Job, its pods and (while Kueue holds it) its Workload."""
    job: Obj
    pods: tuple[Obj, ...]              # oldest first
    queue: Queue | None = None

    @cached_property
    def conditions(self) -> dict[str, Obj]:
        return true_conditions(self.job)

    @cached_property
    def times(self) -> dict[str, Any]:
        return {"start_time": (self.job.get("status") or {}).get("startTime")}

    @cached_property
    def failed_pods(self) -> list[Obj]:
        return [p for p in self.pods if pod_phase(p) == "Failed"]

    @cached_property
    def failure(self) -> Obj | None:
        """The Job controller's failure condition, once it concluded (or decided) that the Job failed."""
        return self.conditions.get("Failed") or self.conditions.get("FailureTarget")

    @property
    def failed_at(self) -> str:
        return (self.failure or {}).get("lastTransitionTime") or self.now
