"""The parallel sweep on the operator's side (kubeslim_api.sweep): the Indexed Job it builds, and
the status it derives from an Indexed Job's pods."""
from __future__ import annotations

import copy

import pytest

from kubeslim_api import sweep
from kubeslim_api.contract import Artifacts, Gate, Int8Metrics, ModelMetrics, Results, StageResult, encode
from kubeslim_api.spec import parse_spec
from kubeslim_dev.manifests import set_path
from kubeslim_operator import constants as c
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.jobs import Owner, build_job
from kubeslim_operator.objects import trim_job, trim_pod
from kubeslim_operator.status import observe

pytestmark = pytest.mark.unit

BASE = {
    "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
    "data": {"calibration": {"uri": "s3://d/train/", "listFile": "t.txt"},
             "evaluation": {"uri": "s3://d/val/", "listFile": "v.txt"}},
    "output": {"uri": "s3://m/out/"},
}
OWNER = Owner(name="mv3", namespace="ml", uid="uid-1", generation=3)
CONFIG = OperatorConfig(job_image="registry.local/kubeslim-job:1.2.3")
NOW = "2026-01-01T00:10:00Z"


def spec_of(**overrides):
    raw = copy.deepcopy(BASE)
    for path, value in overrides.items():
        set_path(raw, path, value, sep="__")
    return parse_spec(raw)


def build(**overrides):
    return build_job(OWNER, spec_of(**overrides), CONFIG)


def sweep_env(job):
    pod_spec = job["spec"]["template"]["spec"]
    values = {e["name"]: e.get("value") for ct in pod_spec["initContainers"] + pod_spec["containers"] for e in ct["env"]
              if e["name"] == sweep.URI_ENV}
    return values.get(sweep.URI_ENV)


# -- the manifest: (parallelism, algos) → (completionMode, completions, parallelism, work prefix) --------

URI = "s3://m/out/.kubeslim-sweep/uid-1-g3/"
MANIFESTS = [
    ("default: one pod", None, ["hist", "avg"], None, 1, 1, None),
    ("parallelism 1: one pod", 1, ["hist", "avg", "KL"], None, 1, 1, None),
    ("one algo: nothing to run in parallel", 4, ["hist"], None, 1, 1, None),
    ("2 at a time, 3 candidates + final", 2, ["hist", "avg", "KL"], "Indexed", 4, 2, URI),
    ("4 at a time, 4 candidates + final", 4, ["hist", "avg", "KL", "mse"], "Indexed", 5, 4, URI),
    ("more pods than indexes", 8, ["hist", "avg"], "Indexed", 3, 3, URI),
]


@pytest.mark.parametrize("parallelism,algos,mode,completions,at_once,uri", [m[1:] for m in MANIFESTS],
                         ids=[m[0] for m in MANIFESTS])
def test_sweep_manifest(parallelism, algos, mode, completions, at_once, uri):
    overrides = {"quantization__algos": algos}
    if parallelism is not None:
        overrides["quantization__parallelism"] = parallelism
    job = build(**overrides)
    spec = job["spec"]
    assert (spec.get("completionMode"), spec["completions"], spec["parallelism"]) == (mode, completions, at_once)
    assert sweep_env(job) == uri
    # One template for every index: the role comes from JOB_COMPLETION_INDEX, the retry rules are the run's.
    assert [ct["name"] for ct in spec["template"]["spec"]["initContainers"] + spec["template"]["spec"]["containers"]] == \
        ["export", "calibrate", "verify"]
    assert spec["backoffLimit"] == 1 and spec["podFailurePolicy"]["rules"]


def test_sweep_manifest_is_the_same_every_time():
    # A restarted operator builds the same Job under the same name: its create meets a 409, never a twin.
    a, b = build(quantization__algos=["hist", "KL"], quantization__parallelism=2), \
        build(quantization__algos=["hist", "KL"], quantization__parallelism=2)
    assert a == b and a["metadata"]["name"] == "mv3-g3"


def test_the_work_prefix_is_per_object_and_generation():
    assert sweep.work_uri("s3://m/out", "u", 1) != sweep.work_uri("s3://m/out/", "u", 2) != sweep.work_uri("s3://m/out/", "v", 2)
    assert sweep.work_uri("s3://m/out", "u", 1) == sweep.work_uri("s3://m/out/", "u", 1) == "s3://m/out/.kubeslim-sweep/u-g1/"


@pytest.mark.parametrize("value", [0, 9])
def test_parallelism_is_bounded(value):
    with pytest.raises(ValueError, match="parallelism"):
        spec_of(quantization__parallelism=value)


def test_trimmed_copies_keep_what_the_sweep_rules_read():
    job = build(quantization__algos=["hist", "KL"], quantization__parallelism=2)
    assert trim_job(job)["spec"]["completionMode"] == "Indexed" and trim_job(job)["spec"]["completions"] == 3
    pod = {"metadata": {"name": "p", "labels": {c.LABEL_COMPLETION_INDEX: "2", "other": "x"}}, "status": {}}
    assert trim_pod(pod)["metadata"]["labels"] == {c.LABEL_COMPLETION_INDEX: "2"}


# -- status: an Indexed Job of 3 candidates (hist, avg, KL) and the final index 3 --------------------

SPEC = spec_of(quantization__algos=["hist", "avg", "KL"], quantization__parallelism=2)
RESULTS = Results(backend="cpu-onednn-int8", fp32=ModelMetrics(top1=0.75, latency_ms=4.0),
                  int8=Int8Metrics(algo="KL", top1=0.749, latency_ms=2.0), accuracy_drop=0.001, speedup=2.0)
FINAL_MSG = encode(StageResult(stage="verify", ok=True, results=RESULTS, artifacts=Artifacts(model="s3://m/out/model.pdmodel"),
                               gate=Gate(metric="top1", max_accuracy_drop=0.01, passed=True)))
HANDED_ON = encode(StageResult(stage="verify", ok=True, message="candidate hist handed on"))
BAD_ALGO_DATA = encode(StageResult(stage="calibrate", ok=False, reason="ShapeMismatch", message="the model refuses samples"))


def term(code=0, message=""):
    return {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message}}


RUN = {"running": {}}
INIT = {"waiting": {"reason": "PodInitializing"}}


def pod(index, phase="Running", export=None, calibrate=None, verify=None, created="00:01", attempt=""):
    st = {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"}],
          "initContainerStatuses": [{"name": n, "state": s} for n, s in (("export", export), ("calibrate", calibrate)) if s],
          "containerStatuses": [{"name": "verify", "state": verify}] if verify else []}
    return {"metadata": {"name": f"mv3-g3-{index}-{attempt or 'a'}", "creationTimestamp": f"2026-01-01T00:{created}Z",
                         "labels": {c.LABEL_COMPLETION_INDEX: str(index), c.LABEL_JOB_NAME: "mv3-g3"}},
            "spec": {"nodeName": "gpu-0"}, "status": st}


def done(index, created="00:01", message=HANDED_ON, attempt=""):
    return pod(index, "Succeeded", term(), term(), term(message=message), created, attempt)


def job(*conds):
    return {"metadata": {"name": "mv3-g3", "uid": "j"},
            "spec": {"completionMode": "Indexed", "completions": 4, "parallelism": 2, "backoffLimit": 1,
                     "podFailurePolicy": build(quantization__algos=["hist", "avg"], quantization__parallelism=2)
                     ["spec"]["podFailurePolicy"]},
            "status": {"startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": t, "status": "True", "reason": r, "lastTransitionTime": "2026-01-01T00:09:00Z"}
                                      for t, r in conds]}}


COMPLETE, PFP, BACKOFF = ("Complete", ""), ("Failed", "PodFailurePolicy"), ("Failed", "BackoffLimitExceeded")

# (id, job, pods, phase, stage, reason, the message's start, the chosen algo)
STATUS = [
    ("two candidates calibrating", job(), [pod(0, export=term(), calibrate=RUN, verify=INIT),
                                           pod(1, export=term(), calibrate=RUN, verify=INIT, created="00:02")],
     "Running", "Calibrating", "", "0 of 3 candidates calibrated. Candidate avg (index 1): Pod mv3-g3-1-a is running the "
                                   "calibrate stage.", None),
    ("a candidate waits for index 0's export", job(), [pod(0, export=RUN, verify=INIT),
                                                       pod(1, export=RUN, verify=INIT, created="00:02")],
     "Running", "Exporting", "", "0 of 3 candidates calibrated. Candidate avg (index 1)", None),
    ("final index waits for the last candidate", job(), [done(0), done(1, "00:02"), pod(2, export=term(), calibrate=RUN, created="00:03"),
                                                         pod(3, export=term(), calibrate=RUN, created="00:04")],
     "Running", "Calibrating", "", "2 of 3 candidates calibrated. Final (index 3)", None),
    ("final index verifying", job(), [done(0), done(1, "00:02"), done(2, "00:03"),
                                      pod(3, export=term(), calibrate=term(), verify=RUN, created="00:04")],
     "Running", "Verifying", "", "3 of 3 candidates calibrated. Final (index 3)", None),
    ("complete: the final index's result", job(COMPLETE), [done(0), done(1), done(2), done(3, "00:04", FINAL_MSG)],
     "Succeeded", "", "", "int8 (KL)", "KL"),
    # A candidate retried after a crash can succeed after the final index (which waited for it):
    # its hand-on message is no result, the final index's is.
    ("complete, a retried candidate newest", job(COMPLETE),
     [done(0), pod(1, "Failed", term(), term(1, "Traceback\nRuntimeError: boom")), done(2), done(3, "00:04", FINAL_MSG),
      done(1, "00:05", attempt="b")], "Succeeded", "", "", "int8 (KL)", "KL"),
    ("complete, the final pod gone (TTL)", job(COMPLETE), [done(0), done(1), done(2)],
     "Failed", "", "ResultUnavailable", "The Job completed but its pod is gone", None),
    ("a candidate's bad input fails the run", job(PFP), [done(0), pod(1, "Failed", term(), term(3, BAD_ALGO_DATA))],
     "Failed", "Calibrating", "ShapeMismatch", "Candidate avg (index 1): the model refuses samples.", None),
    ("a candidate crashes past the backoff limit", job(BACKOFF),
     [pod(2, "Failed", term(), term(1, "RuntimeError: a")), pod(2, "Failed", term(), term(1, "RuntimeError: b"), created="00:03",
                                                             attempt="b")],
     "Failed", "Calibrating", "StageFailed", "Candidate KL (index 2): The calibrate stage exited with code 1 (attempt 2)", None),
    ("a candidate crashed once: retried", job(), [done(0), pod(2, "Failed", term(), term(1, "RuntimeError: a"))],
     "Pending", "", "Retrying", "Attempt 1 failed (StageFailed: Candidate KL (index 2): The calibrate stage", None),
]


@pytest.mark.parametrize("job_obj,pods,phase,stage,reason,message,algo", [s[1:] for s in STATUS], ids=[s[0] for s in STATUS])
def test_sweep_status(job_obj, pods, phase, stage, reason, message, algo):
    v = observe(generation=3, spec=SPEC, spec_error=None, job=job_obj, pods=pods, now=NOW)
    assert (v.phase, v.stage, v.reason) == (phase, stage, reason)
    assert v.message.startswith(message), v.message
    assert ((v.results or {}).get("int8") or {}).get("algo") == algo


def test_a_one_pod_job_reads_as_before():
    # No completion index: the newest succeeded pod holds the result, and no message is led by a role.
    plain = job(COMPLETE)
    del plain["spec"]["completionMode"]
    finished = done(0, "00:04", FINAL_MSG)
    del finished["metadata"]["labels"]
    v = observe(generation=3, spec=SPEC, spec_error=None, job=plain, pods=[finished], now=NOW)
    assert v.phase == "Succeeded" and v.results["int8"]["algo"] == "KL" and v.message.startswith("int8 (KL)")


# A slot frees, the next index starts with its export: the run stays where it is (no step back), and
# its progress is read from the pod furthest on.
NO_STEP_BACK = [
    ("an older candidate calibrates, a new one exports", [pod(0, export=term(), calibrate=RUN, verify=INIT),
                                                          pod(1, export=RUN, verify=INIT, created="00:02")],
     "Calibrating", ("mv3-g3-0-a", "calibrate")),
    ("a candidate done, the next one exports", [done(0), pod(1, export=RUN, verify=INIT, created="00:02")],
     "Calibrating", ("mv3-g3-1-a", "export")),
    ("the final index verifies, a retried candidate exports", [done(0), done(1), pod(3, export=term(), calibrate=term(), verify=RUN),
                                                               pod(2, export=RUN, verify=INIT, created="00:05")],
     "Verifying", ("mv3-g3-3-a", "verify")),
]


@pytest.mark.parametrize("pods,stage,target", [x[1:] for x in NO_STEP_BACK], ids=[x[0] for x in NO_STEP_BACK])
def test_a_sweeps_stage_is_its_furthest_pods(pods, stage, target):
    from kubeslim_operator.progress import log_target

    v = observe(generation=3, spec=SPEC, spec_error=None, job=job(), pods=pods, now=NOW)
    assert (v.phase, v.stage) == ("Running", stage)
    assert log_target(job(), pods) == target


def test_a_pod_that_cannot_start_is_said_beside_the_one_waiting_for_it():
    # Index 1 runs and waits for index 0's export; index 0 finds no node: the run is not just "exporting".
    unschedulable = pod(0, "Pending")
    unschedulable["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                              "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]
    unschedulable["spec"] = {}
    v = observe(generation=3, spec=SPEC, spec_error=None, job=job(),
                pods=[unschedulable, pod(1, export=RUN, verify=INIT, created="00:02")], now=NOW)
    assert (v.phase, v.stage) == ("Running", "Exporting")
    assert v.message.startswith("0 of 3 candidates calibrated. Candidate avg (index 1): Pod mv3-g3-1-a is running the export")
    assert "Candidate hist (index 0): No node can run the pod: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu" \
        in v.message
