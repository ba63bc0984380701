"""Dev node agent (hack/devnode): container states -> pod status, as kubelet reports it."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "devnode"))

from podstatus import ContainerState, container_status, pod_conditions, pod_phase, pod_status  # noqa: E402


def cs(name="c", state="waiting", exit_code=None, init=False, last=None, final=False, reason="PodInitializing"):
    return ContainerState(name, "img", init=init, state=state, exit_code=exit_code, last_terminated=last,
                          final=final, reason=reason, started_at="t0" if state != "waiting" else None)


@pytest.mark.parametrize("policy, init, main, want", [
    ("Never", [], [cs()], "Pending"),
    ("Never", [cs("i", "running", init=True)], [cs()], "Pending"),
    ("Never", [cs("i", "terminated", 1, init=True)], [cs()], "Failed"),
    ("OnFailure", [cs("i", "waiting", init=True, last={"exitCode": 1})], [cs()], "Pending"),
    ("Never", [cs("i", "terminated", 0, init=True)], [cs("c", "running")], "Running"),
    ("Never", [], [cs("a", "running"), cs("b")], "Pending"),
    ("Never", [], [cs("a", "terminated", 0)], "Succeeded"),
    ("Never", [], [cs("a", "terminated", 0), cs("b", "terminated", 2)], "Failed"),
    ("Never", [], [cs("a", "terminated", 0), cs("b", "running")], "Running"),
    ("OnFailure", [], [cs("a", "waiting", last={"exitCode": 1}, reason="CrashLoopBackOff")], "Running"),
    ("OnFailure", [], [cs("a", "terminated", 0)], "Succeeded"),
    ("OnFailure", [], [cs("a", "terminated", 1, final=True)], "Failed"),
    ("Always", [], [cs("a", "terminated", 0)], "Running"),
])
def test_phase_follows_kubelet_get_phase(policy, init, main, want):
    assert pod_phase(policy, init, main) == want


def test_container_status_shapes():
    running = cs("c", "running")
    st = container_status(running)
    assert st["state"] == {"running": {"startedAt": "t0"}} and st["ready"] and st["started"]
    done = cs("c", "terminated", 3)
    done.reason, done.message, done.finished_at, done.container_id = "Error", "boom", "t1", "devnode://x"
    st = container_status(done)
    assert st["state"] == {"terminated": {"exitCode": 3, "reason": "Error", "message": "boom", "startedAt": "t0",
                                          "finishedAt": "t1", "containerID": "devnode://x"}}
    assert not st["ready"] and st["restartCount"] == 0
    w = cs("c", reason="CreateContainerConfigError")
    w.message = 'secret "x" not found'
    assert container_status(w)["state"] == {"waiting": {"reason": "CreateContainerConfigError",
                                                        "message": 'secret "x" not found'}}
    assert container_status(cs("i", "terminated", 0, init=True))["ready"]


def test_conditions_keep_foreign_ones_and_transition_times():
    previous = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "t-sched"},
                {"type": "Initialized", "status": "False", "lastTransitionTime": "t-old"}]
    conds = {c["type"]: c for c in pod_conditions("Pending", True, [cs("i", "running", init=True)], [cs()], previous)}
    assert conds["PodScheduled"]["lastTransitionTime"] == "t-sched"
    assert conds["Initialized"]["lastTransitionTime"] == "t-old"
    assert conds["Initialized"]["message"] == "containers with incomplete status: [i]"
    assert conds["Ready"]["reason"] == "ContainersNotReady"
    conds = {c["type"]: c for c in pod_conditions("Running", True, [], [cs("c", "running")], previous)}
    assert conds["Ready"]["status"] == conds["ContainersReady"]["status"] == conds["Initialized"]["status"] == "True"
    conds = {c["type"]: c for c in pod_conditions("Succeeded", True, [], [cs("c", "terminated", 0)], previous)}
    assert conds["Ready"] == {**conds["Ready"], "status": "False", "reason": "PodCompleted"}


def test_pod_status_reports_ips_and_init_statuses():
    pod = {"status": {"conditions": []}}
    st = pod_status(pod, "Running", True, [cs("i", "terminated", 0, init=True)], [cs("c", "running")], "t0")
    assert st["podIP"] == st["hostIP"] == "127.0.0.1"
    assert [s["name"] for s in st["initContainerStatuses"]] == ["i"]
    assert st["startTime"] == "t0" and st["reason"] is None
