"""What Kueue says about a Job it holds: Kueue's webhook suspends a Job that names a queue and makes
a Workload for it; the Workload's conditions say why the Job waits. Kueue is optional: without it
nothing suspends a Job."""
from __future__ import annotations

import dataclasses
import re

from kubeslim_api import reasons

from .. import constants as c
from ..constants import Obj
from .verdict import Verdict, clause


@dataclasses.dataclass(frozen=True)
class Queue:
    """What the reconciler learnt of the Workload of a suspended Job."""
    workload: Obj | None = None        # trimmed (objects.trim_workload); None: Kueue has made none yet
    api: str = "served"                # served | absent (no Kueue Workload API) | forbidden (no RBAC to read it)


# Kueue's workload controller: "LocalQueue <name> doesn't exist".
_LOCAL_QUEUE_MISSING = re.compile(r"^LocalQueue \S+ doesn't exist")


def queued_verdict(job: Obj, queue: Queue | None) -> Verdict:
    """Why a suspended Job waits, in the words of its Workload's conditions."""
    meta = job.get("metadata") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    lq = (meta.get("labels") or {}).get(c.LABEL_KUEUE_QUEUE)
    if not lq:
        return Verdict(c.PENDING, reasons.QUEUED, f"Job {name} is suspended; it starts when it is resumed.")
    if queue is not None and queue.api == "absent":
        return Verdict(c.PENDING, reasons.KUEUE_UNAVAILABLE,
                       f"Job {name} is suspended for Kueue LocalQueue {lq} (spec.scheduling.queueName), but this "
                       "cluster serves no Kueue Workloads; install Kueue or remove spec.scheduling.queueName.")
    if queue is not None and queue.api == "forbidden":
        return Verdict(c.PENDING, reasons.QUEUED,
                       f"Job {name} waits in Kueue LocalQueue {lq}; the operator may not list Kueue Workloads "
                       "(its RBAC lacks workloads.kueue.x-k8s.io list) to say why.")
    wl = queue.workload if queue is not None else None
    if wl is None:
        return Verdict(c.PENDING, "", f"Job {name} waits for Kueue to create its Workload in LocalQueue {lq}.")
    conds = {x.get("type"): x for x in (wl.get("status") or {}).get("conditions") or []}
    cq = ((wl.get("status") or {}).get("admission") or {}).get("clusterQueue") or "its ClusterQueue"

    def true(t: str) -> bool:
        return (conds.get(t) or {}).get("status") == "True"

    if true("Admitted"):
        return Verdict(c.PENDING, "", f"Kueue admitted Job {name} in ClusterQueue {cq}; the Job starts.")
    if true("QuotaReserved"):
        return Verdict(c.PENDING, reasons.QUEUED,
                       f"Job {name} has quota in ClusterQueue {cq} (LocalQueue {lq}); Kueue waits for its admission checks.")
    reserved = conds.get("QuotaReserved")
    if reserved is None:
        # Not Queued yet: the status is only rewritten when its reason changes, and Kueue's answer
        # (why there is no quota) must be in the first Queued message.
        return Verdict(c.PENDING, "", f"Job {name} is in Kueue LocalQueue {lq}; Kueue has not yet evaluated its Workload "
                                      f"{(wl.get('metadata') or {}).get('name', '')}.")
    why = clause(reserved.get("message") or "", c.KUEUE_MESSAGE_MAX_CHARS)
    if reserved.get("reason") == "Inadmissible":
        if _LOCAL_QUEUE_MISSING.match(why):
            return Verdict(c.PENDING, reasons.LOCAL_QUEUE_NOT_FOUND,
                           f"Kueue LocalQueue {lq} (spec.scheduling.queueName) does not exist in namespace {namespace}; "
                           "create it or fix the name, and Kueue admits the Job.")
        return Verdict(c.PENDING, reasons.QUEUE_INADMISSIBLE,
                       f"Kueue cannot admit Job {name} from LocalQueue {lq}: {why or 'no reason given'}.")
    evicted = conds.get("Evicted") or {}
    before = f" (evicted earlier: {evicted.get('reason')}: {clause(evicted.get('message') or '', c.INNER_MESSAGE_MAX_CHARS)})" if true("Evicted") else ""
    return Verdict(c.PENDING, reasons.QUEUED,
                   f"Job {name} waits in Kueue LocalQueue {lq}{before}" + (f": {why}." if why else " for quota."))
