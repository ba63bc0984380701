"""A fake API server for the reconciler and k8s-shaped QuantizationJobs, Jobs and Pods as the
watches (kopf's indexes) hold them, trimmed."""
from __future__ import annotations

import asyncio
import copy

from kubeslim_operator import constants as c
from kubeslim_operator.kube import ApiError
from kubeslim_operator.objects import trim_job
from tests.invalid_specs import VALID_SPEC

NS, NAME, UID = "ml", "qj", "uid-1"
KEY = (NS, NAME)


class FakeApi:
    """Records every request in order in `calls`; answers from `jobs`, `configmaps` and
    `workloads` (Job uid → Kueue Workloads). `create_error`: what a Job create raises (after
    recording it); `workloads_error`: what listing Workloads raises. Pod log reads go to
    `log_reads` (not `calls`: a pass reads a running stage's log besides its other requests) and
    are answered from `logs` ((pod, container) → text, an exception to raise, or an asyncio.Event
    the read waits for, then answering "")."""

    def __init__(self, *, jobs=None, configmaps=None, create_error: ApiError | None = None,
                 workloads=None, workloads_error: ApiError | None = None):
        self.jobs: dict[str, dict] = dict(jobs or {})
        self.configmaps: dict[str, dict] = dict(configmaps or {})
        self.workloads: dict[str, list[dict]] = dict(workloads or {})
        self.create_error = create_error
        self.workloads_error = workloads_error
        self.calls: list[tuple] = []
        self.logs: dict[tuple[str, str], str | Exception | asyncio.Event] = {}
        self.log_reads: list[tuple[str, str]] = []

    def of(self, verb: str) -> list[tuple]:
        return [x for x in self.calls if x[0] == verb]

    async def create_job(self, namespace, manifest):
        self.calls.append(("create", manifest["metadata"]["name"]))
        if self.create_error is not None:
            raise self.create_error
        body = copy.deepcopy(manifest)
        body["metadata"]["uid"] = f"job-uid-{len(self.of('create'))}"
        body["metadata"]["namespace"] = namespace
        self.jobs[body["metadata"]["name"]] = body
        return body

    async def get_job(self, namespace, name):
        self.calls.append(("get", name))
        return self.jobs[name]

    async def delete_job(self, namespace, name, uid=None):
        self.calls.append(("delete", name, uid))

    async def get_configmap(self, namespace, name):
        self.calls.append(("configmap", name))
        return self.configmaps.get(name)

    async def list_workloads(self, namespace, job_uid):
        self.calls.append(("workloads", job_uid))
        if self.workloads_error is not None:
            raise self.workloads_error
        return self.workloads.get(job_uid, [])

    async def read_log(self, namespace, pod, container, *, tail_lines, since_seconds, limit_bytes, timeout=None):
        self.log_reads.append((pod, container))
        answer = self.logs.get((pod, container), "")
        if isinstance(answer, asyncio.Event):           # a node that answers when the test says so
            await answer.wait()
            answer = ""
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def patch_status(self, namespace, name, status):
        self.calls.append(("status", status))
        return {"status": status}

    async def post_event(self, involved, type_, reason, message):
        self.calls.append(("event", type_, reason))

    @property
    def statuses(self) -> list[dict]:
        return [x[1] for x in self.of("status")]


def qj(generation=1, status=None, spec=None, deleting=False):
    meta = {"name": NAME, "namespace": NS, "uid": UID, "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": copy.deepcopy(spec or VALID_SPEC), "status": status or {}}


def job(generation=1, *conditions, name=None, uid=None, owner=UID, deleting=False, queue=None, suspend=False):
    """A Job of the QuantizationJob as the watch shows it; `conditions`: types that are True;
    `queue`: the Kueue queue label; `suspend`: held (by Kueue's webhook)."""
    meta = {"name": name or f"{NAME}-g{generation}", "namespace": NS, "uid": uid or f"job-uid-g{generation}",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{"apiVersion": c.API_VERSION, "kind": c.KIND, "name": NAME, "uid": owner,
                                 "controller": True}],
            "labels": {c.LABEL_GENERATION: str(generation), c.LABEL_OWNER_UID: owner}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:09:00Z"
    if queue:
        meta["labels"][c.LABEL_KUEUE_QUEUE] = queue
    return trim_job({"metadata": meta, "spec": {"backoffLimit": 0, "suspend": suspend},
                     "status": {"startTime": "2026-01-01T00:00:00Z",
                                **({"completionTime": "2026-01-01T00:05:00Z"} if "Complete" in conditions else {}),
                                "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:05:00Z"}
                                               for t in conditions]}})


def pod(of_job: dict, *, export=None, calibrate=None, phase="Pending", name="p1"):
    """A pod of `of_job`, scheduled; `export` / `calibrate`: container states."""
    inits = [{"name": n, "state": s} for n, s in (("export", export), ("calibrate", calibrate)) if s is not None]
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:01Z",
                         "labels": {"batch.kubernetes.io/controller-uid": of_job["metadata"]["uid"]}},
            "spec": {"nodeName": "gpu-0"},
            "status": {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "initContainerStatuses": inits, "containerStatuses": []}}


RUNNING = {"running": {}}


def waiting(reason, message=""):
    return {"waiting": {"reason": reason, "message": message}}


def done():
    return {"terminated": {"exitCode": 0, "reason": "Completed"}}
