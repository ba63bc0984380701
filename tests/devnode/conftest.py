"""Fixtures for the dev node agent's own tests (hack/devnode).

The tests start their own agent on a Node of their own (`devnode-test-<id>`), tainted
`kubeslim.io/devnode-test=<id>:NoSchedule` besides the GPU taint, so no other pod lands there and
the shared `kubeslim-dev-0` of `make devnode-up` is left alone.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack" / "devnode"))

from kubeapi import ApiError, Kube, ns_path  # noqa: E402
from devnode import wait_ready  # noqa: E402

TEST_TAINT_KEY = "kubeslim.io/devnode-test"


@dataclass
class DevNode:
    name: str
    kube: Kube
    state_dir: Path
    taint_value: str

    @property
    def tolerations(self) -> list[dict]:
        return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": TEST_TAINT_KEY, "operator": "Equal", "value": self.taint_value, "effect": "NoSchedule"}]

    def pod(self, namespace: str, name: str) -> dict | None:
        return self.kube.get_or_none(ns_path(namespace, "pods", name))

    def create_pod(self, namespace: str, name: str, spec: dict) -> dict:
        spec = {"nodeName": self.name, "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                "tolerations": self.tolerations, **spec}
        return self.kube.create(ns_path(namespace, "pods"), {"apiVersion": "v1", "kind": "Pod",
                                                             "metadata": {"name": name}, "spec": spec})

    def log_file(self, namespace: str, pod: str, container: str) -> Path:
        return self.state_dir / "logs" / f"{namespace}_{pod}_{container}.log"


@pytest.fixture(scope="session")
def devnode(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory):
    run_id = uuid.uuid4().hex[:6]
    name = f"devnode-test-{run_id}"
    state_dir = tmp_path_factory.mktemp("devnode")
    agent_log = state_dir / "agent.log"
    cmd = [sys.executable, str(REPO / "hack/devnode/devnode.py"), "--kubeconfig", kubeconfig, "--node-name", name,
           "--state-dir", str(state_dir), "--taint", f"{TEST_TAINT_KEY}={run_id}:NoSchedule",
           "--restart-backoff", "0.5"]
    with open(agent_log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    kube = Kube(kubeconfig)
    try:
        if not wait_ready(kube, name, 60):
            pytest.fail(f"dev node agent did not get Ready; see {agent_log}:\n{agent_log.read_text()[-3000:]}")
        yield DevNode(name, kube, state_dir, run_id)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        try:
            kube.delete(f"/api/v1/nodes/{name}")
        except ApiError:
            pass
        if os.environ.get("DEVNODE_TEST_SHOW_LOG"):
            print(agent_log.read_text())


def wait_pod(dn: DevNode, namespace: str, name: str, pred, timeout: float = 60, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = dn.pod(namespace, name)
        if pod is not None and pred(pod):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or 'pod'} {namespace}/{name}; last status: {pod and pod.get('status')}")
