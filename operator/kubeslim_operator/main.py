"""kopf registration only: settings, login, indexes and event handlers. The work is elsewhere:
handlers/reconcile.py orchestrates; decide.py, jobs.py and status/ are pure.

The operator's state lives in kopf's operator memo (`kopf.run(memo=kopf.Memo(config=...))` in
__main__): startup adds the memory trimmer, login the API client, the reconciler and the scheduler.
kopf hands each resource handler a shallow copy of that memo, made when it first meets an object;
watching starts only after startup and login, so every copy holds the same objects.

Only watch-event handlers and indexes are used (no @kopf.on.create/update): they need no
progress annotations, finalizers or diff-base writes on the QuantizationJob, so the operator's
only writes are the Job, the status and events, and every pass is level-triggered from what the
watches show (restart-safe by construction).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

import kopf

from . import constants as c
from . import memory, metrics
from .config import OperatorConfig
from .handlers.reconcile import Reconciler
from .kube import Kube, in_cluster_server
from .persistence import NoDiffBaseStorage
from .objects import job_finished, owner_key_of_job, owner_key_of_pod, trim_job, trim_pod, trim_qj
from .scheduler import Scheduler

log = logging.getLogger("kubeslim_operator")

CHILD_LABELS = {c.LABEL_MANAGED_BY: c.MANAGER}


def login_info(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(settings=settings, **kwargs)
    if info is None:
        return kopf.login_with_kubeconfig(settings=settings, **kwargs)
    server = in_cluster_server(dict(os.environ))
    return dataclasses.replace(info, server=server) if server else info


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    if "config" not in memo:            # run by `kopf run` rather than __main__
        memo.config = OperatorConfig.from_env()
    config: OperatorConfig = memo.config
    settings.posting.enabled = False          # events are the reconciler's, one per transition
    settings.scanning.disabled = True         # no CRD/namespace watches (and no RBAC for them)
    settings.watching.label_selectors["batch", "v1", "jobs"] = c.CHILD_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = c.CHILD_SELECTOR
    settings.persistence.diffbase_storage = NoDiffBaseStorage()   # no change-detecting handlers
    settings.watching.server_timeout = 600
    settings.networking.request_timeout = 60
    # With leader election the endpoint is already up (leader.py serves it on the standby too).
    metrics.start(0 if config.leader_election else config.metrics_port,
                  lambda: memo.reconciler.phases() if "reconciler" in memo else [])
    memo.trimmer = asyncio.get_running_loop().create_task(memory.trim_forever())


@kopf.on.login()
def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = login_info(settings=settings, **kwargs)
    if info is not None and "kube" not in memo:      # a re-login (HTTP 401) keeps the client
        config: OperatorConfig = memo.config
        memo.kube = Kube(info, concurrency=config.api_concurrency,
                         relogin=lambda: login_info(settings=settings, logger=log),
                         on_request=metrics.count_request)
        memo.reconciler = Reconciler(config, memo.kube)
        memo.scheduler = Scheduler(memo.reconciler.reconcile, concurrency=config.api_concurrency * 2)
    return info


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "trimmer" in memo:
        memo.trimmer.cancel()
    if "scheduler" in memo:
        await memo.scheduler.close()
    if "kube" in memo:
        await memo.kube.close()


# -- indexes: kopf fills them from the initial listings before any handler below runs ----------

@kopf.index(c.GROUP, c.VERSION, c.PLURAL)
async def qj_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    return {(namespace, name): trim_qj(dict(body))}


# Jobs and Pods only trigger a pass for their QuantizationJob. That happens here, in the index
# handlers kopf calls for every watch event anyway, rather than in @kopf.on.event handlers: those
# would double kopf's per-event work for the two busiest resources. Passes do not start before
# kopf has filled every index (Scheduler.ready, set by the first QuantizationJob handler call).

def _child(memo: kopf.Memo, key: tuple[str, str] | None, trim: Any, body: kopf.Body,
           now: bool = False) -> dict | None:
    if key is None:
        return None
    if "scheduler" in memo:
        memo.scheduler.enqueue(key, 0.0 if now else memo.config.status_coalesce_seconds)
    return {key: trim(dict(body))}


@kopf.index("batch", "v1", "jobs", labels=CHILD_LABELS)
async def job_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict | None:
    # A concluded Job is read at once: with a short ttlSecondsAfterFinished its pods (and the
    # results in their termination messages) are about to be deleted.
    trimmed = trim_job(dict(body))
    return _child(memo, owner_key_of_job(body), lambda _: trimmed, body, now=job_finished(trimmed))


@kopf.index("v1", "pods", labels=CHILD_LABELS)
async def pod_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict | None:
    return _child(memo, owner_key_of_pod(body), trim_pod, body)


def _bind(memo: kopf.Memo, kwargs: dict[str, Any]) -> tuple[Reconciler, Scheduler]:
    assert "reconciler" in memo and "scheduler" in memo, "login has not run"
    reconciler: Reconciler = memo.reconciler
    scheduler: Scheduler = memo.scheduler
    if reconciler.qjs is None:
        reconciler.bind(kwargs["qj_index"], kwargs["job_index"], kwargs["pod_index"])
        scheduler.ready = True       # kopf calls no handler before every index is filled
    return reconciler, scheduler


# -- triggers -------------------------------------------------------------------------------------

@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def qj_event(type: str, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
                   **kwargs: Any) -> None:
    reconciler, scheduler = _bind(memo, kwargs)
    meta = body.get("metadata") or {}
    if type == "DELETED":
        reconciler.forget(meta.get("uid", ""))
        scheduler.forget((namespace, name))
        return
    generation = int(meta.get("generation") or 1)
    reconciler.seen(meta.get("uid", ""), generation)
    fresh = reconciler.known_status(dict(body)).get("observedGeneration") != generation
    # A new QuantizationJob (or a new generation) gets its Job at once; anything else waits for
    # the coalescing window so that bursts become one pass.
    scheduler.enqueue((namespace, name), 0.0 if fresh else memo.config.status_coalesce_seconds)
