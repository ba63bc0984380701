"""The chart's ValidatingAdmissionPolicy, with the e2e session's Helm release (policy on, as by
default): the operator's ServiceAccount token may create the Jobs the operator builds and nothing
else shaped otherwise; the API server's denial names what is wrong. The same release runs every
real QuantizationJob of this tier (test_quantizationjob_e2e.py), through the policy.

All creates are server-side dry runs: admission runs in full, nothing is stored."""
from __future__ import annotations

import copy
import json
import subprocess
import uuid
from typing import Any, Callable

import pytest
import yaml

from kubeslim_api.spec import parse_spec
from kubeslim_dev import demo
from kubeslim_dev.devenv import token_kubeconfig
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.jobs import Owner, build_job

from tests.e2e.conftest import BUCKET

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def policy_name(operator_release) -> str:
    return f"{operator_release['serviceAccount']}-jobs"


@pytest.fixture(scope="module")
def as_operator(operator_release, devenv, kubectl, tmp_path_factory) -> Callable[..., subprocess.CompletedProcess]:
    """kubectl with the release's ServiceAccount token and nothing else."""
    token = kubectl("create", "token", operator_release["serviceAccount"], "-n", operator_release["namespace"],
                    "--duration=10m").stdout.strip()
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    path.write_text(yaml.safe_dump(token_kubeconfig(devenv.kubeconfig, token)))
    path.chmod(0o600)

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([devenv.kubectl, "--kubeconfig", str(path), *args], input=input,
                              capture_output=True, text=True, timeout=60)
    return run


@pytest.fixture(scope="module")
def operator_job(e2e_namespace, node_images, s3_env) -> dict[str, Any]:
    """The Job the operator builds for the demo's QuantizationJob, with the release's job image."""
    spec = demo.example_manifest("shape", BUCKET, s3_env["AWS_ENDPOINT_URL"])["spec"]
    config = OperatorConfig(job_image=node_images.job, job_image_pull_policy="Never")
    return build_job(Owner("shape", e2e_namespace, str(uuid.uuid4()), 1), parse_spec(spec), config)


def create(run: Callable[..., subprocess.CompletedProcess], job: dict) -> subprocess.CompletedProcess:
    return run("create", "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(job))


def test_policy_is_installed_and_type_checks(policy_name, kubectl, wait_for):
    def checked():
        vap = json.loads(kubectl("get", "validatingadmissionpolicy", policy_name, "-o", "json").stdout)
        return vap if vap.get("status", {}).get("observedGeneration") == vap["metadata"]["generation"] else None
    vap = wait_for(checked, timeout=30, what=f"type checking of {policy_name}")
    assert vap["status"].get("typeChecking", {}).get("expressionWarnings") in (None, [])
    binding = json.loads(kubectl("get", "validatingadmissionpolicybinding", policy_name, "-o", "json").stdout)
    assert binding["spec"] == {"policyName": policy_name, "validationActions": ["Deny"]}


def test_the_operators_own_job_is_admitted(as_operator, operator_job):
    proc = create(as_operator, operator_job)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"job.batch/{operator_job['metadata']['name']}"


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def _mount(job: dict, volume: dict) -> None:
    _pod(job)["volumes"].append(volume)
    _pod(job)["containers"][0]["volumeMounts"].append({"name": volume["name"], "mountPath": "/mnt/x"})


VOLUMES_DENIED = "volumes may only be emptyDir, configMap or the web-identity token"
# The one token volume the policy admits, but for the API server's audience (none given): a real API credential.
API_SERVER_TOKEN = {"name": "web-identity", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
SECRET_ENV = {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}}}

# (what, change to the operator's Job, the policy's message)
SHAPES: list[tuple[str, Callable[[dict], None], str]] = [
    ("secret volume", lambda j: _mount(j, {"name": "creds", "secret": {"secretName": "s3-creds"}}),
     VOLUMES_DENIED),
    ("projected token", lambda j: _mount(j, {"name": "tok", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}]}}), VOLUMES_DENIED),
    ("API server token", lambda j: _mount(j, API_SERVER_TOKEN), VOLUMES_DENIED),
    ("hostPath", lambda j: _mount(j, {"name": "host", "hostPath": {"path": "/"}}), VOLUMES_DENIED),
    ("token mounted", lambda j: _pod(j).update(automountServiceAccountToken=True), "the pod gets no ServiceAccount token"),
    # The e2e release configures no job.imagePullSecrets: any pull Secret is a credential it did not grant.
    ("pull secret", lambda j: _pod(j).update(imagePullSecrets=[{"name": "s3-creds"}]),
     "imagePullSecrets are exactly the configured job.imagePullSecrets []"),
    ("other image", lambda j: _pod(j)["containers"][0].update(image="busybox:1"), "in the configured job image"),
    ("other command", lambda j: _pod(j)["initContainers"][0].update(command=["sh", "-c", "env"]), "every container runs kubeslim-job"),
    ("hostNetwork", lambda j: _pod(j).update(hostNetwork=True), "no hostNetwork"),
    ("privileged", lambda j: _pod(j)["containers"][0]["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True), "no privileged container"),
    ("envFrom secret", lambda j: _pod(j)["containers"][0].update(envFrom=[{"secretRef": {"name": "s3-creds"}}]),
     "Secrets only as the S3 credentials"),
    ("secret env", lambda j: _pod(j)["containers"][0]["env"].append(SECRET_ENV), "Secrets only as the S3 credentials"),
    ("no owner", lambda j: j["metadata"].pop("ownerReferences"), "exactly one ownerReference"),
    ("foreign labels", lambda j: j["metadata"]["labels"].update({"app.kubernetes.io/managed-by": "someone"}),
     "carries its labels"),
]


@pytest.mark.parametrize("what,change,message", SHAPES, ids=[s[0] for s in SHAPES])
def test_operator_token_cannot_create_other_jobs(as_operator, operator_job, policy_name, what, change, message):
    job = copy.deepcopy(operator_job)
    change(job)
    proc = create(as_operator, job)
    assert proc.returncode != 0, f"{what}: admitted"
    denial = f"ValidatingAdmissionPolicy '{policy_name}' with binding '{policy_name}' denied request: "
    assert denial in proc.stderr and message in proc.stderr.split(denial, 1)[1], proc.stderr
    print(f"{what}: {proc.stderr.strip()}")


def test_other_users_are_not_matched(kubectl, operator_job):
    """The policy binds the operator's ServiceAccount only: the admin's Job with a Secret volume passes."""
    job = copy.deepcopy(operator_job)
    _mount(job, {"name": "creds", "secret": {"secretName": "s3-creds"}})
    proc = kubectl("create", "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(job), check=False)
    assert proc.returncode == 0, proc.stderr
