"""The pure status derivation: Job + Pods (+ what the reconciler knows) → status."""
from __future__ import annotations

import pytest

from kubeslim_api.contract import (Artifacts, Candidate, Gate, Int8Metrics, ModelMetrics, Results, StageResult,
                                   encode)
from kubeslim_api.spec import SpecError, parse_spec
from kubeslim_operator.jobs import pod_failure_policy
from kubeslim_operator.status import (Fact, build_status, config_problem_from_kubelet, is_final_for,
                                      job_will_retry, observe, transition_event)

pytestmark = pytest.mark.unit

SPEC = parse_spec({
    "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
    "data": {"calibration": {"uri": "s3://d/train/", "listFile": "t.txt"},
             "evaluation": {"uri": "s3://d/val/", "listFile": "v.txt"}},
    "output": {"uri": "s3://m/out/"},
    "resources": {"memory": "8Gi"},
})
NOW = "2026-01-01T00:10:00Z"

RESULTS = Results(backend="cpu-onednn-int8",
                  fp32=ModelMetrics(top1=0.7532, top5=0.9231, latency_ms=4.1, size_bytes=21990000),
                  int8=Int8Metrics(algo="hist", top1=0.7488, top5=0.921, latency_ms=1.9, size_bytes=5900000),
                  accuracy_drop=0.0044, speedup=2.15,
                  candidates=[Candidate(algo="hist", top1=0.7488, accuracy_drop=0.0044)])
ARTIFACTS = Artifacts(model="s3://m/out/model.pdmodel", report="s3://m/out/report.html")
OK_MSG = encode(StageResult(stage="verify", ok=True, results=RESULTS, artifacts=ARTIFACTS,
                            gate=Gate(metric="top1", max_accuracy_drop=0.01, passed=True)))
GATE_MSG = encode(StageResult(stage="verify", ok=False, reason="AccuracyGateFailed",
                              message="int8 lost 0.0044 top1, more than maxAccuracyDrop 0.001",
                              results=RESULTS, artifacts=ARTIFACTS,
                              gate=Gate(metric="top1", max_accuracy_drop=0.001, passed=False)))
BAD_INPUT_MSG = encode(StageResult(stage="export", ok=False, reason="NoSuchKey",
                                   message="s3://m/w.pdparams does not exist; upload the weights or fix spec.model.builtin.weights"))


# -- k8s-shaped builders ------------------------------------------------------------------------

def term(code=0, reason=None, message=""):
    return {"terminated": {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"), "message": message}}


RUN = {"running": {"startedAt": "2026-01-01T00:01:00Z"}}


def wait(reason, message=""):
    return {"waiting": {"reason": reason, "message": message}}


def pod(name="mv3-int8-g1-abcde", phase="Pending", export=None, calibrate=None, verify=None,
        scheduled=True, unsched_msg="", created="2026-01-01T00:00:01Z", node="gpu-0", deleting=False):
    conds = []
    if scheduled is True:
        conds.append({"type": "PodScheduled", "status": "True"})
    elif scheduled is False:
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unsched_msg})
    st = {"phase": phase, "conditions": conds}
    inits = [{"name": n, "state": s} for n, s in (("export", export), ("calibrate", calibrate)) if s is not None]
    if inits:
        st["initContainerStatuses"] = inits
    if verify is not None:
        st["containerStatuses"] = [{"name": "verify", "state": verify}]
    meta = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"metadata": meta, "spec": {"nodeName": node if scheduled else ""}, "status": st}


def job(*conds, suspend=False, deadline=7200, **spec):
    return {"metadata": {"name": "mv3-int8-g1"},
            "spec": {"suspend": suspend, "activeDeadlineSeconds": deadline, **spec},
            "status": {"startTime": "2026-01-01T00:00:00Z",
                       **({"completionTime": "2026-01-01T00:05:00Z"} if ("Complete", "True") in [(x[0], "True") for x in conds] else {}),
                       "conditions": [{"type": t, "status": "True", "reason": r, "message": m,
                                       "lastTransitionTime": "2026-01-01T00:05:00Z"} for t, r, m in conds]}}


COMPLETE = ("Complete", "", "")
SUCCESS_CRITERIA = ("SuccessCriteriaMet", "CompletionsReached", "")
DEADLINE = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
BACKOFF = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
PFP = ("Failed", "PodFailurePolicy", "Container export for pod x failed with exit code 3 matching FailJob rule at index 1")
FAILURE_TARGET = ("FailureTarget", "PodFailurePolicy", "Container export failed with exit code 3")

DONE = dict(export=term(), calibrate=term())


def run(job_obj, pods, **kw):
    return observe(generation=1, spec=SPEC, spec_error=None, job=job_obj, pods=pods, now=NOW, **kw)


# -- the table: (id, job, pods, phase, stage, reason) ---------------------------------------------

CASES = [
    ("no pod yet", job(), [], "Pending", "", ""),
    ("kueue suspended", job(suspend=True), [], "Pending", "", "Queued"),
    ("waiting for scheduler", job(), [pod(scheduled=None)], "Pending", "", ""),
    ("unschedulable", job(), [pod(scheduled=False, unsched_msg="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")],
     "Pending", "", "Unschedulable"),
    ("scheduled, creating", job(), [pod(export=wait("PodInitializing"))], "Pending", "", ""),
    ("exporting", job(), [pod(export=RUN, calibrate=wait("PodInitializing"), verify=wait("PodInitializing"))],
     "Running", "Exporting", ""),
    ("calibrating", job(), [pod(export=term(), calibrate=RUN, verify=wait("PodInitializing"))], "Running", "Calibrating", ""),
    ("verifying", job(), [pod(phase="Running", **DONE, verify=RUN)], "Running", "Verifying", ""),
    # A real kubelet shows the next stage waiting for a moment after the previous one exits.
    ("between export and calibrate", job(), [pod(export=term(), calibrate=wait("PodInitializing"), verify=wait("PodInitializing"))],
     "Running", "Calibrating", ""),
    ("between calibrate and verify", job(), [pod(phase="Running", **DONE, verify=wait("PodInitializing"))], "Running", "Verifying", ""),
    # verify exited 0; the kubelet sets phase Succeeded a moment later: still Running, never Pending.
    ("all stages exited, phase not yet updated", job(), [pod(phase="Running", **DONE, verify=term(message=OK_MSG))],
     "Running", "Verifying", ""),
    ("missing secret", job(), [pod(export=wait("CreateContainerConfigError", 'secret "s3-creds" not found'))],
     "Pending", "", "SecretNotFound"),
    ("missing key", job(), [pod(export=wait("CreateContainerConfigError",
                                            "couldn't find key AWS_ACCESS_KEY_ID in Secret ml/s3-creds"))],
     "Pending", "", "SecretKeyNotFound"),
    ("other config error", job(), [pod(export=wait("CreateContainerConfigError", "container has runAsNonRoot and image will run as root"))],
     "Pending", "", "CreateContainerConfigError"),
    ("err image pull is retried", job(), [pod(export=wait("ErrImagePull", "pull access denied"))], "Pending", "", "ErrImagePull"),
    ("image pull back-off", job(), [pod(export=wait("ImagePullBackOff", 'Back-off pulling image "x"'))],
     "Failed", "Exporting", "ImagePullBackOff"),
    ("retrying after a crash", job(), [pod(phase="Failed", export=term(1, message="Traceback\nRuntimeError: boom"))],
     "Pending", "", "Retrying"),
    ("retry running", job(), [pod(phase="Failed", export=term(75, message="x")),
                              pod(name="p2", created="2026-01-01T00:02:00Z", export=RUN)], "Running", "Exporting", ""),
    ("pod done, job not yet", job(), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))],
     "Running", "Verifying", ""),
    ("success", job(COMPLETE), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))], "Succeeded", "", ""),
    ("success criteria met", job(SUCCESS_CRITERIA), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))],
     "Succeeded", "", ""),
    ("success after a retry", job(COMPLETE), [pod(phase="Failed", export=term(75)),
                                              pod(name="p2", created="2026-01-01T00:02:00Z", phase="Succeeded", **DONE,
                                                  verify=term(0, message=OK_MSG))], "Succeeded", "", ""),
    ("bad result message", job(COMPLETE), [pod(phase="Succeeded", **DONE, verify=term(0, message="hello"))],
     "Failed", "Verifying", "BadResultMessage"),
    ("result json of another version", job(COMPLETE),
     [pod(phase="Succeeded", **DONE, verify=term(0, message='{"version": 9, "stage": "verify", "ok": true}'))],
     "Failed", "Verifying", "BadResultMessage"),
    ("complete but pod gone", job(COMPLETE), [], "Failed", "", "ResultUnavailable"),
    ("gate failed", job(PFP), [pod(phase="Failed", **DONE, verify=term(4, message=GATE_MSG))],
     "Failed", "Verifying", "AccuracyGateFailed"),
    ("gate failed, failure target", job(FAILURE_TARGET), [pod(phase="Failed", **DONE, verify=term(4, message=GATE_MSG))],
     "Failed", "Verifying", "AccuracyGateFailed"),
    ("bad input", job(PFP), [pod(phase="Failed", export=term(3, message=BAD_INPUT_MSG))], "Failed", "Exporting", "NoSuchKey"),
    ("bad input without a result", job(PFP), [pod(phase="Failed", export=term(3, message="oops"))],
     "Failed", "Exporting", "BadResultMessage"),
    ("oom killed", job(BACKOFF), [pod(phase="Failed", export=term(), calibrate=term(137, "OOMKilled"))],
     "Failed", "Calibrating", "OOMKilled"),
    ("crash twice", job(BACKOFF), [pod(phase="Failed", export=term(1, message="ValueError: x")),
                                   pod(name="p2", created="2026-01-01T00:02:00Z", phase="Failed", export=term(1, message="ValueError: y"))],
     "Failed", "Exporting", "StageFailed"),
    ("transient with a result", job(BACKOFF), [pod(phase="Failed", export=term(75, message=encode(StageResult(
        stage="export", ok=False, reason="SlowDown", message="S3 throttled the download"))))], "Failed", "Exporting", "SlowDown"),
    ("backoff, pods gone", job(BACKOFF), [], "Failed", "", "BackoffLimitExceeded"),
    ("deadline", job(DEADLINE), [pod(export=term(), calibrate=RUN, deleting=True)], "Failed", "Calibrating", "DeadlineExceeded"),
    ("deadline, pods gone", job(DEADLINE), [], "Failed", "", "DeadlineExceeded"),
]


@pytest.mark.parametrize("job_obj,pods,phase,stage,reason", [x[1:] for x in CASES], ids=[x[0] for x in CASES])
def test_observe(job_obj, pods, phase, stage, reason):
    v = run(job_obj, pods)
    assert (v.phase, v.stage, v.reason) == (phase, stage, reason)
    assert v.message and v.message.endswith(".") and "\n" not in v.message
    if phase == "Failed":
        assert v.completion_time


def test_unschedulable_keeps_the_schedulers_message():
    msg = "0/3 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}, 2 Insufficient nvidia.com/gpu."
    v = run(job(), [pod(scheduled=False, unsched_msg=msg)])
    assert v.scheduled == Fact(False, "Unschedulable", msg)
    assert msg.rstrip(".") in v.message


def test_success_carries_results_artifacts_and_gate():
    v = run(job(COMPLETE), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))])
    assert v.results == RESULTS.dump()
    assert v.results["int8"]["algo"] == "hist" and v.results["candidates"][0]["accuracyDrop"] == 0.0044
    assert v.artifacts == {"model": "s3://m/out/model.pdmodel", "report": "s3://m/out/report.html"}
    assert v.gate.status is True and v.gate.reason == "AccuracyGatePassed"
    assert v.completion_time == "2026-01-01T00:05:00Z" and v.start_time == "2026-01-01T00:00:00Z"
    assert "0.7488" in v.message and "s3://m/out/model.pdmodel" in v.message


def test_success_under_metric_fidelity_names_the_output_cosine():
    fid = {"cosine": 0.9981, "sqnrDb": 27.5, "maxAbsError": 0.4,
           "perOutput": [{"name": "boxes", "comparable": True, "cosine": 0.9981, "sqnrDb": 27.5, "maxAbsError": 0.4},
                         {"name": "nms", "comparable": False, "reason": "shape differs"}]}
    results = Results.model_validate({"backend": "cpu-onednn-int8", "accuracyDrop": 0.0019, "speedup": 1.4,
                                      "fp32": {"fidelity": {"cosine": 1.0, "maxAbsError": 0.0}},
                                      "int8": {"algo": "avg", "fidelity": fid}})
    msg = encode(StageResult(stage="verify", ok=True, results=results, artifacts=ARTIFACTS,
                             gate=Gate(metric="fidelity", max_accuracy_drop=0.01, passed=True, min_cosine=0.99)))
    v = run(job(COMPLETE), [pod(phase="Succeeded", **DONE, verify=term(0, message=msg))])
    assert "int8 (avg) fidelity 0.9981 vs fp32 1.0000" in v.message
    assert v.results["int8"]["fidelity"]["perOutput"][1] == {"name": "nms", "comparable": False, "reason": "shape differs"}


def test_gate_failure_keeps_results():
    v = run(job(PFP), [pod(phase="Failed", **DONE, verify=term(4, message=GATE_MSG))])
    assert v.gate.status is False and v.results["accuracyDrop"] == 0.0044
    assert "maxAccuracyDrop" in v.message


def test_oom_message_names_the_limit_and_the_fix():
    v = run(job(BACKOFF), [pod(phase="Failed", export=term(), calibrate=term(137, "OOMKilled"))])
    assert "8Gi" in v.message and "spec.resources.memory" in v.message


def test_crash_message_quotes_only_the_last_log_line():
    v = run(job(BACKOFF), [pod(phase="Failed", export=term(1, message="line1\nline2\nValueError: the end"))])
    assert "ValueError: the end" in v.message and "line1" not in v.message


@pytest.mark.parametrize("kubelet,reason,needle", [
    ('secret "s3-creds" not found', "SecretNotFound", "s3-creds"),
    ("couldn't find key secret in Secret ml/s3-creds", "SecretKeyNotFound", "ml/s3-creds has no key secret"),
    ('configmap "s3-ca" not found', "ConfigMapNotFound", "s3-ca"),
    ("something else", "CreateContainerConfigError", "something else"),
])
def test_config_problem_from_kubelet(kubelet, reason, needle):
    fact = config_problem_from_kubelet(kubelet)
    assert fact.status is False and fact.reason == reason and needle in fact.message


@pytest.mark.parametrize("kw,phase,reason", [
    ({"spec_error": SpecError("spec.model.inputShape", "required")}, "Failed", "InvalidSpec"),
    ({"config_problem": Fact(False, "ConfigMapNotFound", "ConfigMap s3-ca does not exist.")}, "Pending", "ConfigMapNotFound"),
    ({"job_conflict": "mv3-int8-g1"}, "Pending", "JobNameConflict"),
    ({"job_deleted": True}, "Failed", "JobDeleted"),
    ({}, "Pending", ""),
])
def test_observe_without_a_job(kw, phase, reason):
    args = dict(generation=1, spec=SPEC, spec_error=None, job=None, pods=[], now=NOW)
    args.update(kw)
    v = observe(**args)
    assert (v.phase, v.reason) == (phase, reason)
    assert "spec.model.inputShape" in v.message if reason == "InvalidSpec" else True


# -- build_status: kstatus conditions ---------------------------------------------------------

def conds(status):
    return {x["type"]: x for x in status["conditions"]}


@pytest.mark.parametrize("pods_,job_obj,ready,reconciling,stalled", [
    ([pod(export=RUN)], job(), "False", "True", "False"),
    ([pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))], job(COMPLETE), "True", "False", "False"),
    ([pod(phase="Failed", **DONE, verify=term(4, message=GATE_MSG))], job(PFP), "False", "False", "True"),
    ([pod(scheduled=False, unsched_msg="no")], job(), "False", "True", "False"),
])
def test_kstatus_conditions(pods_, job_obj, ready, reconciling, stalled):
    st = build_status(run(job_obj, pods_), generation=1, job_name="mv3-int8-g1", prev=None, now=NOW)
    cs = conds(st)
    assert (cs["Ready"]["status"], cs["Reconciling"]["status"], cs["Stalled"]["status"]) == (ready, reconciling, stalled)
    assert st["observedGeneration"] == 1 and all(x["observedGeneration"] == 1 for x in st["conditions"])
    assert st["jobName"] == "mv3-int8-g1"


def test_gate_condition_and_results_in_status():
    st = build_status(run(job(PFP), [pod(phase="Failed", **DONE, verify=term(4, message=GATE_MSG))]),
                      generation=1, job_name="j", prev=None, now=NOW)
    assert conds(st)["AccuracyGate"]["status"] == "False"
    assert conds(st)["Stalled"]["reason"] == "AccuracyGateFailed"
    assert st["results"]["int8"]["top1"] == 0.7488 and st["artifacts"]["model"].endswith("model.pdmodel")
    assert st["completionTime"] == "2026-01-01T00:05:00Z"


def test_last_transition_time_is_kept_while_a_condition_holds():
    v1 = run(job(), [pod(export=RUN)])
    s1 = build_status(v1, generation=1, job_name="j", prev=None, now="T1")
    v2 = run(job(), [pod(export=term(), calibrate=RUN)])
    s2 = build_status(v2, generation=1, job_name="j", prev=s1, now="T2")
    assert conds(s2)["Ready"]["lastTransitionTime"] == "T1"        # still False
    assert conds(s2)["Scheduled"]["lastTransitionTime"] == "T1"
    v3 = run(job(COMPLETE), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))])
    s3 = build_status(v3, generation=1, job_name="j", prev=s2, now="T3")
    assert conds(s3)["Ready"]["lastTransitionTime"] == "T3"
    assert conds(s3)["Scheduled"] == conds(s2)["Scheduled"]       # kept: nothing new about it


def test_same_observation_same_status():
    v = run(job(), [pod(export=RUN)])
    s1 = build_status(v, generation=1, job_name="j", prev=None, now="T1")
    s2 = build_status(v, generation=1, job_name="j", prev=s1, now="T2")
    assert s1 == s2


def test_new_generation_forgets_the_old_run():
    done = build_status(run(job(COMPLETE), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))]),
                        generation=1, job_name="j-g1", prev=None, now="T1")
    v = observe(generation=2, spec=SPEC, spec_error=None, job=None, pods=[], now="T2")
    st = build_status(v, generation=2, job_name="j-g2", prev=done, now="T2")
    assert st["results"] is None and st["artifacts"] is None and st["completionTime"] is None
    assert "AccuracyGate" not in conds(st) and "Scheduled" not in conds(st)
    assert st["phase"] == "Pending" and st["observedGeneration"] == 2


@pytest.mark.parametrize("status,gen,final", [
    ({"observedGeneration": 1, "phase": "Succeeded"}, 1, True),
    ({"observedGeneration": 1, "phase": "Failed"}, 1, True),
    ({"observedGeneration": 1, "phase": "Succeeded"}, 2, False),
    ({"observedGeneration": 1, "phase": "Running"}, 1, False),
    (None, 1, False),
])
def test_is_final_for(status, gen, final):
    assert is_final_for(status, gen) is final


@pytest.mark.parametrize("prev,new,expected", [
    (None, {"observedGeneration": 1, "phase": "Pending", "message": "m."}, ("Normal", "Pending")),
    ({"observedGeneration": 1, "phase": "Pending"}, {"observedGeneration": 1, "phase": "Pending", "message": "x"}, None),
    # a run moving on in a generation already announced: the status says it, no Event
    ({"observedGeneration": 1, "phase": "Pending"}, {"observedGeneration": 1, "phase": "Running", "stage": "Calibrating"},
     None),
    ({"observedGeneration": 1, "phase": "Running", "stage": "Calibrating"},
     {"observedGeneration": 1, "phase": "Running", "stage": "Verifying"}, None),
    ({"observedGeneration": 1, "phase": "Pending", "reason": "Retrying"}, {"observedGeneration": 1, "phase": "Pending"}, None),
    ({"observedGeneration": 1, "phase": "Pending", "reason": "Retrying"},
     {"observedGeneration": 1, "phase": "Running", "stage": "Exporting"}, None),
    # …but a run first seen running, or a new generation's, is announced
    (None, {"observedGeneration": 1, "phase": "Running", "stage": "Calibrating"}, ("Normal", "Calibrating")),
    ({"observedGeneration": 1, "phase": "Succeeded"}, {"observedGeneration": 2, "phase": "Running", "stage": "Exporting"},
     ("Normal", "Exporting")),
    ({"observedGeneration": 1, "phase": "Running", "stage": "Calibrating"},
     {"observedGeneration": 1, "phase": "Pending", "reason": "Retrying"}, ("Warning", "Retrying")),
    ({"observedGeneration": 1, "phase": "Pending", "reason": "Queued"}, {"observedGeneration": 1, "phase": "Pending"}, None),
    ({"observedGeneration": 1, "phase": "Pending"}, {"observedGeneration": 1, "phase": "Pending", "reason": "Unschedulable"},
     ("Warning", "Unschedulable")),
    ({"observedGeneration": 1, "phase": "Running"}, {"observedGeneration": 1, "phase": "Failed", "reason": "OOMKilled"},
     ("Warning", "OOMKilled")),
    ({"observedGeneration": 1, "phase": "Running"}, {"observedGeneration": 1, "phase": "Succeeded"}, ("Normal", "Succeeded")),
    ({"observedGeneration": 1, "phase": "Succeeded"}, {"observedGeneration": 2, "phase": "Pending"}, ("Normal", "Pending")),
])
def test_transition_event(prev, new, expected):
    ev = transition_event(prev, new)
    assert (ev.type, ev.reason) == expected if expected else ev is None


def test_pod_done_but_job_not_concluded_is_held():
    v = run(job(), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))])
    assert v.hold is True
    assert run(job(COMPLETE), [pod(phase="Succeeded", **DONE, verify=term(0, message=OK_MSG))]).hold is False


@pytest.mark.parametrize("conclusion", [COMPLETE, SUCCESS_CRITERIA, PFP, BACKOFF, FAILURE_TARGET],
                         ids=["complete", "success-criteria", "pod-failure-policy", "backoff", "failure-target"])
@pytest.mark.parametrize("seconds_later,held", [(10, True), (299, True), (300, False)])
def test_job_concluded_while_its_pod_is_seen_running_is_held(conclusion, seconds_later, held):
    """The pods' watch behind the Jobs' (after an outage): no final verdict from the Job's condition
    alone while the pod's final state is on its way — but not forever."""
    now = f"2026-01-01T00:{5 + seconds_later // 60:02d}:{seconds_later % 60:02d}Z"
    running = pod(phase="Running", **DONE, verify=RUN)
    v = observe(generation=1, spec=SPEC, spec_error=None, job=job(conclusion), pods=[running], now=now)
    assert v.hold is held and (held or v.final)


def test_deadline_with_a_running_pod_is_not_held():
    v = observe(generation=1, spec=SPEC, spec_error=None, job=job(DEADLINE), pods=[pod(phase="Running", **DONE, verify=RUN)],
                now="2026-01-01T00:05:01Z")
    assert (v.phase, v.reason, v.hold) == ("Failed", "DeadlineExceeded", False)


@pytest.mark.parametrize("change,is_visible", [
    ({"message": "other words"}, False),
    ({"conditions": []}, False),
    ({"phase": "Running"}, True),
    ({"reason": "Unschedulable"}, True),
    ({"stage": "Calibrating"}, True),
    ({"observedGeneration": 2}, True),
    ({"results": {"backend": "cpu"}}, True),
])
def test_visible_changes(change, is_visible):
    from kubeslim_operator.status import visible
    base = {"observedGeneration": 1, "phase": "Pending", "reason": "", "stage": "", "message": "m", "conditions": [{"type": "Ready"}]}
    assert (visible(base) != visible({**base, **change})) is is_visible


# -- will the Job retry? (a failed pod's event may come before the Job's failure condition) -----

def ours(backoff, failed=None):
    """A Job as the operator builds it, its failure not yet concluded."""
    j = job(backoffLimit=backoff, podFailurePolicy=pod_failure_policy())
    if failed is not None:
        j["status"]["failed"] = failed
    return j


def disrupted(p):
    p["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True"})
    return p


CRASH = dict(phase="Failed", export=term(1, message="RuntimeError: boom"))
P2 = dict(name="p2", created="2026-01-01T00:02:00Z")

RETRY_CASES = [
    ("crash, backoff left", ours(1), [pod(**CRASH)], True),
    ("crash, backoffLimit 0", ours(0), [pod(**CRASH)], False),
    ("second crash uses up backoffLimit 1", ours(1), [pod(**CRASH), pod(**P2, **CRASH)], False),
    ("bad input exit 3 fails the Job", ours(3), [pod(phase="Failed", export=term(3, message=BAD_INPUT_MSG))], False),
    ("gate exit 4 in verify fails the Job", ours(3), [pod(phase="Failed", **DONE, verify=term(4, message=GATE_MSG))], False),
    ("oom, backoffLimit 0", ours(0), [pod(phase="Failed", export=term(), calibrate=term(137, "OOMKilled"))], False),
    ("oom, backoff left", ours(1), [pod(phase="Failed", export=term(), calibrate=term(137, "OOMKilled"))], True),
    ("eviction is ignored, not counted", ours(0), [disrupted(pod(**CRASH))], True),
    ("the Job's count is ahead of its pods", ours(1, failed=2), [pod(**CRASH)], False),
    ("transient exit 75 with backoff left", ours(2), [pod(phase="Failed", export=term(75))], True),
    ("no policy: exit 3 is just a failure", job(backoffLimit=1), [pod(phase="Failed", export=term(3))], True),
    ("no backoffLimit: the batch/v1 default of 6", job(), [pod(**CRASH)] * 6, True),
    ("exit code 0 never matches a rule",
     job(backoffLimit=1, podFailurePolicy={"rules": [{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [75]}}]}),
     [pod(phase="Failed", export=term(0), calibrate=term(75))], True),
    ("a rule for another container does not match",
     job(backoffLimit=1, podFailurePolicy={"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "verify", "operator": "In", "values": [3]}}]}),
     [pod(phase="Failed", export=term(3))], True),
]


@pytest.mark.parametrize("job_obj,pods,expected", [x[1:] for x in RETRY_CASES], ids=[x[0] for x in RETRY_CASES])
def test_job_will_retry(job_obj, pods, expected):
    assert job_will_retry(job_obj, pods) is expected


@pytest.mark.parametrize("job_obj,pods,retries", [x[1:] for x in RETRY_CASES], ids=[x[0] for x in RETRY_CASES])
def test_retrying_is_said_only_when_the_job_retries(job_obj, pods, retries):
    v = run(job_obj, pods)
    if retries:
        assert (v.phase, v.reason, v.hold) == ("Pending", "Retrying", False) and "the Job retries" in v.message
    else:
        # Nothing is written until the Job's own verdict: that one names the cause.
        assert v.hold is True and v.reason != "Retrying" and "retries" not in v.message
