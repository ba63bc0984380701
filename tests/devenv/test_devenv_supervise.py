"""The devenv survives what it tests: a control-plane process that exits is started again
(devenv/supervise.py), as a real node's kubelet restarts static pods.

kube-controller-manager and kube-scheduler exit by design when they lose their leader lease
across a kube-apiserver restart; before the supervisor, the devenv then had no Job controller and
no scheduler until `make devenv-down && make devenv`.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

REPO = Path(__file__).resolve().parents[2]
SUPERVISE = REPO / "devenv/supervise.py"
pytestmark = pytest.mark.cluster
FAKE_NODE_TOLERATION = client.V1Toleration(key="kwok.x-k8s.io/node", operator="Exists", effect="NoSchedule")


def _pid_of(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def supervised_sleep(tmp_path):
    """A throwaway process under a supervisor of its own (not the devenv's)."""
    out = tmp_path / "sleep.log"
    with open(out, "w") as fh:
        sleeper = subprocess.Popen(["sleep", "300"], stdout=fh, stderr=fh, start_new_session=True)
    pidfile = tmp_path / "sleep.pid"
    pidfile.write_text(f"{sleeper.pid}\n")
    hold = tmp_path / "hold"
    supervisor = subprocess.Popen([sys.executable, str(SUPERVISE), "--hold-dir", str(hold), "--log", str(tmp_path / "supervise.log"),
                                   f"sleeper={pidfile}"])
    time.sleep(1.5)   # it learns the recipe while the process runs
    yield sleeper, pidfile, hold, tmp_path / "supervise.log"
    supervisor.kill()
    supervisor.wait()
    for pid in {sleeper.pid, _pid_of(pidfile)}:
        subprocess.run(["kill", "-9", str(pid)], capture_output=True)
    sleeper.wait()


def test_a_process_that_exits_is_started_again_the_same_way_unless_held(supervised_sleep, wait_for):
    sleeper, pidfile, hold, log = supervised_sleep
    sleeper.kill()
    sleeper.wait()
    new_pid = wait_for(lambda: _pid_of(pidfile) != sleeper.pid and _pid_of(pidfile), timeout=10, what="a restarted sleeper")
    assert _alive(new_pid)
    assert Path(f"/proc/{new_pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]
    assert f"sleeper (pid {sleeper.pid}) had exited: started again as pid {new_pid}" in log.read_text()

    hold.joinpath("sleeper").touch()
    subprocess.run(["kill", "-9", str(new_pid)], check=True)
    time.sleep(3)          # a few poll periods and more than the 2 s backoff: still held
    assert _pid_of(pidfile) == new_pid
    hold.joinpath("sleeper").unlink()
    wait_for(lambda: _pid_of(pidfile) != new_pid, timeout=10, what="the sleeper started again once released")


def test_controller_manager_and_scheduler_come_back_after_an_apiserver_restart(devenv, k8s, namespace, wait_for):
    pids = devenv.dir / "kwok/clusters/kubeslim/pids"
    before = {name: _pid_of(pids / f"{name}.pid") for name in ("kube-controller-manager", "kube-scheduler")}
    subprocess.run([str(REPO / "devenv/devenv.sh"), "restart", "kube-apiserver"], check=True, timeout=180)

    # Both exit on losing their lease; whether it happened already or not, they must serve again.
    for name in before:
        wait_for(lambda name=name: _alive(_pid_of(pids / f"{name}.pid")), timeout=60, what=f"{name} running")

    # The proof that both work: a Job gets a pod (Job controller) and the pod a node (scheduler).
    batch = client.BatchV1Api(k8s)
    batch.create_namespaced_job(namespace, client.V1Job(
        metadata=client.V1ObjectMeta(name="after-restart"),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
            restart_policy="Never", tolerations=[FAKE_NODE_TOLERATION],
            node_selector={"type": "kwok"},
            containers=[client.V1Container(name="c", image="fake")])))))
    core = client.CoreV1Api(k8s)

    def scheduled():
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=after-restart").items
        return bool(pods) and pods[0].spec.node_name
    node = wait_for(scheduled, timeout=120, what="the Job's pod created and scheduled after the restart")
    assert node.startswith("kwok-")
