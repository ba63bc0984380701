"""The chart's job-pod plumbing (issue 19 item 5): job.serviceAccountName, job.proxy,
job.workSizeLimit and operator.logFormat rendered into the operator's env (which the operator
parses into the Jobs it builds) and into the admission policy; the schema refuses bad values naming
them; and against the devenv's real API server, with the token of the release's operator
ServiceAccount, the policy admits the operator's own Job and denies any other ServiceAccount or
proxy setting. The render tests need no cluster."""
from __future__ import annotations

import copy
import json
import subprocess
import uuid
from typing import Any, Callable

import pytest

from kubeslim_api.spec import parse_spec
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.jobs import Owner, build_job
from tests.cluster.chart_admission import JOB_IMAGE_SETS, SPEC, applied, assert_admitted, denied, dry_run_as
from tests.cluster.test_chart_render import helm, only, operator_env, render, template  # noqa: F401  (helm: fixture)

pytestmark = pytest.mark.timeout(300)

PROXY = "http://proxy.corp:3128"
NO_PROXY = ".svc,10.0.0.0/8"
PLUMBING = (*JOB_IMAGE_SETS, "job.serviceAccountName=s3-reader", f"job.proxy.httpsProxy={PROXY}",
            # --set splits on commas: the list is escaped.
            "job.proxy.noProxy=" + NO_PROXY.replace(",", "\\,"),
            "job.workSizeLimit=20Gi", "operator.logFormat=json")


def policy_rule(docs: list[dict], needle: str) -> dict:
    (rule,) = [v for v in only(docs, "ValidatingAdmissionPolicy")["spec"]["validations"] if needle in v["message"]]
    return rule


def policy_variable(docs: list[dict], name: str) -> str:
    (var,) = [v for v in only(docs, "ValidatingAdmissionPolicy")["spec"]["variables"] if v["name"] == name]
    return var["expression"]


def operator_job(docs: list[dict], namespace: str, spec=SPEC, name: str = "plumbed") -> dict:
    """The Job the operator the chart configures builds for `spec` (its config read from the rendered env)."""
    # The chart's one valueFrom is the downward API's metadata.namespace (the Lease's namespace).
    config = OperatorConfig.from_env({k: "kubeslim-system" if v is None else v for k, v in operator_env(docs).items()})
    return build_job(Owner(name, namespace, str(uuid.uuid4()), 1), spec, config)


# -- rendered, no cluster -------------------------------------------------------------------------

def test_defaults_add_no_service_account_no_proxy_no_limit_and_text_logs(helm):
    docs = render(helm)
    env = operator_env(docs)
    assert (env["KUBESLIM_JOB_SERVICE_ACCOUNT_NAME"], env["KUBESLIM_JOB_WORK_SIZE_LIMIT"], env["KUBESLIM_LOG_FORMAT"]) == ("", "", "text")
    assert not [name for name in env if name.endswith("_PROXY")]
    assert """== "default" """.strip() in policy_rule(docs, "job.serviceAccountName")["expression"]
    assert policy_variable(docs, "proxyEnv") == "{}"
    pod = operator_job(docs, "ml")["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod and pod["volumes"][0] == {"name": "work", "emptyDir": {}}


def test_plumbing_values_reach_the_operator_its_jobs_and_the_policy(helm):
    docs = render(helm, *PLUMBING)
    env = operator_env(docs)
    assert env["KUBESLIM_JOB_SERVICE_ACCOUNT_NAME"] == "s3-reader" and env["KUBESLIM_JOB_WORK_SIZE_LIMIT"] == "20Gi"
    assert env["KUBESLIM_JOB_HTTPS_PROXY"] == PROXY and env["KUBESLIM_JOB_NO_PROXY"] == NO_PROXY
    assert "KUBESLIM_JOB_HTTP_PROXY" not in env and env["KUBESLIM_LOG_FORMAT"] == "json"
    assert json.loads(policy_variable(docs, "proxyEnv")) == {"HTTPS_PROXY": PROXY, "NO_PROXY": NO_PROXY}
    assert '== "s3-reader"' in policy_rule(docs, "job.serviceAccountName")["expression"]
    pod = operator_job(docs, "ml")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "s3-reader" and pod["automountServiceAccountToken"] is False
    assert pod["volumes"][0] == {"name": "work", "emptyDir": {"sizeLimit": "20Gi"}}
    for c in pod["initContainers"] + pod["containers"]:
        proxies = {e["name"]: e["value"] for e in c["env"] if e["name"].endswith("_PROXY")}
        assert proxies == {"HTTPS_PROXY": PROXY, "NO_PROXY": NO_PROXY}


@pytest.mark.parametrize("sets,message", [
    (("job.serviceAccountName=S3_Reader",), "/job/serviceAccountName"),
    (("job.proxy.httpsProxy=proxy.corp:3128",), "/job/proxy/httpsProxy"),            # no scheme
    (("job.proxy.httpsProxy=http://user:pw@proxy.corp:3128",), "/job/proxy/httpsProxy"),
    (("job.proxy.noProxy=a b",), "/job/proxy/noProxy"),
    (("job.proxy.ftpProxy=http://p:1",), "ftpProxy"),                                # not arbitrary env
    (("job.workSizeLimit=20GB",), "/job/workSizeLimit"),
    (("operator.logFormat=logfmt",), "/operator/logFormat"),
])
def test_bad_plumbing_values_fail_naming_the_value(helm, sets, message):
    proc = template(helm, *sets)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# -- against the real API server ----------------------------------------------------------------

@pytest.fixture
def plumbed_release(namespace, kubectl, helm):
    """The chart's ValidatingAdmissionPolicy of a release in `namespace` configured with PLUMBING
    (cluster-scoped: removed after the test), and the docs it was rendered from."""
    release = f"kubeslim-pl-{uuid.uuid4().hex[:6]}"
    docs = render(helm, *PLUMBING, release=release, namespace=namespace)
    with applied(kubectl, [d for d in docs if d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]):
        yield release, docs


@pytest.fixture
def as_release_operator(plumbed_release, namespace, kubectl, devenv, tmp_path) -> Callable[[dict], subprocess.CompletedProcess]:
    """Server-side dry-run `create` of a Job with the token of the release's operator ServiceAccount
    (which may create Jobs in `namespace` and nothing else)."""
    return dry_run_as(plumbed_release[0], namespace, kubectl, devenv, tmp_path)


def changed(job: dict, change: Callable[[dict], Any]) -> dict:
    job = copy.deepcopy(job)
    change(job["spec"]["template"]["spec"])
    return job


def _set_env(pod: dict, name: str, value: str | None = None, value_from: dict | None = None, containers: slice = slice(None)) -> None:
    for c in (pod["initContainers"] + pod["containers"])[containers]:
        c["env"] = [e for e in c["env"] if e["name"] != name]
        if value is not None:
            c["env"].append({"name": name, "value": value})
        if value_from is not None:
            c["env"].append({"name": name, "valueFrom": value_from})


def _only_the_deprecated_alias(pod: dict) -> None:
    # Alone: beside serviceAccountName the API server replaces the alias with the name anyway.
    del pod["serviceAccountName"]
    pod["serviceAccount"] = "admin"


SA_DENIED = 'runs as the configured ServiceAccount "s3-reader" (job.serviceAccountName)'
PROXY_DENIED = "proxy variables are exactly the configured job.proxy"


@pytest.mark.parametrize("change,message", [
    (lambda p: p.pop("serviceAccountName"), SA_DENIED),                                  # the default one
    (lambda p: p.update(serviceAccountName="admin"), SA_DENIED),
    (_only_the_deprecated_alias, SA_DENIED),
    (lambda p: p.update(automountServiceAccountToken=True), SA_DENIED),
    (lambda p: _set_env(p, "HTTPS_PROXY", "http://attacker:3128"), PROXY_DENIED),
    (lambda p: _set_env(p, "HTTPS_PROXY", containers=slice(0, 1)), PROXY_DENIED),       # missing on the export stage
    (lambda p: _set_env(p, "HTTP_PROXY", "http://attacker:3128"), PROXY_DENIED),         # not configured
    (lambda p: _set_env(p, "https_proxy", PROXY), PROXY_DENIED),                         # the lower-case twin
    (lambda p: _set_env(p, "NO_PROXY", value_from={"configMapKeyRef": {"name": "x", "key": "y"}}), PROXY_DENIED),
], ids=["default-sa", "other-sa", "deprecated-alias", "token-mounted", "other-proxy", "proxy-missing", "unconfigured-proxy",
        "lower-case", "proxy-from-configmap"])
def test_policy_denies_other_service_accounts_and_proxies(plumbed_release, as_release_operator, namespace, wait_for, change, message):
    proc = denied(as_release_operator, changed(operator_job(plumbed_release[1], namespace), change), wait_for)
    assert message in proc.stderr, proc.stderr


def test_policy_admits_the_operators_job_with_its_service_account_and_proxy(plumbed_release, as_release_operator, namespace, wait_for):
    job = operator_job(plumbed_release[1], namespace)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "s3-reader"
    assert_admitted(as_release_operator, job, changed(job, lambda p: p.update(serviceAccountName="admin")), wait_for)


# -- the web-identity token volume (spec.storage.credentials.webIdentity) ------------------------

WEB_IDENTITY_SPEC = parse_spec({**SPEC.model_dump(by_alias=True, exclude_none=True), "storage": {
    "region": "eu-west-1", "credentials": {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/quantize"}}}})
WEB_IDENTITY_DENIED = 'or the web-identity token of an audience in job.webIdentityAudiences ["sts.amazonaws.com"]'


def web_identity_job(docs: list[dict], namespace: str) -> dict:
    return operator_job(docs, namespace, WEB_IDENTITY_SPEC, "irsa")


def _token_source(pod: dict) -> dict:
    (volume,) = [v for v in pod["volumes"] if v["name"] == "web-identity"]
    return volume["projected"]["sources"][0]["serviceAccountToken"]


def _second_source(pod: dict) -> None:
    (volume,) = [v for v in pod["volumes"] if v["name"] == "web-identity"]
    volume["projected"]["sources"].append({"secret": {"name": "s3-creds"}})


def _renamed(pod: dict) -> None:
    for v in pod["volumes"]:
        if v["name"] == "web-identity":
            v["name"] = "tok"
    for c in pod["initContainers"] + pod["containers"]:
        for m in c["volumeMounts"]:
            if m["name"] == "web-identity":
                m["name"] = "tok"


@pytest.mark.parametrize("change", [
    lambda p: _token_source(p).pop("audience"),                                     # the API server's audience
    lambda p: _token_source(p).update(audience="https://kubernetes.default.svc.cluster.local"),
    lambda p: _token_source(p).update(path="api-token"),
    _second_source,                                                                 # a Secret beside the token
    _renamed,
], ids=["api-server-audience", "other-audience", "other-path", "second-source", "other-name"])
def test_policy_denies_any_other_token_volume(plumbed_release, as_release_operator, namespace, wait_for, change):
    proc = denied(as_release_operator, changed(web_identity_job(plumbed_release[1], namespace), change), wait_for)
    assert WEB_IDENTITY_DENIED in proc.stderr, proc.stderr


def test_policy_admits_the_operators_web_identity_job(plumbed_release, as_release_operator, namespace, wait_for):
    job = web_identity_job(plumbed_release[1], namespace)
    assert _token_source(job["spec"]["template"]["spec"])["audience"] == "sts.amazonaws.com"
    assert_admitted(as_release_operator, job, changed(job, lambda p: _token_source(p).pop("audience")), wait_for)
