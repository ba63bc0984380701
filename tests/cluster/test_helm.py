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
        "helm/kubeslim/crds/ must be the CRD crds/ holds: run `make generate`"


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
    # Plus the leader-election Role in the release namespace (its Lease only).
    assert sorted(kinds) == [("Role", "kubeslim-system"), ("Role", "team-a"), ("Role", "team-b"),
                             ("RoleBinding", "kubeslim-system"), ("RoleBinding", "team-a"), ("RoleBinding", "team-b")]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBESLIM_WATCH_NAMESPACES"] == "team-a,team-b"


def test_operator_pod_is_restricted(helm):
    (deploy,) = [d for d in render(helm) if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_two_replicas_elect_a_leader_by_default(helm):
    docs = render(helm)
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    # Replicas overlap in a rollout (only the Lease holder reconciles); a new one is Ready as a standby first.
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert env["KUBESLIM_LEADER_ELECTION"] == "true" and env["KUBESLIM_LEADER_ELECTION_NAME"] == "kubeslim"
    assert env["KUBESLIM_LEADER_ELECTION_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert (env["KUBESLIM_LEASE_DURATION_SECONDS"], env["KUBESLIM_RENEW_DEADLINE_SECONDS"], env["KUBESLIM_RETRY_PERIOD_SECONDS"]) == ("15", "10", "2")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "kubeslim-system"
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                             {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kubeslim"], "verbs": ["get", "update"]}]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_one_replica_without_leader_election_is_recreated(helm):
    docs = render(helm, "--set", "operator.replicas=1", "--set", "operator.leaderElection.enabled=false")
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(e["name"].startswith("KUBESLIM_LEADER") for e in c["env"]) and "readinessProbe" not in c
    assert not [d for d in docs if d["kind"] == "Role"]


@pytest.mark.parametrize("values,message", [
    (["operator.leaderElection.enabled=false"], "operator.replicas > 1 needs operator.leaderElection.enabled=true"),
    (["operator.leaderElection.renewDeadlineSeconds=15"], "renewDeadlineSeconds must be less than leaseDurationSeconds"),
])
def test_unsafe_leader_election_values_are_refused(helm, values, message):
    sets = [arg for v in values for arg in ("--set", v)]
    proc = helm("template", "kubeslim", str(CHART), "--kube-version", "1.34.4", *sets, check=False)
    assert proc.returncode != 0 and message in proc.stderr


def test_admission_policy_is_on_by_default_and_binds_the_operator_only(helm):
    docs = render(helm, "--set", "job.image.repository=reg.example/job", "--set-string", "job.image.tag=7")
    (vap,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"] == {"policyName": vap["metadata"]["name"], "validationActions": ["Deny"]}
    assert vap["spec"]["failurePolicy"] == "Fail"
    assert [m["expression"] for m in vap["spec"]["matchConditions"]] == \
        ['request.userInfo.username == "system:serviceaccount:kubeslim-system:kubeslim"']
    assert any('c.image == "reg.example/job:7"' in v["expression"] for v in vap["spec"]["validations"])
    off = render(helm, "--set", "admissionPolicy.enabled=false")
    assert not [d for d in off if d["kind"].startswith("ValidatingAdmissionPolicy")]


@pytest.mark.parametrize("bad", ["operator.metrics.port=0", "operator.watchNamespaces=oops", "job.image.pullPolicy=Sometimes", "surprise=1",
                                 "operator.replicas=-1", "admissionPolicy.enabled=maybe", "operator.leaderElection.leaseDurationSeconds=1"])
def test_values_schema_rejects_bad_values(helm, bad):
    proc = helm("template", "kubeslim", str(CHART), "--kube-version", "1.34.4", "--set", bad, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr


def test_render_is_accepted_by_the_apiserver(helm, kubectl, namespace):
    # A release name of its own: the chart's cluster-scoped objects (admission policy and binding,
    # ClusterRole and binding) are named after the release, and a live release of the same name
    # (`make demo` installs "kubeslim") owns different values for them, which server-side apply
    # reports as field-manager conflicts. Under this name they collide with nothing.
    release = f"dry-{uuid.uuid4().hex[:6]}"
    docs = [d for d in yaml.safe_load_all(helm(
        "template", release, str(CHART), "--namespace", namespace, "--kube-version", "1.34.4", "--include-crds",
        "--set", "serviceMonitor.enabled=false", "--set", "argocd.healthCheckConfigMap=true").stdout) if d]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    release_docs = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == ["quantizationjobs.kubeslim.io"]
    assert {d["kind"] for d in release_docs} >= {"Deployment", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                                                 "ValidatingAdmissionPolicyBinding", "ConfigMap"}
    stream = "\n---\n".join(yaml.safe_dump(d) for d in release_docs)
    proc = kubectl("apply", "--dry-run=server", "--server-side", "--field-manager=helm-test", "-f", "-", input=stream)
    assert f"deployment.apps/{release}-kubeslim serverside-applied (server dry run)" in proc.stdout
    assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{release}-kubeslim-jobs serverside-applied (server dry run)" in proc.stdout
    # The CRD has one name in every release and whoever installed it first owns its fields. What
    # this checks is that the API server accepts the chart's CRD, not who owns it: a dry run that
    # takes the fields over is the question asked (it changes nothing).
    proc = kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts", "--field-manager=helm-test", "-f", "-",
                   input=yaml.safe_dump(crds[0]))
    assert "customresourcedefinition.apiextensions.k8s.io/quantizationjobs.kubeslim.io serverside-applied (server dry run)" in proc.stdout


def test_install_upgrade_uninstall(helm, kubectl, namespace):
    release = f"ks-{uuid.uuid4().hex[:6]}"
    # Scoped to its own namespace so this release never handles other tests' QuantizationJobs.
    helm("install", release, str(CHART), "-n", namespace, "--set", f"operator.watchNamespaces={{{namespace}}}")
    try:
        check_install_upgrade_uninstall(helm, kubectl, namespace, release)
    finally:
        # Also when a check failed: the release's admission policy is cluster-scoped and would
        # outlive the namespace (uninstalling twice only reports "not found").
        helm("uninstall", release, "-n", namespace, "--wait", check=False)


def check_install_upgrade_uninstall(helm, kubectl, namespace: str, release: str) -> None:
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
