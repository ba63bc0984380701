"""Owner mapping and trimming of watched objects; the coalescing work queue."""
from __future__ import annotations

import asyncio

import pytest

from kubeslim_operator import constants as c
from kubeslim_operator.objects import (job_finished, job_generation, owner_key_of_job, owner_key_of_pod,
                                       owner_uid_of_job, pod_belongs_to, trim_job, trim_pod)
from kubeslim_operator.scheduler import Scheduler

pytestmark = pytest.mark.unit

JOB = {"apiVersion": "batch/v1", "kind": "Job",
       "metadata": {"name": "a-g2", "namespace": "ml", "uid": "job-uid", "managedFields": [{"big": "x" * 1000}],
                    "labels": {c.LABEL_GENERATION: "2", c.LABEL_OWNER_UID: "qj-uid", "other": "x"},
                    "ownerReferences": [{"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob", "name": "a",
                                         "uid": "qj-uid", "controller": True}]},
       "spec": {"backoffLimit": 1, "template": {"spec": {"containers": [{"name": "verify"}]}}},
       "status": {"startTime": "t", "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": "x"}]}}
POD = {"metadata": {"name": "a-g2-xyz", "namespace": "ml", "annotations": {c.ANNOTATION_OWNER_NAME: "a"},
                    "labels": {c.LABEL_JOB_NAME: "a-g2", "batch.kubernetes.io/controller-uid": "job-uid"}},
       "spec": {"nodeName": "n1", "containers": [{"name": "verify", "env": [{"name": "KUBESLIM_SPEC", "value": "{}"}]}]},
       "status": {"phase": "Running", "podIP": "1.2.3.4",
                  "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                  "containerStatuses": [{"name": "verify", "image": "i", "imageID": "x",
                                         "state": {"terminated": {"exitCode": 4, "reason": "Error", "message": "{}",
                                                                  "startedAt": "s"}}}]}}


def test_job_owner_and_trim():
    assert owner_key_of_job(JOB) == ("ml", "a") and owner_uid_of_job(JOB) == "qj-uid"
    t = trim_job(JOB)
    assert "managedFields" not in t["metadata"] and "template" not in t["spec"]
    assert t["metadata"]["labels"] == {c.LABEL_GENERATION: "2", c.LABEL_OWNER_UID: "qj-uid"}
    assert job_generation(t) == 2 and job_finished(t)
    assert t["status"]["conditions"] == [{"type": "Complete", "status": "True"}]


def test_trim_keeps_what_decides_a_retry():
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}
    job = {**JOB, "spec": {**JOB["spec"], "podFailurePolicy": policy}}
    assert trim_job(job)["spec"] == {"backoffLimit": 1, "podFailurePolicy": policy}
    evicted = {**POD, "status": {**POD["status"], "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]}}
    assert trim_pod(evicted)["status"]["conditions"] == [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]


def test_foreign_job_has_no_owner():
    foreign = {"metadata": {"namespace": "ml", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                                    "name": "x", "controller": True}]}}
    assert owner_key_of_job(foreign) is None


def test_pod_owner_and_trim():
    assert owner_key_of_pod(POD) == ("ml", "a")
    t = trim_pod(POD)
    assert t["status"]["conditions"] == [{"type": "PodScheduled", "status": "True"}]
    assert t["status"]["containerStatuses"] == [{"name": "verify", "state": {"terminated": {"exitCode": 4, "reason": "Error", "message": "{}"}}}]
    assert "containers" not in t["spec"] and t["spec"]["nodeName"] == "n1"
    assert pod_belongs_to(t, trim_job(JOB))
    assert not pod_belongs_to(t, {"metadata": {"name": "a-g2", "uid": "another-uid"}})


def test_scheduler_coalesces_and_serialises():
    calls: list[str] = []
    running = 0
    peak = 0

    async def worker(key):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        calls.append(key)
        await asyncio.sleep(0.05)
        running -= 1
        return None

    async def go():
        s = Scheduler(worker)
        s.ready = True
        for _ in range(10):
            s.enqueue("a", 0.02)         # a burst → one pass
        s.enqueue("b", 0.0)
        await asyncio.sleep(0.04)
        s.enqueue("a", 0.0)              # during a's pass → exactly one more pass after it
        s.enqueue("a", 0.0)
        await asyncio.sleep(0.3)
        await s.close()

    asyncio.run(go())
    assert calls.count("b") == 1
    assert calls.count("a") == 2
    assert peak <= 2


def test_scheduler_waits_until_ready_and_retries_errors():
    calls = []

    async def worker(key):
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("API hiccup")
        return None

    async def go():
        import kubeslim_operator.scheduler as sched
        old = sched.ERROR_BACKOFF
        sched.ERROR_BACKOFF = (0.05,)
        try:
            s = Scheduler(worker)
            s.enqueue("k", 0.0)
            await asyncio.sleep(0.1)
            assert calls == []           # not ready: kopf has not filled the indexes yet
            s.ready = True
            await asyncio.sleep(0.8)
            await s.close()
        finally:
            sched.ERROR_BACKOFF = old

    asyncio.run(go())
    assert calls == ["k", "k"]
