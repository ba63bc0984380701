"""Pure functions: the dev node's view of its containers -> Pod status, the way kubelet writes it.

`ContainerState` is what the agent knows about one container; `container_status`,
`pod_phase` and `pod_conditions` turn those into the API's status fields (phase rules follow
kubelet's getPhase in pkg/kubelet/kubelet_pods.go).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

POD_IP = "127.0.0.1"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ContainerState:
    name: str
    image: str
    init: bool = False
    # waiting | running | terminated
    state: str = "waiting"
    reason: str = "PodInitializing"
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    restart_count: int = 0
    last_terminated: dict | None = None
    container_id: str = ""
    image_id: str = ""
    # no further start: it terminated and the restart policy does not restart it
    final: bool = False

    def terminated_dict(self) -> dict:
        t = {"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
             "finishedAt": self.finished_at, "containerID": self.container_id}
        if self.message:
            t["message"] = self.message
        return {k: v for k, v in t.items() if v is not None and v != ""}

    @property
    def succeeded(self) -> bool:
        return self.state == "terminated" and self.exit_code == 0


def container_status(c: ContainerState) -> dict:
    if c.state == "running":
        state = {"running": {"startedAt": c.started_at}}
    elif c.state == "terminated":
        state = {"terminated": c.terminated_dict()}
    else:
        waiting = {"reason": c.reason}
        if c.message:
            waiting["message"] = c.message
        state = {"waiting": waiting}
    status = {
        "name": c.name,
        "image": c.image,
        "imageID": c.image_id,
        "state": state,
        "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
        # No probes on the dev node: a running container is ready; a completed init container too.
        "ready": c.state == "running" or (c.init and c.succeeded),
        "restartCount": c.restart_count,
        "started": c.state == "running",
    }
    if c.container_id:
        status["containerID"] = c.container_id
    return status


def pod_phase(restart_policy: str, init: list[ContainerState], main: list[ContainerState]) -> str:
    """kubelet getPhase: init failures with restartPolicy Never fail the pod; a container that
    never started keeps it Pending; one running makes it Running; all stopped decide by exit codes."""
    for c in init:
        if c.state == "terminated" and c.exit_code != 0 and restart_policy == "Never":
            return "Failed"
    if not all(c.succeeded for c in init):
        return "Pending"
    running = sum(c.state == "running" for c in main)
    stopped = sum(c.state == "terminated" or (c.state == "waiting" and c.last_terminated is not None)
                  for c in main)
    waiting = len(main) - running - stopped
    succeeded = sum(c.succeeded for c in main)
    if waiting > 0:
        return "Pending"
    if running > 0:
        return "Running"
    if stopped > 0:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded and all(c.state == "terminated" for c in main):
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        # OnFailure: the failed ones restart, unless they are final (pod being torn down)
        if all(c.final for c in main):
            return "Succeeded" if stopped == succeeded else "Failed"
        return "Running"
    return "Pending"


def _condition(ctype: str, ok: bool, previous: dict[str, dict], reason: str = "", message: str = "") -> dict:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    cond = {"type": ctype, "status": status,
            "lastTransitionTime": prev["lastTransitionTime"] if prev and prev.get("status") == status
            and prev.get("lastTransitionTime") else now(),
            "lastProbeTime": None}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def pod_conditions(phase: str, sandbox_ready: bool, init: list[ContainerState], main: list[ContainerState],
                   previous: list[dict]) -> list[dict]:
    """Conditions kubelet owns, keeping the others (PodScheduled, DisruptionTarget, ...) as found."""
    prev = {c["type"]: c for c in previous or []}
    kept = [c for c in previous or [] if c["type"] not in OWNED_CONDITIONS]
    terminal = phase in ("Succeeded", "Failed")
    incomplete = [c.name for c in init if not c.succeeded]
    initialized = not incomplete or (terminal and phase == "Succeeded")
    unready = [c.name for c in main if c.state != "running"]
    if "PodScheduled" not in prev:  # a pod created with spec.nodeName skipped the scheduler
        kept.insert(0, _condition("PodScheduled", True, prev))
    out = kept + [_condition("PodReadyToStartContainers", sandbox_ready and not terminal, prev)]
    if initialized:
        out.append(_condition("Initialized", True, prev))
    else:
        out.append(_condition("Initialized", False, prev, "ContainersNotInitialized",
                              f"containers with incomplete status: [{' '.join(incomplete)}]"))
    if terminal:
        for t in ("ContainersReady", "Ready"):
            out.append(_condition(t, False, prev, "PodCompleted"))
    elif unready:
        msg = f"containers with unready status: [{' '.join(unready)}]"
        for t in ("ContainersReady", "Ready"):
            out.append(_condition(t, False, prev, "ContainersNotReady", msg))
    else:
        for t in ("ContainersReady", "Ready"):
            out.append(_condition(t, True, prev))
    return out


def pod_status(pod: dict, phase: str, sandbox_ready: bool, init: list[ContainerState],
               main: list[ContainerState], start_time: str, reason: str = "", message: str = "") -> dict:
    status = {
        "phase": phase,
        "conditions": pod_conditions(phase, sandbox_ready, init, main, (pod.get("status") or {}).get("conditions")),
        "hostIP": POD_IP,
        "hostIPs": [{"ip": POD_IP}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "startTime": start_time,
        "containerStatuses": [container_status(c) for c in main],
        "reason": reason or None,
        "message": message or None,
    }
    if init:
        status["initContainerStatuses"] = [container_status(c) for c in init]
    return status

