"""The chaos suite's verdicts (tests/cluster/chaos_harness.py) on made-up recordings: each fault it
must count is counted, and a clean run counts none."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))

from chaos_harness import (BAD_INPUT, CRASH, GATE, OK, OOM, Plan, Seen, analyse, backwards_steps,  # noqa: E402
                           linked_artifact_problems, model_uri, retry_allowed, weights_uri, wrong)


def st(gen, phase, reason="", **extra):
    return {"observedGeneration": gen, "phase": phase, "reason": reason, **extra}


@pytest.mark.parametrize("statuses,may_retry,steps", [
    ([st(1, "Pending"), st(1, "Running"), st(1, "Succeeded")], False, 0),
    ([st(1, "Running"), st(1, "Failed", "OOMKilled"), st(2, "Pending"), st(2, "Succeeded")], False, 0),
    ([st(1, "Running"), st(1, "Pending", "Retrying"), st(1, "Running"), st(1, "Failed", "StageFailed")], True, 0),
    ([st(1, "Running"), st(1, "Pending", "Retrying")], False, 1),           # a retry the plan does not allow
    ([st(1, "Running"), st(1, "Pending")], True, 1),                        # back to Pending without a retry
    ([st(1, "Succeeded"), st(1, "Running")], False, 1),                     # a final status taken back
    ([st(1, "Failed", "NoSuchKey"), st(1, "Failed", "StageFailed")], False, 1),
    ([st(2, "Running"), st(1, "Succeeded")], False, 1),                     # an older generation's status
    ([st(1, "Running"), {}], False, 1),                                     # the status emptied
], ids=["straight", "new-generation", "allowed-retry", "retry-not-allowed", "running-to-pending", "final-taken-back",
        "final-reason-changed", "older-generation", "emptied"])
def test_backwards_steps(statuses, may_retry, steps):
    assert len(backwards_steps(statuses, lambda gen: may_retry)) == steps


@pytest.mark.parametrize("plan,message,allowed", [
    (Plan(CRASH, 1, 0), "Attempt 1 failed (StageFailed: …); the Job retries.", True),
    (Plan(CRASH, 1, 0), "Attempt 2 failed (StageFailed: …); the Job retries.", False),
    (Plan(OOM, 0, 0), "Attempt 1 failed (OOMKilled: …); the Job retries.", False),
    (Plan(BAD_INPUT, 1, 0), "Attempt 1 failed (NoSuchKey: …); the Job retries.", False),   # FailJob by exit code 3
    (Plan(GATE, 1, 0), "Attempt 1 failed; the Job retries.", False),                       # FailJob by exit code 4
])
def test_retry_allowed(plan, message, allowed):
    assert retry_allowed(plan, message) is allowed


@pytest.mark.parametrize("plan,status,ok", [
    (Plan(OK, 0, 0), st(1, "Succeeded", artifacts={"model": model_uri("a", 1)}, results={"accuracyDrop": 0.0044}), True),
    (Plan(OK, 0, 0), st(1, "Succeeded", artifacts={"model": model_uri("b", 1)}, results={"accuracyDrop": 0.0044}), False),
    (Plan(OK, 0, 0), st(2, "Succeeded", artifacts={"model": model_uri("a", 1)}, results={"accuracyDrop": 0.0044}), False),
    (Plan(GATE, 0, 0), st(1, "Failed", "AccuracyGateFailed", artifacts={"model": model_uri("a", 1)}), True),
    (Plan(GATE, 0, 0), st(1, "Failed", "PodFailurePolicy"), False),
    (Plan(BAD_INPUT, 1, 0), st(1, "Failed", "NoSuchKey", message=f"{weights_uri('a', 1)} does not exist"), True),
    (Plan(OOM, 1, 0), st(1, "Failed", "OOMKilled", message="ran out of memory (128Mi) (attempt 2)"), True),
    (Plan(OOM, 1, 0), st(1, "Failed", "OOMKilled", message="ran out of memory (128Mi)"), False),   # the retry never ran
    (Plan(CRASH, 0, 0), st(1, "Failed", "StageFailed", message="after logging: RuntimeError: crash of a g1"), True),
])
def test_wrong(plan, status, ok):
    assert (wrong("a", 1, plan, status) is None) is ok


def qj(name, uid, gen, status):
    return {"metadata": {"name": name, "uid": uid, "generation": gen}, "status": status}


def job(uid, owner_uid, gen, concluded):
    conds = [{"type": "Complete", "status": "True"}] if concluded else []
    return {"metadata": {"uid": uid, "labels": {"kubeslim.io/quantizationjob-uid": owner_uid, "kubeslim.io/generation": str(gen)}},
            "status": {"conditions": conds}}


OK_STATUS = st(1, "Succeeded", artifacts={"model": model_uri("a", 1)}, results={"accuracyDrop": 0.0044})


def test_a_clean_run_counts_nothing_and_measures_the_lag():
    plans = {"a": {1: Plan(OK, 0, 0)}}
    qjs = [Seen(1.0, "ADDED", qj("a", "u1", 1, {})), Seen(2.0, "MODIFIED", qj("a", "u1", 1, st(1, "Running"))),
           Seen(5.5, "MODIFIED", qj("a", "u1", 1, OK_STATUS))]
    jobs = [Seen(1.1, "ADDED", job("j1", "u1", 1, False)), Seen(5.0, "MODIFIED", job("j1", "u1", 1, True))]
    f = analyse(plans, qjs, jobs, [], outages=[(3.0, 4.0)])
    assert (f["duplicates"], f["lost"], f["wrong"], f["backwards"], f["spurious_retrying"]) == (0, 0, 0, 0, 0)
    assert f["convergence_after_last_disturbance_s"] == 1.5
    assert f["status_lag_after_job_concluded_s"]["all"]["max"] == 0.5


def test_each_fault_is_counted():
    plans = {"a": {1: Plan(OK, 0, 0)}, "b": {1: Plan(OK, 0, 0)}, "c": {1: Plan(BAD_INPUT, 0, 0)}}
    qjs = [Seen(1.0, "ADDED", qj("a", "u1", 1, OK_STATUS)),
           Seen(1.0, "ADDED", qj("b", "u2", 1, st(1, "Succeeded", artifacts={"model": model_uri("a", 1)}))),
           Seen(1.0, "ADDED", qj("c", "u3", 1, st(1, "Pending", "Retrying", message="Attempt 1 failed; the Job retries.")))]
    jobs = [Seen(1.0, "ADDED", job("j1", "u1", 1, True)), Seen(1.0, "ADDED", job("j2", "u1", 1, True))]
    events = [{"involvedObject": {"name": "a"}, "reason": "Retrying", "message": "Attempt 1 failed; the Job retries."}]
    f = analyse(plans, qjs, jobs, events, outages=[])
    assert f["duplicates"] == 1 and "a/g1" in f["duplicate_detail"]       # two Jobs for one generation
    assert f["lost"] == 1 and f["lost_detail"][0].startswith("c:")         # never final
    assert f["wrong"] == 1 and "b" in f["wrong_detail"]                    # another run's result
    assert f["spurious_retrying"] == 2                                     # c's status and a's event


LINKED = {"artifacts": {"model": "s3://b/o/model.pdmodel", "params": "s3://b/o/model.pdiparams",
                        "report": "s3://b/o/report.html", "reportJson": "s3://b/o/report.json"},
          "results": {"int8": {"algo": "avg", "sizeBytes": 300, "top1": 0.96}}}
WHOLE = {"s3://b/o/model.pdmodel": 100, "s3://b/o/model.pdiparams": 200, "s3://b/o/report.html": 5, "s3://b/o/report.json": 5}
REPORT = {"results": {"int8": {"algo": "avg", "sizeBytes": 300, "top1": 0.96}}}


@pytest.mark.parametrize("sizes,report,problem", [
    (WHOLE, REPORT, None),
    ({**WHOLE, "s3://b/o/model.pdiparams": 120}, REPORT, "half written"),                      # a cut upload
    ({k: v for k, v in WHOLE.items() if not k.endswith("report.json")}, REPORT, "not in S3"),  # linked before uploaded
    (WHOLE, {"results": {"int8": {"algo": "hist", "sizeBytes": 300, "top1": 0.95}}}, "tells"),  # an older run's report
    (WHOLE, ValueError("truncated json"), "unreadable"),
], ids=["whole", "half-written", "missing", "other-run", "unreadable"])
def test_linked_artifact_problems(sizes, report, problem):
    def read_json(uri):
        if isinstance(report, Exception):
            raise report
        return report
    found = linked_artifact_problems(LINKED, sizes.get, read_json)
    assert (found == []) if problem is None else (len(found) == 1 and problem in found[0]), found


def test_a_status_without_links_has_no_artifact_problems():
    assert linked_artifact_problems({"phase": "Failed", "reason": "StorageUnavailable"}, lambda uri: None, lambda uri: {}) == []
