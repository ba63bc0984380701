"""The chart's shipping parts, rendered by the pinned helm (no cluster needed; ci.yaml runs this file
on pull requests): image defaults, job.imagePullSecrets into the operator's env and the admission
policy, the operator's PodDisruptionBudget, the optional NetworkPolicies, and the render-time errors
that name the value to set. tests/cluster/test_chart_shipping.py sends the same objects to a real
API server."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster.built_tools import built_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubeslim"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def helm() -> str:
    return built_tool("helm")


def template(helm: str, *sets: str, release: str = "kubeslim", namespace: str = "kubeslim-system",
             show_only: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`helm template` of this checkout's chart with `--set` for each of `sets` (and `--show-only`
    for each template in `show_only`)."""
    args = [a for s in sets for a in ("--set", s)] + [a for t in show_only for a in ("--show-only", t)]
    return subprocess.run([helm, "template", release, str(CHART), "--namespace", namespace,
                           "--kube-version", "1.34.4", *args], capture_output=True, text=True, timeout=120)


def render(helm: str, *sets: str, **where) -> list[dict]:
    """template's documents; `where`: its release, namespace and show_only."""
    proc = template(helm, *sets, **where)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def only(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def operator_env(docs: list[dict]) -> dict[str, str]:
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def pull_secret_rule(docs: list[dict]) -> dict:
    (rule,) = [v for v in only(docs, "ValidatingAdmissionPolicy")["spec"]["validations"] if "imagePullSecrets" in v["expression"]]
    return rule


def test_default_images_are_the_released_names_at_the_app_version(helm):
    docs = render(helm)
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"ghcr.io/kubeslim/kubeslim-operator:{APP_VERSION}"
    assert operator_env(docs)["KUBESLIM_JOB_IMAGE"] == f"ghcr.io/kubeslim/kubeslim-job:{APP_VERSION}"


DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_a_digest_pins_the_image_and_the_tag_no_longer_counts(helm):
    docs = render(helm, f"operator.image.digest={DIGEST}", "operator.image.tag=9.9.9", f"job.image.digest={DIGEST}")
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"ghcr.io/kubeslim/kubeslim-operator@{DIGEST}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    job_image = f"ghcr.io/kubeslim/kubeslim-job@{DIGEST}"
    assert operator_env(docs)["KUBESLIM_JOB_IMAGE"] == job_image
    # The admission policy admits the pinned reference, the one the operator puts in every Job.
    (rule,) = [v for v in only(docs, "ValidatingAdmissionPolicy")["spec"]["validations"] if "c.image ==" in v["expression"]]
    assert f'c.image == "{job_image}"' in rule["expression"]


def test_a_digest_that_is_not_sha256_hex_is_refused_naming_the_value(helm):
    proc = template(helm, "operator.image.digest=sha256:abc")
    assert proc.returncode != 0
    assert "/operator/image/digest" in proc.stderr and "sha256:abc" in proc.stderr


def test_no_job_pull_secrets_by_default_and_the_policy_admits_none(helm):
    docs = render(helm)
    assert operator_env(docs)["KUBESLIM_JOB_IMAGE_PULL_SECRETS"] == ""
    assert pull_secret_rule(docs)["expression"].endswith("== []")


def test_job_pull_secrets_reach_the_operator_and_the_policy_in_order(helm):
    docs = render(helm, "job.imagePullSecrets[0].name=regcred", "job.imagePullSecrets[1].name=mirror")
    assert operator_env(docs)["KUBESLIM_JOB_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    rule = pull_secret_rule(docs)
    assert rule["expression"].endswith('== ["regcred","mirror"]')
    assert "job.imagePullSecrets" in rule["message"]


def test_operator_pod_disruption_budget_keeps_one_replica(helm):
    docs = render(helm)
    pdb = only(docs, "PodDisruptionBudget")
    deploy = only(docs, "Deployment")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert pdb["metadata"]["namespace"] == "kubeslim-system"


@pytest.mark.parametrize("sets", [
    ("operator.replicas=1", "operator.leaderElection.enabled=false"),   # one replica: a PDB would block drains
    ("operator.podDisruptionBudget.enabled=false",),
])
def test_no_pod_disruption_budget(helm, sets):
    assert not [d for d in render(helm, *sets) if d["kind"] == "PodDisruptionBudget"]


def test_network_policies_are_off_by_default(helm):
    assert not [d for d in render(helm) if d["kind"] == "NetworkPolicy"]


DNS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_operator_network_policy_allows_the_api_server_and_dns_only(helm):
    docs = render(helm, "networkPolicy.operator.enabled=true", "networkPolicy.operator.apiServer.cidrs={10.0.0.10/32,10.0.0.11/32}")
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["metadata"]["namespace"] == "kubeslim-system"
    assert policy["spec"]["podSelector"]["matchLabels"] == only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}],
         "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]},
        {"to": [DNS_PEER], "ports": DNS_PORTS},
    ]


def test_job_network_policy_allows_s3_and_dns_in_each_watched_namespace(helm):
    docs = render(helm, "networkPolicy.job.enabled=true", "operator.watchNamespaces={ml,vision}",
                  "networkPolicy.job.s3.cidrs={192.0.2.7/32}", "networkPolicy.job.s3.ports={9000}")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["ml", "vision"]
    for policy in policies:
        # The labels the operator puts on every Job pod (operator/kubeslim_operator/jobs.py child_labels).
        assert policy["spec"]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/managed-by": "kubeslim-operator", "app.kubernetes.io/component": "quantization"}
        assert policy["spec"]["egress"] == [
            {"to": [{"ipBlock": {"cidr": "192.0.2.7/32"}}], "ports": [{"protocol": "TCP", "port": 9000}]},
            {"to": [DNS_PEER], "ports": DNS_PORTS},
        ]


def test_job_network_policy_namespaces_override_watch_namespaces(helm):
    docs = render(helm, "networkPolicy.job.enabled=true", "networkPolicy.job.namespaces={team-a}",
                  "networkPolicy.job.s3.cidrs={192.0.2.7/32}")
    assert [d["metadata"]["namespace"] for d in docs if d["kind"] == "NetworkPolicy"] == ["team-a"]


@pytest.mark.parametrize("sets,message", [
    (("networkPolicy.operator.enabled=true",), "networkPolicy.operator.apiServer.cidrs must list"),
    (("networkPolicy.job.enabled=true", "networkPolicy.job.s3.cidrs={192.0.2.7/32}"), "set networkPolicy.job.namespaces (or operator.watchNamespaces)"),
    (("networkPolicy.job.enabled=true", "networkPolicy.job.namespaces={ml}"), "networkPolicy.job.s3.cidrs must list"),
    (("networkPolicy.job.s3.cidrs={10.0.0.1}",), "/networkPolicy/job/s3/cidrs/0"),     # no prefix length: the schema refuses
    (("operator.podDisruptionBudget.minAvailable=2",), "minAvailable must be less than operator.replicas"),
    (("job.imagePullSecrets[0].other=x",), "/job/imagePullSecrets/0': missing property 'name'"),
])
def test_incomplete_values_fail_naming_the_value(helm, sets, message):
    proc = template(helm, *sets)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
