"""job.imagePullSecrets: the chart's names reach the operator as KUBESLIM_JOB_IMAGE_PULL_SECRETS and
every Job's pod as imagePullSecrets, in order; bad names stop the operator naming the variable."""
from __future__ import annotations

import pytest

from kubeslim_api.spec import parse_spec
from kubeslim_operator.config import ConfigError, OperatorConfig
from kubeslim_operator.jobs import Owner, build_job

pytestmark = pytest.mark.unit

SPEC = parse_spec({
    "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
    "data": {"calibration": {"uri": "s3://d/train/", "listFile": "t.txt"}, "evaluation": {"uri": "s3://d/val/", "listFile": "v.txt"}},
    "output": {"uri": "s3://m/out/"},
})
OWNER = Owner(name="mv3", namespace="ml", uid="0d4a6c1e-1111-2222-3333-444455556666", generation=1)


@pytest.mark.parametrize("raw,names", [
    ("", ()),
    (" , ", ()),
    ("regcred", ("regcred",)),
    ("b-cred, a.cred", ("b-cred", "a.cred")),     # order kept: the admission policy compares lists
])
def test_pull_secret_names_from_env(raw, names):
    assert OperatorConfig.from_env({"KUBESLIM_JOB_IMAGE_PULL_SECRETS": raw}).job_image_pull_secrets == names


@pytest.mark.parametrize("bad", ["RegCred", "a_b", "-x", "x" * 254, '{"name": "x"}'])
def test_bad_pull_secret_names_are_refused_naming_the_variable(bad):
    with pytest.raises(ConfigError, match="KUBESLIM_JOB_IMAGE_PULL_SECRETS .*job.imagePullSecrets"):
        OperatorConfig.from_env({"KUBESLIM_JOB_IMAGE_PULL_SECRETS": f"ok,{bad}"})


def test_job_pod_gets_the_configured_pull_secrets():
    job = build_job(OWNER, SPEC, OperatorConfig(job_image="r/j:1", job_image_pull_secrets=("b-cred", "a-cred")))
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "b-cred"}, {"name": "a-cred"}]


def test_job_pod_has_no_pull_secrets_unless_configured():
    job = build_job(OWNER, SPEC, OperatorConfig(job_image="r/j:1"))
    assert "imagePullSecrets" not in job["spec"]["template"]["spec"]
