"""A pod taken off a node that stopped answering (or was tainted NoExecute): the node lifecycle
controller marks a node whose kubelet has been silent for --node-monitor-grace-period unreachable,
its taint eviction deletes the node's pods once their tolerationSeconds run out, with the pod
condition DisruptionTarget (reason DeletionByTaintManager). The Job's podFailurePolicy ignores such
a failure, so a new pod comes — but only once the old one has ended: when the node answers again
and its kubelet stops it, or when the Node is deleted or tainted node.kubernetes.io/out-of-service.
Until then the pod is neither live nor failed, and the status would say nothing ('waiting for its
pod') or an old stage: `pod_on_lost_node` says Retrying and names the node, and what to do if it
never comes back. If it never does, the Job's activeDeadlineSeconds ends the run:
`deadline_on_lost_node` says so as NodeLost, not as a run too slow for its deadline."""
from __future__ import annotations

from kubeslim_api import reasons

from .. import constants as c
from ..constants import Obj
from .evidence import JobEvidence
from .verdict import Verdict, container_statuses, pod_ended, pod_live

# The taint eviction controller's DisruptionTarget reason (k8s.io/api/core/v1 PodReasonDeletionByTaintManager).
DELETION_BY_TAINT_MANAGER = "DeletionByTaintManager"


def taken_off_node(pod: Obj) -> bool:
    return any(x.get("type") == "DisruptionTarget" and x.get("status") == "True"
               and x.get("reason") == DELETION_BY_TAINT_MANAGER
               for x in (pod.get("status") or {}).get("conditions") or [])


def _stage_when_lost(pod: Obj) -> str:
    """The stage the pod was last seen in: its running container, else the last one that started."""
    names = [s.get("name") for s in container_statuses(pod) if "running" in (s.get("state") or {})] or \
            [s.get("name") for s in container_statuses(pod) if (s.get("state") or {}).get("terminated")]
    return c.STAGE_NAMES.get(names[-1], "") if names else ""


def pod_on_lost_node(e: JobEvidence) -> Verdict | None:
    """The newest pod was taken off its node by a NoExecute taint and none has replaced it yet."""
    pod = e.pods[-1] if e.pods else None
    if pod is None or pod_live(pod) or not taken_off_node(pod):
        return None
    name, node = (pod.get("metadata") or {}).get("name", ""), (pod.get("spec") or {}).get("nodeName") or "its node"
    stage = _stage_when_lost(pod)
    during = f" while {stage.lower()}" if stage else ""
    return Verdict(c.PENDING, reasons.RETRYING,
                   f"Node {node} stopped answering (or was tainted NoExecute) and pod {name} was taken off it{during}; "
                   "the Job runs the stages again in a new pod once the node has stopped the old one, or once the "
                   f"Node {node} is deleted or tainted node.kubernetes.io/out-of-service if it is gone for good. "
                   "This retry does not count against spec.runPolicy.backoffLimit.", **e.times)


def deadline_on_lost_node(e: JobEvidence) -> Verdict | None:
    """The deadline ended the Job while its newest pod was still held by a lost node."""
    if e.failure is None or e.failure.get("reason") != "DeadlineExceeded" or not e.pods:
        return None
    pod = e.pods[-1]
    if pod_ended(pod) or not taken_off_node(pod):
        return None
    name, node = (pod.get("metadata") or {}).get("name", ""), (pod.get("spec") or {}).get("nodeName") or "its node"
    stage = _stage_when_lost(pod)
    during = f" while {stage.lower()}" if stage else ""
    deadline = (e.job.get("spec") or {}).get("activeDeadlineSeconds")
    return Verdict(c.FAILED, reasons.NODE_LOST,
                   f"Node {node} stopped answering (or was tainted NoExecute) with pod {name} on it{during}, and did not "
                   f"let the pod go before spec.runPolicy.activeDeadlineSeconds ({deadline} s) ended the run; bring the "
                   f"node back, or delete the Node {node} (or taint it node.kubernetes.io/out-of-service), then change "
                   "the spec or re-create the QuantizationJob to run again.", stage,
                   completion_time=e.failed_at, **e.times)
