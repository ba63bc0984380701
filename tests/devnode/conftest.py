"""Fixtures for the dev node agent's own tests (hack/devnode).

The tests start their own agent on a Node of their own (`devnode-test-<id>`), tainted
`kubeslim.io/devnode-test=<id>:NoSchedule` besides the GPU taint, so no other pod lands there and
the shared `kubeslim-dev-0` of `make devnode-up` is left alone.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack" / "devnode"))

from kubeapi import Kube, ns_path  # noqa: E402
from tests.devnode_agent import private_devnode  # noqa: E402

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
    state_dir = tmp_path_factory.mktemp("devnode")
    with private_devnode(kubeconfig, "devnode-test", TEST_TAINT_KEY, state_dir, ("--restart-backoff", "0.5")) as node:
        yield DevNode(node.name, node.kube, state_dir, node.run_id)
    if os.environ.get("DEVNODE_TEST_SHOW_LOG"):
        print(node.agent_log.read_text())


def wait_pod(dn: DevNode, namespace: str, name: str, pred, timeout: float = 60, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = dn.pod(namespace, name)
        if pod is not None and pred(pod):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or 'pod'} {namespace}/{name}; last status: {pod and pod.get('status')}")
