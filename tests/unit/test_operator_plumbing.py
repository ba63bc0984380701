"""Job-pod plumbing from the chart (issue 19 item 5): scheduling defaults merged with a
QuantizationJob's own, job.serviceAccountName, proxy variables, the /work sizeLimit and the log
format: each from its KUBESLIM_* variable (bad values refused naming the variable and the chart
value) into the Job build_job makes."""
from __future__ import annotations

import io
import json
import logging

import pytest

from kubeslim_api.spec import SpecError, parse_spec
from kubeslim_operator import logfmt
from kubeslim_operator.config import ConfigError, OperatorConfig
from kubeslim_operator.jobs import Owner, build_job, pod_failure_policy
from kubeslim_operator.status import observe

pytestmark = pytest.mark.unit

OWNER = Owner(name="mv3", namespace="ml", uid="0d4a6c1e-1111-2222-3333-444455556666", generation=1)
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TAINT = {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}


def spec(**scheduling):
    return parse_spec({
        "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
        "data": {"calibration": {"uri": "s3://d/train/", "listFile": "t.txt"},
                 "evaluation": {"uri": "s3://d/val/", "listFile": "v.txt"}},
        "output": {"uri": "s3://m/out/"},
        "scheduling": scheduling,
    })


def pod_spec(config: OperatorConfig, **scheduling) -> dict:
    return build_job(OWNER, spec(**scheduling), config)["spec"]["template"]["spec"]


def env_of_every_container(ps: dict) -> list[dict[str, str | None]]:
    return [{e["name"]: e.get("value") for e in c["env"]} for c in ps["initContainers"] + ps["containers"]]


# -- scheduling defaults merged with the job's own ---------------------------------------------

DEFAULTS = OperatorConfig.from_env({"KUBESLIM_DEFAULT_NODE_SELECTOR": '{"pool": "gpu", "zone": "a"}',
                                    "KUBESLIM_DEFAULT_TOLERATIONS": json.dumps([GPU_TAINT])})


@pytest.mark.parametrize("config,own,selector,tolerations", [
    # No defaults, nothing of its own: no field at all.
    (OperatorConfig(), {}, None, None),
    # Defaults only.
    (DEFAULTS, {}, {"pool": "gpu", "zone": "a"}, [GPU_TAINT]),
    # The job's own keys are added; on a shared key the job's value wins.
    (DEFAULTS, {"nodeSelector": {"pool": "a100", "team": "vision"}},
     {"pool": "a100", "zone": "a", "team": "vision"}, [GPU_TAINT]),
    # The job's own tolerations come after the defaults, which stay (they dropped them before).
    (DEFAULTS, {"tolerations": [SPOT_TAINT]}, {"pool": "gpu", "zone": "a"}, [GPU_TAINT, SPOT_TAINT]),
    # A toleration the job repeats from the defaults is listed once.
    (DEFAULTS, {"tolerations": [GPU_TAINT, SPOT_TAINT]}, {"pool": "gpu", "zone": "a"}, [GPU_TAINT, SPOT_TAINT]),
    # The job's own only.
    (OperatorConfig(), {"nodeSelector": {"team": "vision"}, "tolerations": [SPOT_TAINT]}, {"team": "vision"}, [SPOT_TAINT]),
])
def test_scheduling_defaults_are_merged_with_the_jobs_own(config, own, selector, tolerations):
    ps = pod_spec(config, **own)
    assert ps.get("nodeSelector") == selector
    assert ps.get("tolerations") == tolerations


# -- job.serviceAccountName ----------------------------------------------------------------------

@pytest.mark.parametrize("raw,name", [("", ""), ("  ", ""), ("s3-reader", "s3-reader"), ("team.s3", "team.s3")])
def test_service_account_name_from_env(raw, name):
    assert OperatorConfig.from_env({"KUBESLIM_JOB_SERVICE_ACCOUNT_NAME": raw}).job_service_account_name == name


@pytest.mark.parametrize("bad", ["S3Reader", "a_b", "-x", "x" * 254, "a,b"])
def test_bad_service_account_names_are_refused_naming_the_variable(bad):
    with pytest.raises(ConfigError, match="KUBESLIM_JOB_SERVICE_ACCOUNT_NAME .*job.serviceAccountName"):
        OperatorConfig.from_env({"KUBESLIM_JOB_SERVICE_ACCOUNT_NAME": bad})


@pytest.mark.parametrize("name,expected", [("", None), ("s3-reader", "s3-reader")])
def test_job_pod_runs_as_the_configured_service_account_without_its_token(name, expected):
    ps = pod_spec(OperatorConfig(job_service_account_name=name))
    assert ps.get("serviceAccountName") == expected
    assert ps["automountServiceAccountToken"] is False


# -- proxy variables -----------------------------------------------------------------------------

@pytest.mark.parametrize("env,proxy_env", [
    ({}, ()),
    ({"KUBESLIM_JOB_HTTPS_PROXY": " "}, ()),
    ({"KUBESLIM_JOB_HTTPS_PROXY": "http://proxy.corp:3128"}, (("HTTPS_PROXY", "http://proxy.corp:3128"),)),
    ({"KUBESLIM_JOB_NO_PROXY": ".svc,10.0.0.0/8", "KUBESLIM_JOB_HTTP_PROXY": "https://p:8443",
      "KUBESLIM_JOB_HTTPS_PROXY": "http://p:3128"},
     (("HTTPS_PROXY", "http://p:3128"), ("HTTP_PROXY", "https://p:8443"), ("NO_PROXY", ".svc,10.0.0.0/8"))),
])
def test_proxy_variables_from_env(env, proxy_env):
    assert OperatorConfig.from_env(env).job_proxy_env == proxy_env


@pytest.mark.parametrize("var,bad,hint", [
    ("HTTPS_PROXY", "proxy.corp:3128", "job.proxy.httpsProxy"),            # no scheme
    ("HTTP_PROXY", "socks5://p:1080", "job.proxy.httpProxy"),
    ("HTTPS_PROXY", "http://user:s3cret@p:3128", "user:password"),           # a password in every Job's spec
    ("NO_PROXY", "a, b", "job.proxy.noProxy"),
])
def test_bad_proxy_values_are_refused_naming_the_variable(var, bad, hint):
    with pytest.raises(ConfigError, match=f"KUBESLIM_JOB_{var} .*{hint}") as err:
        OperatorConfig.from_env({f"KUBESLIM_JOB_{var}": bad})
    assert "s3cret" not in str(err.value)


def test_proxy_variables_reach_every_stage_and_nothing_else_is_added():
    plain = env_of_every_container(pod_spec(OperatorConfig()))
    proxied = env_of_every_container(pod_spec(OperatorConfig(job_proxy_env=(("HTTPS_PROXY", "http://p:3128"),
                                                                            ("NO_PROXY", ".svc")))))
    for before, after in zip(plain, proxied, strict=True):
        assert after == {**before, "HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".svc"}
        assert "HTTP_PROXY" not in after


# -- /work sizeLimit -----------------------------------------------------------------------------

@pytest.mark.parametrize("limit,work", [("", {}), ("20Gi", {"sizeLimit": "20Gi"}), ("500M", {"sizeLimit": "500M"})])
def test_work_volume_size_limit(limit, work):
    config = OperatorConfig.from_env({"KUBESLIM_JOB_WORK_SIZE_LIMIT": limit})
    volumes = {v["name"]: v for v in pod_spec(config)["volumes"]}
    assert volumes["work"]["emptyDir"] == work
    assert volumes["tmp"]["emptyDir"] == {}          # only /work holds the model and the data


@pytest.mark.parametrize("bad", ["20GB", "lots", "-1Gi", "1.5.2Gi"])
def test_bad_work_size_limit_is_refused_naming_the_variable(bad):
    with pytest.raises(ConfigError, match="KUBESLIM_JOB_WORK_SIZE_LIMIT .*job.workSizeLimit"):
        OperatorConfig.from_env({"KUBESLIM_JOB_WORK_SIZE_LIMIT": bad})


# -- log format ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,fmt", [("", "text"), ("json", "json"), ("JSON", "json"), ("text", "text")])
def test_log_format_from_env(raw, fmt):
    assert OperatorConfig.from_env({"KUBESLIM_LOG_FORMAT": raw}).log_format == fmt


def test_bad_log_format_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match="KUBESLIM_LOG_FORMAT .*operator.logFormat"):
        OperatorConfig.from_env({"KUBESLIM_LOG_FORMAT": "logfmt"})



@pytest.fixture
def log_to():
    """Configures the root logger onto a buffer for one test and puts the previous handlers back."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out = io.StringIO()
    yield lambda fmt: (logfmt.configure("INFO", fmt, stream=out), out)[1]
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_json_log_lines_are_one_object_per_line_with_the_object_and_the_traceback(log_to):
    out = log_to("json")
    log = logging.getLogger("kubeslim_operator.test")
    log.info("created Job %s", "mv3-g1", extra={"k8s_ref": {"namespace": "ml", "name": "mv3"}})
    log.debug("not at INFO")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("reconcile failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "created Job mv3-g1" and first["level"] == "INFO"
    assert first["logger"] == "kubeslim_operator.test" and first["object"] == {"namespace": "ml", "name": "mv3"}
    assert first["time"].endswith("+00:00") and "exception" not in first
    assert second["message"] == "reconcile failed" and "RuntimeError: boom\nsecond line" in second["exception"]


def test_text_log_lines_stay_the_default(log_to):
    out = log_to(OperatorConfig.from_env({}).log_format)
    logging.getLogger("kubeslim_operator.test").warning("plain")
    assert out.getvalue().rstrip().endswith("WARNING kubeslim_operator.test: plain")


# -- spec.storage.credentials.webIdentity (issue 19 item 2) ---------------------------------------

ROLE = "arn:aws:iam::123456789012:role/quantize"


def with_storage(**storage) -> dict:
    doc = spec().model_dump(by_alias=True, exclude_none=True)
    doc["storage"] = {**doc["storage"], **storage}
    return doc


@pytest.mark.parametrize("credentials,audience", [
    ({"webIdentity": {"roleArn": ROLE}}, "sts.amazonaws.com"),             # AWS STS's, the default
    ({"webIdentity": {"roleArn": "arn:aws-cn:iam::123456789012:role/team/q", "audience": "sts.amazonaws.com.cn"}},
     "sts.amazonaws.com.cn"),
])
def test_web_identity_gives_the_pod_a_projected_token_and_the_role_not_a_key_pair(credentials, audience):
    job = build_job(OWNER, parse_spec(with_storage(credentials=credentials)), OperatorConfig(job_service_account_name="s3-reader"))
    ps = job["spec"]["template"]["spec"]
    (token,) = [v for v in ps["volumes"] if "projected" in v]
    assert token == {"name": "web-identity", "projected": {"sources": [{"serviceAccountToken": {
        "audience": audience, "expirationSeconds": 3600, "path": "token"}}]}}
    assert ps["automountServiceAccountToken"] is False and ps["serviceAccountName"] == "s3-reader"
    for c in ps["initContainers"] + ps["containers"]:
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["AWS_ROLE_ARN"] == credentials["webIdentity"]["roleArn"]
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == "/var/run/secrets/kubeslim/web-identity/token"
        assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
        assert {"name": "web-identity", "mountPath": "/var/run/secrets/kubeslim/web-identity", "readOnly": True} in c["volumeMounts"]


def test_without_web_identity_there_is_no_token_volume_and_no_role():
    ps = pod_spec(OperatorConfig())
    assert not [v for v in ps["volumes"] if "projected" in v]
    assert all("AWS_ROLE_ARN" not in env for env in env_of_every_container(ps))


W = "spec.storage.credentials.webIdentity"


@pytest.mark.parametrize("storage,field,says", [
    ({"credentials": {"webIdentity": {}}}, f"{W}.roleArn", ""),                             # a missing role
    ({"credentials": {"webIdentity": {"roleArn": "quantize"}}}, f"{W}.roleArn", ""),        # not an ARN
    ({"credentials": {"webIdentity": {"roleArn": "arn:aws:iam::123:role/q"}}}, f"{W}.roleArn", ""),   # no 12-digit account
    ({"credentials": {"webIdentity": {"roleArn": ROLE, "audience": ""}}}, f"{W}.audience", ""),
    ({"credentials": {}}, W, ""),
    ({"credentials": {"webIdentity": {"roleArn": ROLE}}, "credentialsSecret": {"name": "s3"}}, "spec.storage", "not both"),
])
def test_bad_web_identity_is_refused_naming_the_field(storage, field, says):
    with pytest.raises(SpecError) as err:
        parse_spec(with_storage(**storage))
    assert err.value.field == field and says in err.value.message


def test_an_api_server_complaint_about_the_token_volume_names_the_audience_field():
    from kubeslim_operator.status import spec_field

    assert spec_field("spec.template.spec.volumes[3].projected.sources[0].serviceAccountToken.audience") == \
        "spec.storage.credentials.webIdentity.audience"


# -- /work overflow: the kubelet's eviction, in the user's terms -------------------------------

def _pod_evicted(message: str, reason: str = "Evicted") -> dict:
    """A pod the kubelet evicted while calibrating: export done, calibrate killed (no exit code of its own)."""
    killed = {"terminated": {"exitCode": 137, "reason": "Error", "message": ""}}
    return {"metadata": {"name": "mv3-g1-x", "creationTimestamp": "2026-01-01T00:00:01Z"}, "spec": {"nodeName": "gpu-0"},
            "status": {"phase": "Failed", "reason": reason, "message": message,
                       "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "initContainerStatuses": [{"name": "export", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                                                 {"name": "calibrate", "state": killed}]}}


def _job(*conditions: tuple[str, str]) -> dict:
    return {"metadata": {"name": "mv3-g1"}, "spec": {"backoffLimit": 1, "podFailurePolicy": pod_failure_policy()},
            "status": {"startTime": "2026-01-01T00:00:00Z", "failed": 1,
                       "conditions": [{"type": t, "status": "True", "reason": r, "lastTransitionTime": "2026-01-01T00:05:00Z"}
                                      for t, r in conditions]}}


WORK_FULL = 'Usage of EmptyDir volume "work" exceeds the limit "20Gi". '


@pytest.mark.parametrize("job,pod,phase,reason,says", [
    # The Job gave up: the run ends WorkVolumeFull naming the limit, the chart value and the stage.
    (_job(("Failed", "BackoffLimitExceeded")), _pod_evicted(WORK_FULL), "Failed", "WorkVolumeFull",
     "outgrew its size limit (20Gi, the chart's job.workSizeLimit) during the calibrate stage"),
    # Another emptyDir, or an eviction for node pressure: not this reason.
    (_job(("Failed", "BackoffLimitExceeded")), _pod_evicted(WORK_FULL.replace('"work"', '"tmp"')), "Failed", "StageFailed", "code 137"),
    (_job(("Failed", "BackoffLimitExceeded")), _pod_evicted(WORK_FULL, reason="Error"), "Failed", "StageFailed", "code 137"),
    # The Job retries (backoffLimit 1, one failure so far): the retry says why.
    (_job(), _pod_evicted(WORK_FULL), "Pending", "Retrying", "Attempt 1 failed (WorkVolumeFull: The /work volume outgrew"),
])
def test_work_volume_overflow_is_named(job, pod, phase, reason, says):
    v = observe(generation=1, spec=spec(), spec_error=None, job=job, pods=[pod], now="2026-01-01T00:06:00Z")
    assert (v.phase, v.reason) == (phase, reason), v.message
    assert says in v.message
