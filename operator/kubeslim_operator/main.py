"""kopf registration only: settings, login, indexes and event handlers. The work is elsewhere:
handlers/reconcile.py orchestrates; jobs.py and status.py are pure.

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


class _Runtime:
    config: OperatorConfig | None = None     # set by __main__ (or from the environment at startup)
    settings: kopf.OperatorSettings | None = None
    reconciler: Reconciler | None = None
    scheduler: Scheduler | None = None
    kube: Kube | None = None
    trimmer: asyncio.Task | None = None


RT = _Runtime()


def _login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(settings=settings, **kwargs)
    if info is None:
        return kopf.login_with_kubeconfig(settings=settings, **kwargs)
    server = in_cluster_server(dict(os.environ))
    return dataclasses.replace(info, server=server) if server else info


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = RT.config = RT.config or OperatorConfig.from_env()
    settings.posting.enabled = False          # events are the reconciler's, one per transition
    settings.scanning.disabled = True         # no CRD/namespace watches (and no RBAC for them)
    settings.watching.label_selectors["batch", "v1", "jobs"] = c.CHILD_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = c.CHILD_SELECTOR
    settings.persistence.diffbase_storage = NoDiffBaseStorage()   # no change-detecting handlers
    settings.watching.server_timeout = 600
    settings.networking.request_timeout = 60
    RT.settings = settings
    metrics.start(config.metrics_port, lambda: RT.reconciler.phases() if RT.reconciler else [])
    RT.trimmer = asyncio.get_running_loop().create_task(memory.trim_forever())


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = _login(settings=settings, **kwargs)
    if info is not None and RT.kube is None:
        config = RT.config = RT.config or OperatorConfig.from_env()
        RT.kube = Kube(info, concurrency=config.api_concurrency,
                       relogin=lambda: _login(settings=settings, logger=log),
                       on_request=metrics.count_request)
        RT.reconciler = Reconciler(config, RT.kube)
        RT.scheduler = Scheduler(RT.reconciler.reconcile, concurrency=config.api_concurrency * 2)
    return info


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if RT.trimmer is not None:
        RT.trimmer.cancel()
    if RT.scheduler is not None:
        await RT.scheduler.close()
    if RT.kube is not None:
        await RT.kube.close()


# -- indexes: kopf fills them from the initial listings before any handler below runs ----------

@kopf.index(c.GROUP, c.VERSION, c.PLURAL)
async def qj_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    return {(namespace, name): trim_qj(dict(body))}


# Jobs and Pods only trigger a pass for their QuantizationJob. That happens here, in the index
# handlers kopf calls for every watch event anyway, rather than in @kopf.on.event handlers: those
# would double kopf's per-event work for the two busiest resources. Passes do not start before
# kopf has filled every index (Scheduler.ready, set by the first QuantizationJob handler call).

def _child(key: tuple[str, str] | None, trim: Any, body: kopf.Body, now: bool = False) -> dict | None:
    if key is None:
        return None
    if RT.scheduler is not None:
        RT.scheduler.enqueue(key, 0.0 if now else RT.config.status_coalesce_seconds)
    return {key: trim(dict(body))}


@kopf.index("batch", "v1", "jobs", labels=CHILD_LABELS)
async def job_index(body: kopf.Body, **_: Any) -> dict | None:
    # A concluded Job is read at once: with a short ttlSecondsAfterFinished its pods (and the
    # results in their termination messages) are about to be deleted.
    trimmed = trim_job(dict(body))
    return _child(owner_key_of_job(body), lambda _: trimmed, body, now=job_finished(trimmed))


@kopf.index("v1", "pods", labels=CHILD_LABELS)
async def pod_index(body: kopf.Body, **_: Any) -> dict | None:
    return _child(owner_key_of_pod(body), trim_pod, body)


def _bind(kwargs: dict[str, Any]) -> tuple[Reconciler, Scheduler]:
    assert RT.reconciler is not None and RT.scheduler is not None, "login has not run"
    if RT.reconciler.qjs is None:
        RT.reconciler.bind(kwargs["qj_index"], kwargs["job_index"], kwargs["pod_index"])
        RT.scheduler.ready = True       # kopf calls no handler before every index is filled
    return RT.reconciler, RT.scheduler


# -- triggers -------------------------------------------------------------------------------------

@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def qj_event(type: str, body: kopf.Body, namespace: str, name: str, **kwargs: Any) -> None:
    reconciler, scheduler = _bind(kwargs)
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
    scheduler.enqueue((namespace, name), 0.0 if fresh else RT.config.status_coalesce_seconds)
