"""What every source of evidence answers with (`Fact`, `Verdict`), and the small readers and text
helpers they share over k8s-shaped dicts (the reconciler's caches keep that shape, trimmed)."""
from __future__ import annotations

import dataclasses

from kubeslim_api.contract import STAGES
from kubeslim_api.text import truncate

from .. import constants as c
from ..constants import Obj


@dataclasses.dataclass(frozen=True)
class Fact:
    """One condition's facts: status True/False, reason, message."""
    status: bool
    reason: str
    message: str = ""


# A container of the pod started, so kubelet found the Secret and the CA ConfigMap it mounts.
CONFIG_FOUND = Fact(True, "Found", "The credentials and CA bundle are available.")


@dataclasses.dataclass(frozen=True)
class Verdict:
    phase: str
    reason: str = ""
    message: str = ""
    stage: str = ""
    scheduled: Fact | None = None      # None: nothing new (keep what the status says)
    config: Fact | None = None
    gate: Fact | None = None
    onnx: Fact | None = None           # spec.output.onnx only: was model.onnx exported, and if not, why
    results: Obj | None = None
    artifacts: Obj | None = None
    start_time: str | None = None
    completion_time: str | None = None
    # Nothing to tell yet: the pod finished but the Job controller has not concluded (Complete /
    # Failed) — the next Job event will. The reconciler writes nothing for such a verdict.
    hold: bool = False

    @property
    def final(self) -> bool:
        return self.phase in c.FINAL_PHASES


def true_conditions(obj: Obj) -> dict[str, Obj]:
    return {x.get("type", ""): x for x in (obj.get("status") or {}).get("conditions") or [] if x.get("status") == "True"}


def created(obj: Obj) -> tuple[str, str]:
    """Sort key: oldest first (creation time, then name)."""
    meta = obj.get("metadata") or {}
    return meta.get("creationTimestamp") or "", meta.get("name") or ""


def pod_phase(pod: Obj) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def pod_ended(pod: Obj) -> bool:
    return pod_phase(pod) in ("Failed", "Succeeded")


def pod_live(pod: Obj) -> bool:
    """Neither ended nor being deleted: a pod whose state may still change the run."""
    return not pod_ended(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def container_statuses(pod: Obj) -> list[Obj]:
    """Container statuses in stage order: export, calibrate (init), verify."""
    st = pod.get("status") or {}
    by_name = {s.get("name"): s for s in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])}
    return [by_name[n] for n in STAGES if n in by_name]


def last_line(text: str, limit: int = c.KUBELET_MESSAGE_MAX_CHARS) -> str:
    """The last non-blank line (where kubelet and Go put the cause), cut to `limit` characters."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return truncate(lines[-1] if lines else "", limit)


def sentence(text: str) -> str:
    text = (text or "").strip()
    return text if not text or text[-1] in ".!?" else text + "."


def clause(text: str, limit: int) -> str:
    """Foreign text as one clause of our sentence: white space folded, no final full stop, cut to `limit`."""
    return truncate(" ".join((text or "").split()).rstrip("."), limit)


def attempt_note(attempts: int) -> str:
    """' (attempt N)' after the first failed pod, so a retried failure says which try it was."""
    return f" (attempt {attempts})" if attempts > 1 else ""
