"""The Helm chart against the devenv: lint, render + server-side dry-run, install/upgrade/uninstall,
and the two things it must keep identical to the rest of the repo (CRD, RBAC rules)."""
from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubeslim"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def helm(devenv):
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([devenv.helm, "--kubeconfig", str(devenv.kubeconfig), *args], capture_output=True, text=True, timeout=240)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc
    return run


def render(helm, *args: str) -> list[dict]:
    out = helm("template", "kubeslim", str(CHART), "--namespace", "kubeslim-system", "--kube-version", "1.34.4", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_crd_is_the_crd(helm):
    assert (CHART / "crds" / "kubeslim.io_quantizationjobs.yaml").read_bytes() == (REPO / "crds" / "kubeslim.io_quantizationjobs.yaml").read_bytes(), \
        "helm/kubeslim/crds/ must be a copy of crds/: cp crds/kubeslim.io_quantizationjobs.yaml helm/kubeslim/crds/"


def test_lint_is_clean(helm):
    proc = helm("lint", "--strict", str(CHART), "--kube-version", "1.34.4")
    assert "0 chart(s) failed" in proc.stdout


def test_rendered_rbac_is_the_operators_tested_clusterrole(helm):
    tested = yaml.safe_load((REPO / "operator" / "rbac" / "clusterrole.yaml").read_text())["rules"]
    (role,) = [d for d in render(helm) if d["kind"] == "ClusterRole"]
    assert role["rules"] == tested
    assert not any("secrets" in r["resources"] for r in role["rules"])


def test_watch_namespaces_renders_roles_not_a_clusterrole(helm):
    docs = render(helm, "--set", "operator.watchNamespaces={team-a,team-b}")
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in docs if "Role" in d["kind"]]
    assert ("ClusterRole", None) not in kinds
    assert sorted(kinds) == [("Role", "team-a"), ("Role", "team-b"), ("RoleBinding", "team-a"), ("RoleBinding", "team-b")]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBESLIM_WATCH_NAMESPACES"] == "team-a,team-b"


def test_operator_pod_is_restricted(helm):
    (deploy,) = [d for d in render(helm) if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True and isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("bad", ["operator.metrics.port=0", "operator.watchNamespaces=oops", "job.image.pullPolicy=Sometimes", "surprise=1"])
def test_values_schema_rejects_bad_values(helm, bad):
    proc = helm("template", "kubeslim", str(CHART), "--kube-version", "1.34.4", "--set", bad, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr


def test_render_is_accepted_by_the_apiserver(helm, kubectl):
    out = helm("template", "kubeslim", str(CHART), "--namespace", "default", "--kube-version", "1.34.4", "--include-crds",
               "--set", "serviceMonitor.enabled=false", "--set", "argocd.healthCheckConfigMap=true").stdout
    proc = kubectl("apply", "--dry-run=server", "--server-side", "--field-manager=helm-test", "-f", "-", input=out)
    assert "deployment.apps/kubeslim serverside-applied (server dry run)" in proc.stdout


def test_install_upgrade_uninstall(helm, kubectl, namespace):
    release = f"ks-{uuid.uuid4().hex[:6]}"
    # Scoped to its own namespace so this release never handles other tests' QuantizationJobs.
    helm("install", release, str(CHART), "-n", namespace, "--set", f"operator.watchNamespaces={{{namespace}}}")
    deploy = json.loads(kubectl("-n", namespace, "get", "deploy", f"{release}-kubeslim", "-o", "json").stdout)
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == f"{release}-kubeslim"
    can = kubectl("auth", "can-i", "patch", "quantizationjobs.kubeslim.io", "--subresource=status", "-n", namespace,
                  f"--as=system:serviceaccount:{namespace}:{release}-kubeslim", check=False)
    assert can.stdout.strip() == "yes"
    cannot = kubectl("auth", "can-i", "get", "secrets", "-n", namespace, f"--as=system:serviceaccount:{namespace}:{release}-kubeslim", check=False)
    assert cannot.stdout.strip() == "no"

    helm("upgrade", release, str(CHART), "-n", namespace, "--reuse-values", "--set", "operator.logLevel=debug")
    deploy = json.loads(kubectl("-n", namespace, "get", "deploy", f"{release}-kubeslim", "-o", "json").stdout)
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBESLIM_LOG_LEVEL"] == "debug" and deploy["metadata"]["generation"] == 2

    helm("uninstall", release, "-n", namespace, "--wait")
    left = kubectl("-n", namespace, "get", "deploy,sa,role,rolebinding,svc", "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout
    assert left.strip() == ""
    # Helm never deletes CRDs (that would delete every QuantizationJob): it must still be there.
    kubectl("get", "crd", "quantizationjobs.kubeslim.io")
