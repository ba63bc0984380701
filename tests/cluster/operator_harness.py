"""Fixtures and helpers for the operator's cluster tests (tests/cluster/test_operator_*.py).

The operator runs as a separate process (as in production), scoped to the test's namespace
(`-n`), authenticated with a ServiceAccount token bound to exactly operator/rbac/clusterrole.yaml:
every cluster test is therefore also an RBAC test. Pods land on the devenv's kwok GPU nodes, whose
Stages finish them with the exit code / termination message / reason given in pod annotations
(devenv/kwok/stages/pod.yaml), which spec.podMetadata sets.
"""
from __future__ import annotations

import base64
import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from kubeslim_api.contract import (Artifacts, Candidate, Gate, Int8Metrics, ModelMetrics, Results, StageResult,
                                   encode)
from kubeslim_dev.devenv import token_kubeconfig

REPO = Path(__file__).resolve().parents[2]
# KUBESLIM_TEST_CRD: another CRD file to apply (e.g. while iterating on the schema).
CRD = Path(os.environ.get("KUBESLIM_TEST_CRD") or REPO / "crds" / "kubeslim.io_quantizationjobs.yaml")
CLUSTERROLE = REPO / "operator" / "rbac" / "clusterrole.yaml"
OPERATOR_SA = "kubeslim-operator"
JOB_IMAGE = "kubeslim-job:test"

KWOK_SCHEDULING = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
    ],
}

BASE_SPEC: dict[str, Any] = {
    "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
    "data": {"calibration": {"uri": "s3://datasets/train/", "listFile": "train.txt"},
             "evaluation": {"uri": "s3://datasets/val/", "listFile": "val.txt"}},
    "output": {"uri": "s3://models/out/"},
    "resources": {"gpu": 1, "cpu": "2", "memory": "4Gi"},
    "scheduling": KWOK_SCHEDULING,
    "runPolicy": {"backoffLimit": 0, "activeDeadlineSeconds": 600},
}

RESULTS = Results(backend="gpu-tensorrt-int8",
                  fp32=ModelMetrics(top1=0.7532, top5=0.9231, latency_ms=4.1, throughput=1540.0, size_bytes=21990000),
                  int8=Int8Metrics(algo="hist", top1=0.7488, top5=0.921, latency_ms=1.9, throughput=3300.0, size_bytes=5900000),
                  accuracy_drop=0.0044, speedup=2.15,
                  candidates=[Candidate(algo="hist", top1=0.7488, accuracy_drop=0.0044, latency_ms=1.9,
                                        size_bytes=5900000, calibration_seconds=41.0)])
ARTIFACTS = Artifacts(model="s3://models/out/model.pdmodel", params="s3://models/out/model.pdiparams",
                      report="s3://models/out/report.html", report_json="s3://models/out/report.json")


def verify_ok_message() -> str:
    return encode(StageResult(stage="verify", ok=True, results=RESULTS, artifacts=ARTIFACTS,
                              gate=Gate(metric="top1", max_accuracy_drop=0.01, passed=True)))


def gate_failed_message() -> str:
    return encode(StageResult(stage="verify", ok=False, reason="AccuracyGateFailed",
                              message="int8 lost 0.0044 of top1, more than maxAccuracyDrop 0.001; try another algo",
                              results=RESULTS, artifacts=ARTIFACTS,
                              gate=Gate(metric="top1", max_accuracy_drop=0.001, passed=False)))


def bad_input_message(stage: str = "export") -> str:
    return encode(StageResult(stage=stage, ok=False, reason="NoSuchKey",
                              message="s3://models/w.pdparams does not exist; upload it or fix spec.model.builtin.weights"))


def fake(exit_code: int | None = None, message: str | None = None, reason: str | None = None,
         container: str | None = None, duration: str | None = None) -> dict[str, str]:
    """Pod annotations for the devenv's kwok Stages."""
    ann = {}
    for key, value in (("exit-code", exit_code), ("termination-message", message), ("reason", reason),
                       ("container", container), ("duration", duration)):
        if value is not None:
            ann[f"kubeslim.io/fake-{key}"] = str(value)
    return ann


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def qj_manifest(name: str, namespace: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict:
    body = deep_merge(BASE_SPEC, spec)
    if annotations:
        body = deep_merge(body, {"podMetadata": {"annotations": annotations}})
    return {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


# Below the kernel's ephemeral range (32768-60999 here): the operator keeps its ports across
# restarts, and a port the kernel hands out for outgoing connections was once taken by one between
# a SIGKILL and the next start ("address already in use" for the health endpoint).
_PORTS = range(20000, 32000)


def _free_port() -> int:
    for port in random.sample(_PORTS, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


class OperatorProcess:
    """kubeslim-operator as a child process, killable with SIGKILL and restartable."""

    def __init__(self, kubeconfig: Path, namespace: str, log_dir: Path, env: dict[str, str] | None = None):
        self.kubeconfig, self.namespace, self.log_dir = kubeconfig, namespace, log_dir
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.metrics_port = 0
        self.liveness_port = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> "OperatorProcess":
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        self.metrics_port, self.liveness_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESLIM_")}
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "KUBESLIM_JOB_IMAGE": JOB_IMAGE,
            "KUBESLIM_STATUS_COALESCE_SECONDS": "0.3",
            "KUBESLIM_RECHECK_SECONDS": "1",
            "KUBESLIM_LOG_LEVEL": "INFO",
            **self.extra_env,
        })
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeslim_operator", "-n", self.namespace,
             "--metrics-port", str(self.metrics_port), "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.wait_alive()
        return self

    def wait_alive(self, timeout: float = 30) -> None:
        import urllib.request
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not alive after {timeout}s:\n{self.log()}")

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye — as an OOM kill or a node loss."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self, "_log"):
            self._log.close()

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log")))


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def crd(kubectl) -> str:
    """The project's CRD, applied once per session (idempotent)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/quantizationjobs.kubeslim.io", "--timeout=60s")
    return "quantizationjobs.kubeslim.io"


@pytest.fixture(scope="session")
def operator_identity(kubectl, kubeconfig, tmp_path_factory) -> dict[str, str]:
    """A ServiceAccount bound to exactly operator/rbac/clusterrole.yaml, and a kubeconfig holding
    its token (the operator's only credentials in these tests)."""
    # Names of this session: the ClusterRole and its binding are cluster-scoped, and another
    # session on the same devenv (or one that ended without cleaning up) must not share them.
    name = f"kubeslim-operator-test-{uuid.uuid4().hex[:6]}"
    role = yaml.safe_load(CLUSTERROLE.read_text())
    role["metadata"] = {"name": name, "labels": role["metadata"].get("labels", {})}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": name}]}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA, "namespace": name}}
    docs = [ns, sa, role, binding]
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    try:
        token = kubectl("create", "token", OPERATOR_SA, "-n", name, "--duration=3h").stdout.strip()
        cfg = token_kubeconfig(Path(kubeconfig), token)
        path = tmp_path_factory.mktemp("operator") / "kubeconfig"
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        yield {"kubeconfig": str(path), "user": f"system:serviceaccount:{name}:{OPERATOR_SA}"}
    finally:
        kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found", check=False)
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def operator(crd, operator_identity, namespace, tmp_path) -> OperatorProcess:
    op = OperatorProcess(Path(operator_identity["kubeconfig"]), namespace, tmp_path).start()
    yield op
    op.stop()
    if os.environ.get("KUBESLIM_TEST_OPERATOR_LOG"):
        print(op.log())


@pytest.fixture
def operator_on_real_node(crd, operator_identity, namespace, tmp_path, node_images) -> OperatorProcess:
    """The operator (a child process, the ClusterRole's token) whose Jobs run the job-cpu image
    this checkout built, on the real node; import it as `operator` where real pods must run."""
    op = OperatorProcess(Path(operator_identity["kubeconfig"]), namespace, tmp_path,
                         env={"KUBESLIM_JOB_IMAGE": node_images.job, "KUBESLIM_JOB_IMAGE_PULL_POLICY": "Never"}).start()
    yield op
    op.stop()


class QJ:
    """Reads of QuantizationJobs and their children in one namespace, via the admin kubectl."""

    def __init__(self, kubectl: Callable, namespace: str, wait_for: Callable):
        self.kubectl, self.ns, self.wait_for = kubectl, namespace, wait_for

    def apply(self, manifest: dict) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def get(self, name: str) -> dict:
        return json.loads(self.kubectl("get", "qj", name, "-n", self.ns, "-o", "json").stdout)

    def status(self, name: str) -> dict:
        return self.get(name).get("status") or {}

    def conditions(self, name: str) -> dict[str, dict]:
        return {c["type"]: c for c in self.status(name).get("conditions") or []}

    def wait_phase(self, name: str, phase: str, reason: str | None = None, timeout: float = 60) -> dict:
        def check():
            st = self.status(name)
            if st.get("phase") == phase and (reason is None or st.get("reason") == reason):
                return st
            return None
        try:
            return self.wait_for(check, timeout=timeout, what=f"{name} {phase} {reason or ''}")
        except Exception as exc:
            raise AssertionError(f"{exc}; last status: {json.dumps(self.status(name), indent=1)}") from None

    def wait(self, name: str, predicate: Callable[[dict], Any], what: str, timeout: float = 60) -> Any:
        try:
            return self.wait_for(lambda: predicate(self.status(name)), timeout=timeout, what=what)
        except Exception as exc:
            raise AssertionError(f"{exc}; last status: {json.dumps(self.status(name), indent=1)}") from None

    def jobs(self) -> list[dict]:
        return json.loads(self.kubectl("get", "jobs", "-n", self.ns, "-o", "json").stdout)["items"]

    def pods(self, job: str | None = None) -> list[dict]:
        args = ["get", "pods", "-n", self.ns, "-o", "json"]
        if job:
            args += ["-l", f"batch.kubernetes.io/job-name={job}"]
        return json.loads(self.kubectl(*args).stdout)["items"]

    def events(self, name: str) -> list[dict]:
        items = json.loads(self.kubectl("get", "events", "-n", self.ns, "-o", "json").stdout)["items"]
        return sorted((e for e in items if e["involvedObject"].get("kind") == "QuantizationJob"
                       and e["involvedObject"].get("name") == name), key=lambda e: e.get("firstTimestamp") or "")

    def annotate_pod(self, pod: str, annotations: dict[str, str]) -> None:
        self.kubectl("annotate", "pod", pod, "-n", self.ns, "--overwrite", *(f"{k}={v}" for k, v in annotations.items()))


@pytest.fixture
def qj(kubectl, namespace, wait_for) -> QJ:
    return QJ(kubectl, namespace, wait_for)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
