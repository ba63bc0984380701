"""Operator configuration from the environment (the Helm chart's env names) and the CLI."""
from __future__ import annotations

import pytest

from kubeslim_api.spec import parse_spec
from kubeslim_operator.__main__ import build_config, parse_args
from kubeslim_operator.config import ConfigError, OperatorConfig
from kubeslim_operator.jobs import Owner, build_job

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("env,field,expected", [
    ({}, "namespaces", ()),
    ({"KUBESLIM_WATCH_NAMESPACES": "b, a,,a"}, "namespaces", ("a", "b")),
    ({"KUBESLIM_NAMESPACES": "x"}, "namespaces", ("x",)),
    ({"KUBESLIM_JOB_IMAGE": "reg/img:1"}, "job_image", "reg/img:1"),
    ({"KUBESLIM_JOB_IMAGE_PULL_POLICY": "Always"}, "job_image_pull_policy", "Always"),
    ({}, "job_image_pull_policy", "IfNotPresent"),
    ({"KUBESLIM_LIVENESS_PORT": "8081"}, "liveness_endpoint", "http://0.0.0.0:8081/healthz"),
    ({"KUBESLIM_LIVENESS_PORT": "0"}, "liveness_endpoint", ""),
    ({"KUBESLIM_METRICS_PORT": "0"}, "metrics_port", 0),
    ({"KUBESLIM_STATUS_COALESCE_SECONDS": "0.25"}, "status_coalesce_seconds", 0.25),
    ({"KUBESLIM_DEFAULT_NODE_SELECTOR": '{"pool": "gpu"}'}, "default_node_selector", (("pool", "gpu"),)),
    ({"KUBESLIM_DEFAULT_TOLERATIONS": "[]"}, "default_tolerations", ()),
    ({"KUBESLIM_DEFAULT_NODE_SELECTOR": "null"}, "default_node_selector", ()),
])
def test_from_env(env, field, expected):
    assert getattr(OperatorConfig.from_env(env), field) == expected


@pytest.mark.parametrize("env", [
    {"KUBESLIM_METRICS_PORT": "x"},
    {"KUBESLIM_RUN_AS_USER": "0"},
    {"KUBESLIM_JOB_IMAGE_PULL_POLICY": "Sometimes"},
    {"KUBESLIM_DEFAULT_NODE_SELECTOR": "[1]"},
    {"KUBESLIM_DEFAULT_TOLERATIONS": "{"},
])
def test_bad_env_is_refused(env):
    with pytest.raises(ConfigError):
        OperatorConfig.from_env(env)


@pytest.mark.parametrize("argv,namespaces", [([], ("ml",)), (["-A"], ()), (["-n", "b", "-n", "a"], ("a", "b"))])
def test_cli_overrides_env(argv, namespaces, monkeypatch):
    monkeypatch.setenv("KUBESLIM_WATCH_NAMESPACES", "ml")
    assert build_config(parse_args(argv)).namespaces == namespaces


def test_cluster_defaults_are_merged_with_the_crs_own():
    # The full table (key conflicts, repeated tolerations) is tests/unit/test_operator_plumbing.py.
    cfg = OperatorConfig.from_env({"KUBESLIM_DEFAULT_NODE_SELECTOR": '{"pool": "gpu"}',
                                   "KUBESLIM_DEFAULT_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]'})
    base = {"model": {"inference": {"uri": "s3://m/x/"}},
            "data": {"calibration": {"uri": "s3://d/c.npz", "format": "npz"}, "evaluation": {"uri": "s3://d/e.npz", "format": "npz"}},
            "output": {"uri": "s3://m/o/"}}
    owner = Owner("a", "ns", "u", 1)
    pod = build_job(owner, parse_spec(base), cfg)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    own = {**base, "scheduling": {"nodeSelector": {"x": "y"}, "tolerations": [{"key": "k", "operator": "Exists"}]}}
    pod = build_job(owner, parse_spec(own), cfg)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu", "x": "y"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}, {"key": "k", "operator": "Exists"}]


@pytest.mark.parametrize("env, server", [
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
    ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00::1]:6443"),
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),
    ({}, None),
])
def test_in_cluster_server_is_the_kubernetes_service_from_the_pod_env(env, server):
    from kubeslim_operator.kube import in_cluster_server
    assert in_cluster_server(env) == server


def test_every_bad_variable_is_named_in_one_error():
    # pydantic-settings validates every field before it answers: one start names all the fixes.
    with pytest.raises(ConfigError) as err:
        OperatorConfig.from_env({"KUBESLIM_METRICS_PORT": "x", "KUBESLIM_API_CONCURRENCY": "0",
                                 "KUBESLIM_LOG_FORMAT": "logfmt", "KUBESLIM_RECHECK_SECONDS": "15"})
    says = str(err.value)
    assert "KUBESLIM_METRICS_PORT must be a number, got 'x'" in says
    assert "KUBESLIM_API_CONCURRENCY must be >= 1, got '0'" in says
    assert "KUBESLIM_LOG_FORMAT must be text or json (the chart's operator.logFormat), got 'logfmt'" in says
    assert "KUBESLIM_RECHECK_SECONDS" not in says


@pytest.mark.parametrize("raw", ["", "   "])
def test_an_empty_or_blank_variable_means_the_default(raw):
    env = {name: raw for name in ("KUBESLIM_JOB_IMAGE_PULL_POLICY", "KUBESLIM_METRICS_PORT", "KUBESLIM_LOG_FORMAT",
                                  "KUBESLIM_DEFAULT_TOLERATIONS", "KUBESLIM_LEADER_ELECTION", "KUBESLIM_LOG_LEVEL")}
    assert OperatorConfig.from_env(env) == OperatorConfig()


def test_an_empty_liveness_endpoint_turns_the_probe_off():
    # Unlike every other variable: "" is a value here (the chart's probe switched off).
    assert OperatorConfig.from_env({"KUBESLIM_LIVENESS_ENDPOINT": ""}).liveness_endpoint == ""
    assert OperatorConfig.from_env({"KUBESLIM_LIVENESS_ENDPOINT": "", "KUBESLIM_LIVENESS_PORT": "8081"}).liveness_endpoint == ""


def test_only_from_env_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("KUBESLIM_JOB_IMAGE", "from-env/job:1")
    monkeypatch.setenv("KUBESLIM_METRICS_PORT", "x")
    assert OperatorConfig().job_image != "from-env/job:1"        # tests and callers build configs freely
    with pytest.raises(ConfigError, match="KUBESLIM_METRICS_PORT"):
        OperatorConfig.from_env()
    monkeypatch.delenv("KUBESLIM_METRICS_PORT")
    assert OperatorConfig.from_env().job_image == "from-env/job:1"
