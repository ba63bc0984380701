"""Leader election on a coordination.k8s.io/v1 Lease, the way Kubernetes' own controllers do it
(client-go tools/leaderelection), so that of several operator replicas exactly one reconciles.

- A candidate takes the Lease when nobody holds it, or when the holder's record has stayed the
  same for leaseDurationSeconds *on the candidate's own clock*, counted from when it first saw
  that record: clocks of different machines are never compared, so a candidate that has just
  started waits a full lease duration.
- The leader renews every retry period. When no renewal has succeeded for the renew deadline, or
  the Lease names someone else, it has lost: the process exits at once (as kube-controller-manager
  does), lease_duration - renew_deadline before any other replica may take over; its restart
  makes it a candidate again.
- On SIGTERM the leader stops kopf and then releases the Lease, so a rollout or a pod deletion
  hands over within one retry period instead of a lease duration.
- Writes are PUTs with the resourceVersion just read: of two candidates racing for an expired
  Lease, the second gets 409 Conflict.

The standby runs no kopf at all (no watches, no handlers, no writes); its probes come from here.
"""
from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import os
import signal
import socket
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from .constants import Obj
from .kube import ApiError, Kube, get_or_none

log = logging.getLogger(__name__)

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"        # metav1.MicroTime, as the Lease's times are written
TRANSIENT = (ApiError, aiohttp.ClientError, asyncio.TimeoutError, OSError)
# The elector's own API client, apart from the reconciler's pool so that a busy reconciler never
# delays a renewal. It makes one request at a time (GET, then PUT or POST of its Lease), so two
# connections are more than it needs.
ELECTOR_CONNECTIONS = 2


class Action(enum.Enum):
    CREATE = "create"       # no Lease yet
    TAKE = "take"           # free or expired: become the holder
    RENEW = "renew"         # ours: write a fresh renewTime
    WAIT = "wait"           # someone else holds it and it has not expired


def decide(spec: Obj | None, identity: str, observed_at: float | None, now: float) -> Action:
    """What a candidate does with the Lease spec it just read. `observed_at` is when (on this
    process's monotonic clock) it first saw the record as it is now."""
    if spec is None:
        return Action.CREATE
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        return Action.RENEW
    if not holder:
        return Action.TAKE
    duration = int(spec.get("leaseDurationSeconds") or 0)
    if observed_at is not None and now >= observed_at + duration:
        return Action.TAKE
    return Action.WAIT


def lease_spec(before: Obj | None, identity: str, action: Action, now: datetime.datetime, duration: int) -> Obj:
    """The spec to write for CREATE, TAKE or RENEW."""
    stamp = now.strftime(MICRO_TIME)
    before = before or {}
    if action is Action.RENEW:
        return {**before, "holderIdentity": identity, "leaseDurationSeconds": duration, "renewTime": stamp}
    transitions = int(before.get("leaseTransitions") or 0)
    if action is Action.TAKE:
        transitions += 1
    return {"holderIdentity": identity, "leaseDurationSeconds": duration, "acquireTime": stamp,
            "renewTime": stamp, "leaseTransitions": transitions}


def released_spec(before: Obj, now: datetime.datetime) -> Obj:
    """client-go's release: no holder, a one-second duration (candidates take it on their next try)."""
    stamp = now.strftime(MICRO_TIME)
    return {"leaseDurationSeconds": 1, "acquireTime": stamp, "renewTime": stamp,
            "leaseTransitions": int(before.get("leaseTransitions") or 0)}


def _record(spec: Obj | None) -> tuple:
    spec = spec or {}
    return tuple(spec.get(k) for k in ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions"))


def probe(*, leading: bool, last_attempt: float, last_read: float | None, last_renewal: float | None,
          now: float, lease_duration: float, renew_deadline: float, retry_period: float) -> tuple[bool, bool]:
    """(live, ready) of a replica, for the kubelet's probes.

    live: the election loop is turning (an attempt started within the longest gap a working loop
    can leave: one retry period plus one attempt bounded by the renew deadline, twice). An API
    outage does not make a replica unlive: restarting it would not bring the API back.
    ready: the replica can do its job now. A leader: it renewed within the renew deadline. A
    standby: it read the Lease within one lease duration, so it would notice the leader's end.
    """
    live = now - last_attempt <= 2 * (retry_period + renew_deadline)
    if leading:
        ready = last_renewal is not None and now - last_renewal <= renew_deadline
    else:
        ready = last_read is not None and now - last_read <= lease_duration
    return live, live and ready


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, *, lease_duration: int,
                 renew_deadline: float, retry_period: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)):
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._kube, self._clock, self._wall = kube, clock, wall
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._observed: tuple | None = None
        self._observed_at: float | None = None
        self.leading = False
        self.holder = ""                          # as the Lease said when last read
        self.last_attempt = clock()               # the loop's heartbeat (liveness)
        self.last_read: float | None = None       # the Lease was read (a standby's readiness)
        self.last_renewal: float | None = None    # this replica wrote it as holder

    def _observe(self, spec: Obj | None, now: float) -> None:
        record = _record(spec)
        if record != self._observed:
            self._observed, self._observed_at = record, now

    async def _get(self) -> Obj | None:
        return await get_or_none(self._kube, self._path, resource="leases")

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: read the Lease and write it if this replica may hold it. True = it holds it now."""
        now = self._clock()
        self.last_attempt = now
        lease = await self._get()
        spec = None if lease is None else (lease.get("spec") or {})
        self._observe(spec, now)
        self.last_read = now
        self.holder = (spec or {}).get("holderIdentity") or ""
        action = decide(spec, self.identity, self._observed_at, now)
        if action is Action.WAIT:
            self.leading = False
            return False
        new = lease_spec(spec, self.identity, action, self._wall(), self.lease_duration)
        meta: Obj = {"name": self.name, "namespace": self.namespace}
        try:
            if lease is None:
                await self._kube.request("POST", self._path.rsplit("/", 1)[0], resource="leases", body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": new})
            else:
                meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
                await self._kube.request("PUT", self._path, resource="leases", body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": new})
        except ApiError as exc:
            if exc.status == 409:          # another candidate wrote first
                self.leading = False
                return False
            raise
        if action is not Action.RENEW:
            log.info("took the Lease %s/%s (was %s)", self.namespace, self.name, self.holder or "free")
        self._observe(new, now)
        self.holder, self.leading, self.last_renewal = self.identity, True, now
        return True

    async def _attempt(self, timeout: float) -> bool:
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), timeout)
        except TRANSIENT as exc:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, exc or type(exc).__name__)
            return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Stand by until this replica holds the Lease (True) or `stop` is set (False)."""
        announced = ""
        while not stop.is_set():
            if await self._attempt(self.renew_deadline):
                return True
            if self.holder and self.holder != announced:
                log.info("standing by: the Lease %s/%s is held by %s", self.namespace, self.name, self.holder)
                announced = self.holder
            delay = self.retry_period
            if self._observed_at is not None and self._observed and self._observed[1]:
                # Try again the moment the holder's record expires rather than up to a period later.
                delay = min(delay, max(0.05, self._observed_at + self._observed[1] - self._clock()))
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        return False

    async def hold(self) -> str:
        """Renew every retry period until the Lease is lost; returns why it was lost."""
        while True:
            await asyncio.sleep(self.retry_period)
            since = self._clock() - (self.last_renewal or 0.0)
            if since < self.renew_deadline and await self._attempt(self.renew_deadline - since):
                continue
            if self.holder and self.holder != self.identity:
                self.leading = False
                return f"the Lease is held by {self.holder}"
            if self._clock() - (self.last_renewal or 0.0) >= self.renew_deadline:
                self.leading = False
                return f"no renewal succeeded for {self.renew_deadline:g}s"

    async def release(self) -> None:
        """Hand the Lease back if this replica still holds it (best effort: else it expires)."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await asyncio.wait_for(self._get(), self.retry_period)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": released_spec(lease.get("spec") or {}, self._wall())}
            await asyncio.wait_for(self._kube.request("PUT", self._path, resource="leases", body=body), self.retry_period)
            log.info("released the Lease %s/%s", self.namespace, self.name)
        except TRANSIENT as exc:
            log.warning("could not release the Lease %s/%s (it expires by itself): %s", self.namespace, self.name, exc)

    def probe(self) -> tuple[bool, bool, Obj]:
        live, ready = probe(leading=self.leading, last_attempt=self.last_attempt, last_read=self.last_read,
                            last_renewal=self.last_renewal, now=self._clock(), lease_duration=self.lease_duration,
                            renew_deadline=self.renew_deadline, retry_period=self.retry_period)
        return live, ready, {"identity": self.identity, "role": "leader" if self.leading else "standby",
                             "holder": self.holder, "live": live, "ready": ready}


def identity() -> str:
    """client-go's `<hostname>_<uuid>`: a restarted container is a new candidate, never mistaken
    for the holder it replaces."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{uuid.uuid4()}"


async def serve_probes(elector: LeaderElector, endpoint: str) -> web.AppRunner | None:
    """/healthz (liveness) and /readyz (readiness) at the liveness endpoint's host and port."""
    if not endpoint:
        return None
    url = urllib.parse.urlsplit(endpoint)

    def handler(want_ready: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(_: web.Request) -> web.Response:
            live, ready, body = elector.probe()
            return web.json_response(body, status=200 if (ready if want_ready else live) else 503)
        return answer

    app = web.Application()
    app.router.add_get("/healthz", handler(False))
    app.router.add_get("/readyz", handler(True))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 8080).start()
    return runner


def _exit_now(code: int) -> None:
    logging.shutdown()
    os._exit(code)


async def run_elected(elector: LeaderElector, operator: Callable[[], Awaitable[Any]],
                      on_lead: Callable[[bool], None] = lambda leading: None,
                      exit_now: Callable[[int], Any] = _exit_now) -> int:
    """Stand by, then run `operator` (kopf) while holding the Lease; the exit code of the process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)      # kopf replaces these with its own once it runs
    on_lead(False)
    if not await elector.acquire(stop):
        log.info("stopped while standing by")
        return 0
    on_lead(True)
    log.info("leading (Lease %s/%s, identity %s): reconciling", elector.namespace, elector.name, elector.identity)
    # Created before kopf starts: kopf cancels, when it stops, every task made after it started.
    holding = asyncio.create_task(elector.hold(), name="lease renewal")
    running = asyncio.create_task(operator(), name="kopf")
    done, _ = await asyncio.wait({holding, running}, return_when=asyncio.FIRST_COMPLETED)
    if holding in done:
        # Not a graceful kopf stop: a Job create in flight must not land after the new leader's.
        log.error("lost the Lease (%s): exiting now, the new leader reconciles", holding.result())
        exit_now(1)
        return 1
    holding.cancel()
    await elector.release()
    on_lead(False)
    if running.exception() is not None:
        log.error("kopf stopped with an error: %s", running.exception())
        return 1
    return 0
