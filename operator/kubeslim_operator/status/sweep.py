"""An Indexed Job's pods (a parallel sweep, kubeslim_api.sweep: candidates 0..K-1, then the final
index that verifies): which pod's result is the run's, how many candidates are done, and which
index a pod is, for the messages. On a one-pod Job every reading here is what it always was: the
newest succeeded pod holds the result and no message changes."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kubeslim_api import sweep
from kubeslim_api.spec import QuantizationJobSpec

from .. import constants as c
from ..constants import Obj
from .verdict import Verdict, container_statuses, pod_phase


def indexed(job: Obj) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def final_index(job: Obj) -> int:
    return int((job.get("spec") or {}).get("completions") or 1) - 1


def completion_index(pod: Obj) -> int | None:
    raw = ((pod.get("metadata") or {}).get("labels") or {}).get(c.LABEL_COMPLETION_INDEX)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def shown_pod(job: Obj, live: Sequence[Obj]) -> Obj:
    """The live pod the run's stage and progress come from: the newest; in a sweep the one furthest
    on (a candidate just started exports while an older one calibrates: the run is calibrating,
    and its stage must not step back each time a slot frees)."""
    if not indexed(job):
        return live[-1]

    def how_far(pod: Obj) -> tuple[int, bool]:
        states = [s.get("state") or {} for s in container_statuses(pod)]
        return sum("terminated" in st for st in states), any("running" in st for st in states)
    return max(enumerate(live), key=lambda ip: (how_far(ip[1]), ip[0]))[1]


def result_pod(job: Obj, pods: Sequence[Obj]) -> Obj | None:
    """The succeeded pod whose verify result is the run's: the final index's in a sweep (a retried
    candidate may succeed after it), else the newest succeeded one. `pods`: oldest first."""
    winners = [p for p in pods if pod_phase(p) == "Succeeded"]
    if indexed(job):
        winners = [p for p in winners if completion_index(p) == final_index(job)]
    return winners[-1] if winners else None


def _role(job: Obj, pod: Obj, spec: QuantizationJobSpec | None) -> str | None:
    index = completion_index(pod)
    if not indexed(job) or index is None:
        return None
    text = sweep.role(index, spec.quantization) if spec is not None else f"index {index}"
    return text[0].upper() + text[1:]


def named(v: Verdict, job: Obj, pod: Obj, spec: QuantizationJobSpec | None) -> Verdict:
    """A pod's verdict, its message led by the pod's part in a sweep ("Candidate KL (index 2): …")."""
    role = _role(job, pod, spec)
    return v if role is None else dataclasses.replace(v, message=f"{role}: {v.message}")


def with_candidates_done(v: Verdict, job: Obj, pod: Obj, pods: Sequence[Obj], spec: QuantizationJobSpec | None,
                         held: Sequence[tuple[Obj, Verdict]] = ()) -> Verdict:
    """A running sweep's verdict for `pod` (the one furthest on), led by how many candidates are
    done and by the pod's part, followed by the other live pods that cannot start (`held`: a pod
    with its verdict): the shown pod may be waiting for one of them, which would otherwise go unsaid."""
    if not indexed(job):
        return v
    final = final_index(job)
    done = {i for p in pods if pod_phase(p) == "Succeeded" and (i := completion_index(p)) is not None and i < final}
    v = named(v, job, pod, spec)
    # Once a candidate is done the run is past exporting, whatever stage a pod just started is in.
    stage = c.STAGE_NAMES["calibrate"] if done and v.phase == c.RUNNING and v.stage in ("", c.STAGE_NAMES["export"]) \
        else v.stage
    waiting = "".join(f" {named(h, job, p, spec).message}" for p, h in held if p is not pod)
    return dataclasses.replace(v, stage=stage, message=f"{len(done)} of {final} candidates calibrated. {v.message}{waiting}")
