"""A private dev node agent (hack/devnode) for tests that need a real kubelet stand-in: its own
Node, tainted with a key of the caller's, so no other pod lands there and the shared
`kubeslim-dev-0` of `make devnode-up` is left alone."""
from __future__ import annotations

import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "devnode"))

from devnode import wait_ready  # noqa: E402
from kubeapi import ApiError, Kube  # noqa: E402


@dataclass
class PrivateNode:
    name: str
    run_id: str          # also the taint's value
    state_dir: Path
    agent_log: Path
    kube: Kube


@contextmanager
def private_devnode(kubeconfig: str, name_prefix: str, taint_key: str, state_dir: Path,
                    extra_args: tuple[str, ...] = ()) -> Iterator[PrivateNode]:
    run_id = uuid.uuid4().hex[:6]
    name = f"{name_prefix}-{run_id}"
    agent_log = state_dir / "agent.log"
    cmd = [sys.executable, str(REPO / "hack/devnode/devnode.py"), "--kubeconfig", kubeconfig, "--node-name", name,
           "--state-dir", str(state_dir), "--taint", f"{taint_key}={run_id}:NoSchedule", *extra_args]
    with open(agent_log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    kube = Kube(kubeconfig)
    try:
        if not wait_ready(kube, name, 60):
            raise RuntimeError(f"dev node agent did not get Ready; see {agent_log}:\n{agent_log.read_text()[-3000:]}")
        yield PrivateNode(name, run_id, state_dir, agent_log, kube)
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
