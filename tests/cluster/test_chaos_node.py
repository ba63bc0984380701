"""Node loss (make chaos): the real node's kubelet and containerd stop while a real QuantizationJob
calibrates on it, for longer than the controller manager's --node-monitor-grace-period, then come
back (kubeslim_dev.devenv.node_daemons_stopped: the pods' containers keep running in their shims,
as on a node cut off from the control plane).

What must happen: the node controller declares the node unreachable and taints it NoExecute; the
pod, which tolerates that taint for NODE_TOLERATION_SECONDS only (the spec's own tolerations: the
default 300 s would keep the node away for 8 minutes), is taken off it (DisruptionTarget,
DeletionByTaintManager); the status says Retrying and names the node while the Job waits; once the
node is back its kubelet stops the old pod, and the Job — whose podFailurePolicy ignores a
disruption, so backoffLimit 0 still allows it — runs the stages again in a new pod, which succeeds.
Never stuck, never a second Job, the result whole.

It stops the node everyone's real-node tests use: run it alone, holding the team's real-node lock
exclusively (`flock -x /tmp/kubeslim-node.lock …`); `make chaos` runs it last. Whatever happens,
the kubelet and containerd are started again (finally), and the devenv must be healthy after.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from kubeslim_dev.devenv import node_daemons_stopped
from kubeslim_dev.devenv import status as devenv_status

from chaos_harness import digits_job, full_only, record, recorders, run_figures  # noqa: F401
from operator_harness import crd, operator_identity, qj  # noqa: F401
from operator_harness import operator_on_real_node as operator  # noqa: F401

pytestmark = [pytest.mark.timeout(1500), full_only]

# How long the pod stays on an unreachable node before the taint eviction takes it off.
NODE_TOLERATION_SECONDS = 5
LOST_NODE_TOLERATIONS = [{"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": NODE_TOLERATION_SECONDS}
                         for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]


def controller_manager_flag(name: str) -> str | None:
    """A flag of the running kube-controller-manager (the devenv's: kwokctl passes its own)."""
    out = subprocess.run(["pgrep", "-a", "-f", "kube-controller-manager"], capture_output=True, text=True).stdout
    m = re.search(rf"--{name}[= ](\S+)", out)
    return m.group(1) if m else None


def seconds(duration: str | None) -> float | None:
    """A Go duration as kube-controller-manager prints it (3m20s, 40s) in seconds."""
    if not duration:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for v, u in parts)


def node_ready(kubectl, node: str) -> str:
    doc = json.loads(kubectl("get", "node", node, "-o", "json").stdout)
    return next((c["status"] for c in doc["status"].get("conditions") or [] if c["type"] == "Ready"), "Unknown")


def test_node_lost_while_calibrating(operator, qj, namespace, kubectl, s3, s3_env, real_node, bucket, recorders, wait_for,
                                     devenv):
    qjs, jobs = recorders
    grace = seconds(controller_manager_flag("node-monitor-grace-period")) or 50.0      # 50 s: the 1.34 default
    doc = digits_job(kubectl, s3, s3_env, namespace, bucket, real_node, "node-loss", s3_env["AWS_ENDPOINT_URL"], 0)
    doc["spec"]["scheduling"]["tolerations"] += LOST_NODE_TOLERATIONS
    # The grace period, the taint eviction and a second full run must fit.
    doc["spec"]["runPolicy"]["activeDeadlineSeconds"] = int(grace) + 600
    t0 = time.monotonic()
    qj.apply(doc)
    qj.wait("node-loss", lambda s: s.get("stage") == "Calibrating", what="calibrating", timeout=300)
    first_pod = [p["metadata"]["name"] for p in qj.pods("node-loss-g1")]
    assert len(first_pod) == 1, first_pod

    with node_daemons_stopped(devenv.dir) as t_stop:
        # The node controller notices after the grace period (checked every --node-monitor-period).
        wait_for(lambda: node_ready(kubectl, real_node.name) != "True", timeout=grace + 120, interval=1,
                 what=f"node {real_node.name} declared not ready")
        t_unready = time.monotonic()
        retrying = qj.wait("node-loss", lambda s: s if s.get("reason") == "Retrying" else None,
                           what="Retrying while the node is lost", timeout=120)
        t_retrying = time.monotonic()
    t_back = time.monotonic()

    st = qj.wait("node-loss", lambda s: s if s.get("phase") in ("Succeeded", "Failed") else None, what="final",
                 timeout=600)
    time.sleep(2)                                        # the watch has every status write by now
    pods = qj.pods("node-loss-g1")
    figures = {"node_monitor_grace_period_s": grace, "toleration_s": NODE_TOLERATION_SECONDS,
               "outage_s": round(t_back - t_stop, 1), "stop_to_not_ready_s": round(t_unready - t_stop, 1),
               "stop_to_retrying_status_s": round(t_retrying - t_stop, 1),
               "back_to_final_s": round(time.monotonic() - t_back, 1), "retrying_message": retrying["message"],
               **run_figures("node-loss", qjs, jobs, s3, t0, len(pods))}
    record("node_loss", figures)

    assert real_node.name in retrying["message"] and first_pod[0] in retrying["message"], retrying["message"]
    assert (st["phase"], st.get("reason")) == ("Succeeded", ""), st
    winner = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Succeeded"]
    assert winner and winner[0] != first_pod[0], f"succeeded on {winner}, the lost pod was {first_pod}"
    assert (figures["duplicates"], figures["lost"], figures["wrong"], figures["backwards"]) == (0, 0, 0, 0), figures
    health = devenv_status()
    assert health.returncode == 0, f"the devenv is not healthy after the node came back:\n{health.stdout}{health.stderr}"
