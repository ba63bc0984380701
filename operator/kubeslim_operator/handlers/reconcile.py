"""One reconcile pass for one QuantizationJob: level-triggered, from the watched state.

The pass reads the QuantizationJob, its Jobs and their Pods from kopf's in-memory indexes (kopf
fills every index before it calls any handler, so a restarted operator sees its children before
it acts), then:

1. stops Jobs of older generations that still run;
2. creates the Job of the current generation unless it exists (deterministic name: a 409 is
   answered by reading that Job and checking its owner uid, so no generation ever gets a second Job;
   a Job the API server finds invalid ends the generation as Failed/JobRejected, never a retry loop);
3. derives the status from the Job and its Pods (status.py) and patches it only when it differs
   from the last status written, with one event per visible transition.

Writes per QuantizationJob: one Job create, then one status patch + one event per transition.
Status writes are coalesced (config.status_coalesce_seconds) so a fast pod moving through its
stages does not cost a write per stage.
"""
from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Mapping

from kubeslim_api import reasons
from kubeslim_api.spec import QuantizationJobSpec, SpecError, parse_spec

from .. import constants as c
from ..constants import Obj
from .. import metrics
from ..config import OperatorConfig
from ..jobs import Owner, build_job, job_name
from ..kube import ApiError, Kube
from ..objects import (Key, deleting, job_finished, job_generation, owner_uid_of_job, pod_belongs_to, trim_job)
from ..status import Fact, JobRejection, build_status, is_final_for, job_rejection, observe, transition_event, visible

log = logging.getLogger("kubeslim_operator.reconcile")

# A Job this process created (or read after a 409) stands in for the watch's copy for this long:
# the watch event usually follows within milliseconds, but a pass must not mistake lag for deletion.
RECENT_JOB_SECONDS = 60.0


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(c.TIME_FORMAT)


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, c.TIME_FORMAT).replace(tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def _values(index: Mapping[Key, Iterable[Obj]] | None, key: Key) -> list[Obj]:
    if index is None:
        return []
    try:
        return list(index[key])
    except KeyError:
        return []


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube):
        self.config = config
        self.kube = kube
        self.qjs: Mapping[Key, Iterable[Obj]] | None = None
        self.jobs: Mapping[Key, Iterable[Obj]] | None = None
        self.pods: Mapping[Key, Iterable[Obj]] | None = None
        self._written: dict[str, Obj] = {}                  # uid → last status this process wrote
        self._parsed: dict[str, tuple[int, QuantizationJobSpec | None, SpecError | None]] = {}
        self._recent_jobs: dict[tuple[str, int], tuple[float, Obj]] = {}
        self._seen: dict[tuple[str, int], float] = {}         # (uid, generation) → first seen (monotonic)
        self._last_write: dict[str, float] = {}               # uid → when its status was last written

    def bind(self, qjs: Mapping, jobs: Mapping, pods: Mapping) -> None:
        self.qjs, self.jobs, self.pods = qjs, jobs, pods

    # -- bookkeeping called by the event handlers -------------------------------------------------

    def seen(self, uid: str, generation: int) -> None:
        self._seen.setdefault((uid, generation), time.monotonic())

    def known_status(self, body: Obj) -> Obj:
        uid = (body.get("metadata") or {}).get("uid", "")
        return self._written.get(uid) or body.get("status") or {}

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._last_write.pop(uid, None)
        self._parsed.pop(uid, None)
        for k in [k for k in self._recent_jobs if k[0] == uid]:
            del self._recent_jobs[k]
        for k in [k for k in self._seen if k[0] == uid]:
            del self._seen[k]

    def phases(self) -> Iterable[str]:
        if self.qjs is None:
            return []
        return [self.known_status(body).get("phase") or "" for store in list(self.qjs.values()) for body in store]

    # -- the pass ---------------------------------------------------------------------------------

    def _spec(self, uid: str, generation: int, raw: Obj) -> tuple[QuantizationJobSpec | None, SpecError | None]:
        cached = self._parsed.get(uid)
        if cached and cached[0] == generation:
            return cached[1], cached[2]
        try:
            spec, err = parse_spec(raw), None
        except SpecError as exc:
            spec, err = None, exc
        except Exception as exc:    # a model bug must not crash the pass forever: report it
            spec, err = None, SpecError("spec", f"cannot be parsed ({type(exc).__name__}: {exc})")
        self._parsed[uid] = (generation, spec, err)
        return spec, err

    async def _config_problem(self, namespace: str, spec: QuantizationJobSpec) -> Fact | None:
        """The CA ConfigMap is checked before the Job exists. (Secrets cannot be: the operator
        has no right to read them; kubelet's CreateContainerConfigError reports those.)"""
        ca = spec.storage.ca_bundle
        if ca is None:
            return None
        cm = await self.kube.get_configmap(namespace, ca.config_map_name)
        if cm is None:
            return Fact(False, reasons.CONFIGMAP_NOT_FOUND,
                        f"ConfigMap {ca.config_map_name} (spec.storage.caBundle.configMapName) does not exist in "
                        f"namespace {namespace}; create it and the run starts by itself.")
        if ca.key not in (cm.get("data") or {}) and ca.key not in (cm.get("binaryData") or {}):
            return Fact(False, reasons.CONFIGMAP_KEY_NOT_FOUND,
                        f"ConfigMap {ca.config_map_name} has no key {ca.key} (spec.storage.caBundle.key); add it or "
                        "point the key at the one holding the PEM bundle.")
        return None

    async def reconcile(self, key: Key) -> float | None:
        started = time.perf_counter()
        try:
            return await self._reconcile(key)
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    async def _reconcile(self, key: Key) -> float | None:
        namespace, name = key
        bodies = _values(self.qjs, key)
        if not bodies:
            return None
        qj = bodies[-1]
        meta = qj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None                  # garbage collection removes the Job and its pods
        uid, generation = meta["uid"], int(meta.get("generation") or 1)
        prev = self.known_status(qj)
        expected = job_name(name, generation)

        ours = [j for j in _values(self.jobs, key) if owner_uid_of_job(j) == uid]
        for j in ours:
            gen = job_generation(j)
            if gen is not None and gen != generation and not job_finished(j) and not deleting(j):
                log.info("%s/%s: generation %s replaces %s; stopping Job %s", namespace, name, generation, gen,
                         j["metadata"]["name"])
                await self.kube.delete_job(namespace, j["metadata"]["name"], j["metadata"].get("uid"))
        current = next((j for j in ours if job_generation(j) == generation and j["metadata"].get("name") == expected), None)
        recent = self._recent_jobs.get((uid, generation))
        if current is not None:
            self._recent_jobs.pop((uid, generation), None)
        elif recent is not None and time.monotonic() < recent[0]:
            current = recent[1]

        if is_final_for(prev, generation):
            # The status is final for this generation (it may outlive its Job: TTL). A Job that
            # still runs although the status ended it (e.g. an image that cannot be pulled) stops.
            if current is not None and not job_finished(current) and not deleting(current):
                await self.kube.delete_job(namespace, expected, current["metadata"].get("uid"))
            return None

        spec, spec_error = self._spec(uid, generation, qj.get("spec") or {})
        requeue: float | None = None
        created = False
        config_problem: Fact | None = None
        conflict: str | None = None
        rejection: JobRejection | None = None
        job_deleted = False

        if spec is not None and current is None:
            if prev.get("observedGeneration") == generation and prev.get("jobName") == expected:
                job_deleted = True         # we saw it once: never a second Job for a generation
            else:
                config_problem = await self._config_problem(namespace, spec)
                if config_problem is not None:
                    requeue = self.config.recheck_seconds
                else:
                    current, conflict, created, rejection = await self._create_job(qj, spec, uid, generation)
                    if conflict or (rejection is not None and not rejection.final):
                        requeue = self.config.recheck_seconds

        pods = [p for p in _values(self.pods, key) if current is not None and pod_belongs_to(p, current)]
        now = utcnow()
        verdict = observe(generation=generation, spec=spec, spec_error=spec_error, job=current, pods=pods,
                          config_problem=config_problem, job_conflict=conflict, job_deleted=job_deleted,
                          job_rejection=rejection, now=now)
        if created:
            # The Job's own watch event follows at once; the first status is written by the pass it
            # triggers (after the coalescing window), together with whatever the pod did meanwhile.
            return self.config.status_coalesce_seconds
        new = build_status(verdict, generation=generation,
                           job_name=(current or {}).get("metadata", {}).get("name") if current else None,
                           prev=prev, now=now)
        if not verdict.hold and visible(new) != visible(prev):
            wait = self._progress_wait(uid, prev, new)
            if wait > 0:
                requeue = wait if requeue is None else min(requeue, wait)
            else:
                await self._write(qj, prev, new)
        if verdict.final and current is not None and not job_finished(current) and not deleting(current):
            await self.kube.delete_job(namespace, expected, current["metadata"].get("uid"))
        return requeue

    def _progress_wait(self, uid: str, prev: Obj, new: Obj) -> float:
        """Seconds to hold back a write of mere progress; 0 to write now."""
        urgent = (new.get("phase") in c.FINAL_PHASES or new.get("reason") or prev.get("reason")
                  or prev.get("observedGeneration") != new.get("observedGeneration") or not prev.get("phase"))
        if urgent:
            return 0.0
        last = self._last_write.get(uid)
        if last is None:
            return 0.0
        return max(0.0, self.config.status_progress_seconds - (time.monotonic() - last))

    async def _create_job(self, qj: Obj, spec: QuantizationJobSpec, uid: str,
                          generation: int) -> tuple[Obj | None, str | None, bool, JobRejection | None]:
        """(Job, name held by a foreign Job, created now, the API server's refusal)."""
        meta = qj["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=uid, generation=generation)
        manifest = build_job(owner, spec, self.config)
        name = manifest["metadata"]["name"]
        try:
            body = await self.kube.create_job(owner.namespace, manifest)
        except ApiError as exc:
            if exc.status != 409:
                rejection = job_rejection(exc.status, exc.body, name)
                if rejection is None:
                    raise                   # transient: the scheduler retries with a backoff
                log.warning("%s/%s: Job %s refused (HTTP %s): %s", owner.namespace, owner.name, name, exc.status,
                            rejection.message)
                return None, None, False, rejection
            body = await self.kube.get_job(owner.namespace, name)
            if owner_uid_of_job(body) != uid:
                log.warning("%s/%s: Job %s exists and is not ours", owner.namespace, owner.name, name)
                return None, name, False, None
            job = trim_job(body)
            self._recent_jobs[(uid, generation)] = (time.monotonic() + RECENT_JOB_SECONDS, job)
            return job, None, False, None
        first_seen = self._seen.pop((uid, generation), None)
        if first_seen is not None:
            metrics.JOB_CREATE_LATENCY.observe(time.monotonic() - first_seen)
        log.info("%s/%s: created Job %s for generation %s", owner.namespace, owner.name, name, generation)
        job = trim_job(body)
        self._recent_jobs[(uid, generation)] = (time.monotonic() + RECENT_JOB_SECONDS, job)
        return job, None, True, None

    async def _write(self, qj: Obj, prev: Obj, new: Obj) -> None:
        meta = qj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        written = await self.kube.patch_status(namespace, name, new)
        if written is None:
            return
        self._written[uid] = new
        self._last_write[uid] = time.monotonic()
        event = transition_event(prev, new)
        if event is not None:
            log.info("%s/%s: %s%s%s", namespace, name, new.get("phase"),
                     f" ({new['stage']})" if new.get("stage") else "", f" {new['reason']}" if new.get("reason") else "")
            metrics.TRANSITIONS.labels(new.get("phase") or "", new.get("reason") or "").inc()
            await self.kube.post_event(qj, event.type, event.reason, event.message)
        if new.get("phase") in c.FINAL_PHASES and not is_final_for(prev, new["observedGeneration"]):
            phase = new["phase"]
            metrics.RUNS_FINISHED.labels(phase, new.get("reason") or "").inc()
            start, end = _parse_time(new.get("startTime")), _parse_time(new.get("completionTime"))
            if start is not None and end is not None and end >= start:
                metrics.RUN_DURATION.labels(phase).observe(end - start)
            drop = (new.get("results") or {}).get("accuracyDrop")
            if isinstance(drop, (int, float)):
                metrics.ACCURACY_DROP.observe(drop)
