"""Pure helpers over the objects the operator watches: which QuantizationJob a Job or Pod belongs
to, and the trimmed copies kept in memory (a whole Pod is ~10 KiB; the operator needs ~1 KiB)."""
from __future__ import annotations

from . import constants as c
from .constants import Obj

Key = tuple[str, str]     # (namespace, QuantizationJob name)


def _meta(body: Obj) -> Obj:
    return body.get("metadata") or {}


def owner_key_of_job(body: Obj) -> Key | None:
    meta = _meta(body)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == c.KIND and (ref.get("apiVersion") or "").split("/")[0] == c.GROUP and ref.get("controller"):
            return meta.get("namespace") or "", ref.get("name") or ""
    return None


def owner_uid_of_job(body: Obj) -> str | None:
    for ref in _meta(body).get("ownerReferences") or []:
        if ref.get("kind") == c.KIND and ref.get("controller"):
            return ref.get("uid")
    return None


def owner_key_of_pod(body: Obj) -> Key | None:
    meta = _meta(body)
    name = (meta.get("annotations") or {}).get(c.ANNOTATION_OWNER_NAME)
    return (meta.get("namespace") or "", name) if name else None


def _pick(d: Obj | None, *keys: str) -> Obj:
    d = d or {}
    return {k: d[k] for k in keys if k in d and d[k] is not None}


def trim_job(body: Obj) -> Obj:
    meta, spec, st = _meta(body), body.get("spec") or {}, body.get("status") or {}
    return {
        "metadata": {**_pick(meta, "name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "ownerReferences"),
                     "labels": _pick(meta.get("labels"), c.LABEL_GENERATION, c.LABEL_OWNER_UID, c.LABEL_KUEUE_QUEUE)},
        # backoffLimit and podFailurePolicy tell whether a failed pod is retried (status.job_will_retry);
        # completionMode and completions which pod's result is the run's (status.sweep).
        "spec": _pick(spec, "suspend", "activeDeadlineSeconds", "backoffLimit", "podFailurePolicy", "completionMode",
                      "completions"),
        "status": {**_pick(st, "startTime", "completionTime", "active", "failed", "succeeded"),
                   "conditions": [_pick(x, "type", "status", "reason", "message", "lastTransitionTime")
                                  for x in st.get("conditions") or []]},
    }


def _trim_container_status(s: Obj) -> Obj:
    state = s.get("state") or {}
    out: Obj = {}
    if "running" in state:
        out["running"] = {}
    if "waiting" in state:
        out["waiting"] = _pick(state["waiting"], "reason", "message")
    if "terminated" in state:
        out["terminated"] = _pick(state["terminated"], "exitCode", "reason", "message")
    return {"name": s.get("name"), "state": out}


def trim_pod(body: Obj) -> Obj:
    meta, st = _meta(body), body.get("status") or {}
    labels = meta.get("labels") or {}
    return {
        "metadata": {**_pick(meta, "name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"),
                     "labels": _pick(labels, c.LABEL_JOB_NAME, c.LABEL_COMPLETION_INDEX, "batch.kubernetes.io/controller-uid",
                                     "controller-uid")},
        "spec": _pick(body.get("spec"), "nodeName"),
        "status": {
            **_pick(st, "phase", "reason", "message"),
            # DisruptionTarget: the podFailurePolicy ignores such failures (no retry is counted).
            "conditions": [_pick(x, "type", "status", "reason", "message") for x in st.get("conditions") or []
                           if x.get("type") in ("PodScheduled", "DisruptionTarget")],
            "initContainerStatuses": [_trim_container_status(s) for s in st.get("initContainerStatuses") or []],
            "containerStatuses": [_trim_container_status(s) for s in st.get("containerStatuses") or []],
        },
    }


def trim_workload(body: Obj) -> Obj:
    """What status.queued_verdict reads of a Kueue Workload."""
    st = body.get("status") or {}
    return {"metadata": _pick(_meta(body), "name", "creationTimestamp"),
            "status": {"admission": _pick(st.get("admission"), "clusterQueue"),
                       "conditions": [_pick(x, "type", "status", "reason", "message") for x in st.get("conditions") or []]}}


def trim_qj(body: Obj) -> Obj:
    meta = _meta(body)
    return {"metadata": _pick(meta, "name", "namespace", "uid", "generation", "creationTimestamp", "deletionTimestamp",
                              "resourceVersion"),
            "spec": body.get("spec") or {},
            "status": body.get("status") or {}}


def job_generation(job: Obj) -> int | None:
    raw = (_meta(job).get("labels") or {}).get(c.LABEL_GENERATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def job_finished(job: Obj) -> bool:
    return any(x.get("status") == "True" and x.get("type") in ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget")
               for x in (job.get("status") or {}).get("conditions") or [])


def deleting(obj: Obj) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def pod_belongs_to(pod: Obj, job: Obj) -> bool:
    labels = _meta(pod).get("labels") or {}
    job_uid = _meta(job).get("uid")
    controller = labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid")
    if controller and job_uid:
        return controller == job_uid
    return labels.get(c.LABEL_JOB_NAME) == _meta(job).get("name")
