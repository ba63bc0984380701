"""The chart's shipping parts against the devenv's real API server: the admission policy rendered
with job.imagePullSecrets admits the operator's Jobs with exactly those Secrets and denies any other
list (seen as the operator's ServiceAccount, through kubectl and a real token), and the
PodDisruptionBudget and NetworkPolicies pass the API server's validation. Rendering alone is
tested in test_chart_render.py. (The devenv's bridge CNI enforces no NetworkPolicy: what the
policies block is not observable here.)"""
from __future__ import annotations

import copy
import subprocess
import uuid
from typing import Callable

import pytest
import yaml

from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.jobs import Owner, build_job

from tests.cluster.chart_admission import JOB_IMAGE, JOB_IMAGE_SETS, SPEC, applied, assert_admitted, denied, dry_run_as
from tests.cluster.test_chart_render import helm, render  # noqa: F401  (helm: fixture)

PULL_SECRETS = ("regcred", "mirror")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def policy_with_pull_secrets(namespace, kubectl, helm):
    """The chart's ValidatingAdmissionPolicy for a release in `namespace` whose operator may use
    job.imagePullSecrets regcred and mirror (cluster-scoped: removed after the test)."""
    release = f"kubeslim-ps-{uuid.uuid4().hex[:6]}"
    docs = render(helm, *JOB_IMAGE_SETS, *(f"job.imagePullSecrets[{i}].name={n}" for i, n in enumerate(PULL_SECRETS)),
                  release=release, namespace=namespace, show_only=("templates/admission-policy.yaml",))
    with applied(kubectl, docs):
        yield release


@pytest.fixture
def as_release_operator(policy_with_pull_secrets, namespace, kubectl, devenv, tmp_path) -> Callable[[dict], subprocess.CompletedProcess]:
    """Server-side dry-run `create` of a Job with the token of the release's operator ServiceAccount
    (which may create Jobs in `namespace` and nothing else)."""
    return dry_run_as(policy_with_pull_secrets, namespace, kubectl, devenv, tmp_path)


def operator_job(namespace: str) -> dict:
    config = OperatorConfig(job_image=JOB_IMAGE, job_image_pull_secrets=PULL_SECRETS)
    return build_job(Owner("shape", namespace, str(uuid.uuid4()), 1), SPEC, config)


def with_pull_secrets(job: dict, names: list[str] | None) -> dict:
    job = copy.deepcopy(job)
    pod = job["spec"]["template"]["spec"]
    pod.pop("imagePullSecrets", None)
    if names is not None:
        pod["imagePullSecrets"] = [{"name": n} for n in names]
    return job


@pytest.mark.parametrize("names", [
    None,                               # none at all
    ["regcred"],                        # fewer
    ["regcred", "mirror", "s3-creds"],  # one more: any Secret of the namespace
    ["mirror", "regcred"],              # another order
    ["regcred", "other"],               # another name
], ids=["none", "fewer", "more", "reordered", "other"])
def test_policy_denies_any_other_pull_secrets(as_release_operator, namespace, wait_for, names):
    proc = denied(as_release_operator, with_pull_secrets(operator_job(namespace), names), wait_for)
    assert 'imagePullSecrets are exactly the configured job.imagePullSecrets ["regcred","mirror"]' in proc.stderr, proc.stderr


def test_policy_admits_the_operators_job_with_the_configured_pull_secrets(as_release_operator, namespace, wait_for):
    job = operator_job(namespace)
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert_admitted(as_release_operator, job, with_pull_secrets(job, ["other"]), wait_for)


def test_disruption_budget_and_network_policies_pass_the_api_server(namespace, kubectl, helm):
    docs = render(helm, "networkPolicy.operator.enabled=true", "networkPolicy.operator.apiServer.cidrs={10.77.0.1/32}",
                  "networkPolicy.job.enabled=true", f"networkPolicy.job.namespaces={{{namespace}}}",
                  "networkPolicy.job.s3.cidrs={10.77.0.1/32}", "networkPolicy.job.s3.ports={16900}",
                  namespace=namespace, show_only=("templates/poddisruptionbudget.yaml", "templates/networkpolicy.yaml"))
    assert sorted(d["kind"] for d in docs) == ["NetworkPolicy", "NetworkPolicy", "PodDisruptionBudget"]
    proc = kubectl("create", "--dry-run=server", "-o", "name", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
    assert sorted(proc.stdout.split()) == ["networkpolicy.networking.k8s.io/kubeslim-jobs", "networkpolicy.networking.k8s.io/kubeslim-operator",
                                           "poddisruptionbudget.policy/kubeslim"]
