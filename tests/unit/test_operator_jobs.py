"""The pure Job builder: spec (typed) → batch/v1 Job manifest."""
from __future__ import annotations

import copy
import json
import re

import pytest

from kubeslim_api.contract import NON_RETRYABLE_EXIT_CODES
from kubeslim_api.spec import DNS_SUBDOMAIN, LABEL_VALUE, parse_spec
from kubeslim_operator import constants as c
from kubeslim_operator.config import OperatorConfig
from kubeslim_dev.manifests import set_path
from kubeslim_operator.jobs import Owner, build_job, job_name

pytestmark = pytest.mark.unit

BASE = {
    "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
    "data": {
        "calibration": {"uri": "s3://datasets/train/", "listFile": "train.txt"},
        "evaluation": {"uri": "s3://datasets/val/", "listFile": "val.txt"},
    },
    "output": {"uri": "s3://models/out/"},
}
OWNER = Owner(name="mv3-int8", namespace="ml", uid="0d4a6c1e-1111-2222-3333-444455556666", generation=2)
CONFIG = OperatorConfig(job_image="registry.local/kubeslim-job:1.2.3")


def make(**overrides):
    spec = copy.deepcopy(BASE)
    for path, value in overrides.items():
        set_path(spec, path, value, sep="__")
    return build_job(OWNER, parse_spec(spec), CONFIG)


def pod(job):
    return job["spec"]["template"]["spec"]


def containers(job):
    return pod(job)["initContainers"] + pod(job)["containers"]


def env_of(container):
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("name,generation,expected", [
    ("mv3-int8", 1, "mv3-int8-g1"),
    ("a", 12345, "a-g12345"),
    ("x" * 60, 1, "x" * 60 + "-g1"),            # exactly 63
])
def test_job_name_short_names_are_readable(name, generation, expected):
    assert job_name(name, generation) == expected


@pytest.mark.parametrize("name", ["x" * 61, "a" * 253, "model." * 40 + "end", "a-" * 100, "b" + "a-" * 100])
@pytest.mark.parametrize("generation", [1, 99999])
def test_job_name_long_names_fit_and_stay_distinct(name, generation):
    got = job_name(name, generation)
    assert len(got) <= 63
    assert got.endswith(f"-g{generation}")
    assert got == job_name(name, generation)                       # deterministic
    assert got != job_name(name + "b", generation)                 # a common prefix does not collide
    assert not got.startswith(("-", ".")) and got[0].isalnum()
    assert re.fullmatch(DNS_SUBDOMAIN, got) and re.fullmatch(LABEL_VALUE, got)   # a Job name, and its pods' job-name label
    assert not any(junk in got for junk in ("--", "-.", ".-"))                      # the cut leaves no dangling separator


def test_metadata_owner_and_labels():
    job = make()
    meta = job["metadata"]
    assert meta["name"] == "mv3-int8-g2" and meta["namespace"] == "ml"
    assert meta["ownerReferences"] == [{"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob",
                                        "name": "mv3-int8", "uid": OWNER.uid, "controller": True}]
    assert meta["labels"][c.LABEL_MANAGED_BY] == "kubeslim-operator"
    assert meta["labels"][c.LABEL_OWNER_UID] == OWNER.uid
    assert meta["labels"][c.LABEL_GENERATION] == "2"
    assert c.LABEL_KUEUE_QUEUE not in meta["labels"]
    tmpl = job["spec"]["template"]["metadata"]
    assert tmpl["labels"][c.LABEL_MANAGED_BY] == "kubeslim-operator"
    assert tmpl["annotations"][c.ANNOTATION_OWNER_NAME] == "mv3-int8"


def test_pod_runs_three_stages_with_the_configured_image():
    job = make()
    assert [x["name"] for x in pod(job)["initContainers"]] == ["export", "calibrate"]
    assert [x["name"] for x in pod(job)["containers"]] == ["verify"]
    for ctr, stage in zip(containers(job), ["export", "calibrate", "verify"]):
        assert ctr["image"] == "registry.local/kubeslim-job:1.2.3"
        assert ctr["imagePullPolicy"] == "IfNotPresent"
        assert ctr["command"] == ["kubeslim-job"]
        assert ctr["args"] == [stage, "--work-dir", "/work", "--termination-log", "/dev/termination-log"]
        assert ctr["terminationMessagePath"] == "/dev/termination-log"
        assert ctr["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_restricted_security_context_and_no_api_token():
    job = make()
    ps = pod(job)
    assert ps["automountServiceAccountToken"] is False
    assert ps["restartPolicy"] == "Never"
    assert ps["securityContext"]["runAsNonRoot"] is True
    assert ps["securityContext"]["runAsUser"] == 65532
    assert ps["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for ctr in containers(job):
        sc = ctr["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int)
        mounts = {m["mountPath"] for m in ctr["volumeMounts"]}
        assert {"/work", "/tmp", "/home/kubeslim"} <= mounts
        env = env_of(ctr)
        assert env["HOME"]["value"] == "/home/kubeslim"
        assert env["MPLCONFIGDIR"]["value"].startswith("/home/kubeslim/")
    vols = {v["name"]: v for v in ps["volumes"]}
    assert all("emptyDir" in vols[n] for n in ("work", "tmp", "home"))


def test_spec_travels_as_compact_camel_case_json_with_defaults():
    job = make()
    raw = env_of(containers(job)[0])["KUBESLIM_SPEC"]["value"]
    assert " " not in raw.replace("mobilenet_v3_small", "")[:0] or ": " not in raw
    doc = json.loads(raw)
    assert doc["model"]["inputShape"] == [3, 224, 224]
    assert doc["quantization"]["algos"] == ["hist"]                      # defaults filled
    assert doc["verification"]["maxAccuracyDrop"] == 0.01
    assert parse_spec(doc) == parse_spec(BASE)                            # round-trips


@pytest.mark.parametrize("storage,expect_env,absent", [
    ({}, {"AWS_REGION": "us-east-1"}, {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CA_BUNDLE"}),
    ({"endpoint": "http://s3.local:7070", "region": "eu-west-1"},
     {"AWS_ENDPOINT_URL": "http://s3.local:7070", "AWS_REGION": "eu-west-1"}, {"AWS_ACCESS_KEY_ID"}),
    ({"caBundle": {"configMapName": "s3-ca"}}, {"AWS_CA_BUNDLE": "/etc/kubeslim/ca/ca.crt"}, {"AWS_ACCESS_KEY_ID"}),
])
def test_storage_env(storage, expect_env, absent):
    job = make(storage=storage)
    for ctr in containers(job):
        env = env_of(ctr)
        for k, v in expect_env.items():
            assert env[k]["value"] == v
        assert not absent & set(env)


@pytest.mark.parametrize("secret,keys", [
    ({"name": "s3-creds"}, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
    ({"name": "minio", "accessKeyIdKey": "user", "secretAccessKeyKey": "password"}, ("user", "password")),
])
def test_credentials_only_as_secret_key_refs(secret, keys):
    job = make(storage={"credentialsSecret": secret})
    for ctr in containers(job):
        env = env_of(ctr)
        assert env["AWS_ACCESS_KEY_ID"] == {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": secret["name"], "key": keys[0]}}}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret["name"], "key": keys[1]}
        assert "value" not in env["AWS_ACCESS_KEY_ID"]


def test_ca_bundle_is_mounted_read_only():
    job = make(storage={"caBundle": {"configMapName": "s3-ca", "key": "bundle.pem"}})
    vols = {v["name"]: v for v in pod(job)["volumes"]}
    assert vols["ca-bundle"]["configMap"] == {"name": "s3-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}
    for ctr in containers(job):
        mount = next(m for m in ctr["volumeMounts"] if m["name"] == "ca-bundle")
        assert mount == {"name": "ca-bundle", "mountPath": "/etc/kubeslim/ca", "readOnly": True}


@pytest.mark.parametrize("resources,requests", [
    ({}, {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}),
    ({"gpu": 2, "gpuResourceName": "amd.com/gpu", "cpu": 8, "memory": "32Gi"}, {"cpu": "8", "memory": "32Gi", "amd.com/gpu": "2"}),
    ({"gpu": 0, "cpu": "500m", "memory": "1Gi"}, {"cpu": "500m", "memory": "1Gi"}),
])
def test_resources(resources, requests):
    job = make(resources=resources)
    for ctr in containers(job):
        assert ctr["resources"] == {"requests": requests, "limits": requests}


def test_scheduling_fields_and_kueue_label():
    tol = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}]}}}
    job = make(scheduling={"nodeSelector": {"pool": "gpu"}, "tolerations": tol, "affinity": aff,
                           "priorityClassName": "batch-low", "runtimeClassName": "nvidia", "queueName": "team-a"})
    ps = pod(job)
    assert ps["nodeSelector"] == {"pool": "gpu"}
    assert ps["tolerations"] == tol
    assert ps["affinity"] == aff
    assert ps["priorityClassName"] == "batch-low"
    assert ps["runtimeClassName"] == "nvidia"
    assert job["metadata"]["labels"][c.LABEL_KUEUE_QUEUE] == "team-a"
    assert "suspend" not in job["spec"]                 # Kueue's business


def test_empty_scheduling_fields_are_omitted():
    ps = pod(make())
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName"):
        assert key not in ps


def test_pod_metadata_is_copied_but_cannot_hide_the_pod():
    job = make(podMetadata={"labels": {"team": "vision", c.LABEL_MANAGED_BY: "someone-else"},
                            "annotations": {"kwok.x-k8s.io/exit-code": "3"}})
    tmpl = job["spec"]["template"]["metadata"]
    assert tmpl["labels"]["team"] == "vision"
    assert tmpl["labels"][c.LABEL_MANAGED_BY] == "kubeslim-operator"
    assert tmpl["annotations"]["kwok.x-k8s.io/exit-code"] == "3"
    assert "team" not in job["metadata"]["labels"]


@pytest.mark.parametrize("run_policy,expected", [
    ({}, {"backoffLimit": 1, "activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 86400}),
    ({"backoffLimit": 0, "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 0},
     {"backoffLimit": 0, "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 0}),
    ({"activeDeadlineSeconds": None, "ttlSecondsAfterFinished": None}, {"backoffLimit": 1}),
])
def test_run_policy(run_policy, expected):
    spec = make(runPolicy=run_policy)["spec"]
    got = {k: spec[k] for k in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished") if k in spec}
    assert got == expected


def test_pod_failure_policy_fails_fast_on_bad_input_and_ignores_disruption():
    rules = make()["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    fail = next(r for r in rules if r["action"] == "FailJob")
    assert fail["onExitCodes"] == {"operator": "In", "values": list(NON_RETRYABLE_EXIT_CODES)}
    assert "containerName" not in fail["onExitCodes"]      # init containers too


def test_image_never_comes_from_the_cr():
    job = build_job(OWNER, parse_spec({**BASE, "podMetadata": {"annotations": {"image": "evil:latest"}}}),
                    OperatorConfig(job_image="good:1"))
    assert {ctr["image"] for ctr in containers(job)} == {"good:1"}


def test_same_input_same_manifest():
    assert make() == make()
