"""Verdict → the QuantizationJob's status (kstatus conditions Ready/Reconciling/Stalled plus one
per fact, each keeping its lastTransitionTime while its status holds), and the Event for a
visible transition."""
from __future__ import annotations

import dataclasses

from kubeslim_api import reasons

from .. import constants as c
from ..constants import Obj
from .verdict import Verdict


def _condition(ctype: str, status: bool, reason: str, message: str, generation: int,
               prev: dict[str, Obj], now: str) -> Obj:
    value = "True" if status else "False"
    old = prev.get(ctype)
    since = old.get("lastTransitionTime") if old and old.get("status") == value and old.get("lastTransitionTime") else now
    return {"type": ctype, "status": value, "reason": reason or ctype, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation}


def build_status(v: Verdict, *, generation: int, job_name: str | None, prev: Obj | None, now: str) -> Obj:
    """The complete status for a verdict. Keys the verdict leaves empty are None, so that a JSON
    merge patch of this mapping also removes what an earlier generation left behind."""
    prev = prev or {}
    same_gen = prev.get("observedGeneration") == generation
    prev_conds = {x.get("type"): x for x in prev.get("conditions") or [] if isinstance(x, dict)}
    reason_or_phase = v.reason or v.phase
    conds: dict[str, Obj] = {}

    def put(ctype: str, status: bool, reason: str, message: str) -> None:
        conds[ctype] = _condition(ctype, status, reason, message, generation, prev_conds, now)

    if v.phase == c.SUCCEEDED:
        put(c.READY, True, c.SUCCEEDED, v.message)
        put(c.RECONCILING, False, c.SUCCEEDED, "")
        put(c.STALLED, False, c.SUCCEEDED, "")
    elif v.phase == c.FAILED:
        put(c.READY, False, v.reason or c.FAILED, v.message)
        put(c.RECONCILING, False, v.reason or c.FAILED, "")
        put(c.STALLED, True, v.reason or c.FAILED, v.message)
    else:
        put(c.READY, False, reason_or_phase, v.message)
        put(c.RECONCILING, True, v.stage or reason_or_phase, v.message)
        put(c.STALLED, False, reason_or_phase, "")
    # Facts the verdict does not restate keep their last value within a generation.
    for ctype, fact in ((c.SCHEDULED, v.scheduled), (c.CONFIG_AVAILABLE, v.config), (c.ACCURACY_GATE, v.gate),
                        (c.ONNX_EXPORTED, v.onnx)):
        if fact is not None:
            put(ctype, fact.status, fact.reason, fact.message)
        elif same_gen and ctype in prev_conds:
            conds[ctype] = prev_conds[ctype]

    # Results of this generation survive a later verdict that carries none (e.g. a stalled retry).
    results = v.results if v.results is not None else (prev.get("results") if same_gen and v.final else None)
    artifacts = v.artifacts if v.artifacts is not None else (prev.get("artifacts") if same_gen and v.final else None)
    start = v.start_time or (prev.get("startTime") if same_gen else None)
    completion = (v.completion_time or (prev.get("completionTime") if same_gen else None)) if v.final else None
    return {
        "observedGeneration": generation,
        "phase": v.phase,
        "stage": v.stage,
        "reason": v.reason,
        "message": v.message,
        "conditions": [conds[t] for t in c.CONDITION_ORDER if t in conds],
        "jobName": job_name,
        "startTime": start,
        "completionTime": completion,
        "results": results,
        "artifacts": artifacts,
    }


def visible(status: Obj | None) -> tuple:
    """What a status says at a glance. A change here is written (progress at most once per
    status_progress_seconds); a change of message or conditions alone waits for the next such change."""
    status = status or {}
    return (status.get("observedGeneration"), status.get("phase"), status.get("reason") or "", status.get("stage") or "",
            status.get("results"), status.get("artifacts"), status.get("jobName"), status.get("progress"))


def is_final_for(status: Obj | None, generation: int) -> bool:
    status = status or {}
    return status.get("observedGeneration") == generation and status.get("phase") in c.FINAL_PHASES


@dataclasses.dataclass(frozen=True)
class EventSpec:
    type: str          # Normal | Warning
    reason: str
    message: str


def _transition_key(status: Obj) -> tuple:
    return (status.get("observedGeneration"), status.get("phase"), status.get("reason") or "", status.get("stage") or "")


def transitioned(prev: Obj | None, new: Obj) -> bool:
    """A visible transition: generation, phase, reason or stage changed (logged and counted)."""
    return _transition_key(prev or {}) != _transition_key(new)


def transition_event(prev: Obj | None, new: Obj) -> EventSpec | None:
    """The Event for a transition a user needs to hear of; None for no transition and for a run
    moving on: a phase that is not final, with no reason, in a generation the Events already
    announced (Pending → Running, one stage to the next, a retry's or an admitted Job's pod starting).

    Which Events a user needs: the operator's own action (the generation's first status: its Job
    is made), every problem, wait and retry (a reason), and the outcome (Succeeded, Failed). A
    stage starting is not the operator's doing: the kubelet posts a Started event per stage
    container on the pod, and status.phase/stage/progress show it. Why it matters: on a busy
    cluster many runs are seen Running for a moment (issue 17 item 6's benchmark: 127 of 300 kwok
    runs, 78 % in another run), and that Event made such a run cost 7 writes instead of 6."""
    prev = prev or {}
    if not transitioned(prev, new):
        return None
    phase, reason = new.get("phase"), new.get("reason") or ""
    announced = prev.get("phase") and prev.get("observedGeneration") == new.get("observedGeneration")
    if phase not in c.FINAL_PHASES and not reason and announced:
        return None
    warning = phase == c.FAILED or (phase == c.PENDING and reason not in ("", reasons.QUEUED))
    if reason:
        ev_reason = reason
    elif phase == c.RUNNING:
        stage = new.get("stage") or ""
        ev_reason = stage if stage in c.STAGE_NAMES.values() else c.RUNNING   # Exporting, Calibrating…
    else:
        ev_reason = phase or "Unknown"
    return EventSpec("Warning" if warning else "Normal", ev_reason, new.get("message") or "")
