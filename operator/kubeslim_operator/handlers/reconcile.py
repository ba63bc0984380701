"""One reconcile pass for one QuantizationJob: level-triggered, from the watched state.

The pass reads the QuantizationJob, its Jobs and their Pods from kopf's in-memory indexes (kopf
fills every index before it calls any handler, so a restarted operator sees its children before
it acts), and carries out what decide.py makes of them:

1. stops Jobs of older generations that still run;
2. creates the Job of the current generation unless it exists (deterministic name: a 409 is
   answered by reading that Job and checking its owner uid, so no generation ever gets a second Job;
   a Job the API server finds invalid ends the generation as Failed/JobRejected, never a retry loop);
3. derives the status from the Job and its Pods (status/) and patches it only when it differs
   from the last status written, with one event per visible transition.

Writes per QuantizationJob: one Job create, then one status patch per transition and one event
per transition a user needs (status.transition_event: not for a run merely moving on).
Status writes are coalesced (config.status_coalesce_seconds) so a fast pod moving through its
stages does not cost a write per stage.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Mapping

from kubeslim_api import reasons
from kubeslim_api.spec import QuantizationJobSpec, SpecError, parse_spec

from .. import constants as c
from ..constants import Obj
from .. import metrics, progress
from ..config import OperatorConfig
from ..decide import Attempt, JobRef, Seen, decide_jobs, decide_status, queued_job, settled
from ..jobs import Owner, build_job, job_name
from ..kube import ApiError, Kube
from ..objects import Key, owner_uid_of_job, trim_job, trim_workload
from ..status import Fact, Queue, is_final_for, job_rejection, transition_event, transitioned
from ..times import format_time, parse_time

log = logging.getLogger("kubeslim_operator.reconcile")

# A Job this process created (or read after a 409) stands in for the watch's copy for this long:
# the watch event usually follows within milliseconds, but a pass must not mistake lag for deletion.
RECENT_JOB_SECONDS = 60.0


def _values(index: Mapping[Key, Iterable[Obj]] | None, key: Key) -> list[Obj]:
    if index is None:
        return []
    try:
        return list(index[key])
    except KeyError:
        return []


@dataclasses.dataclass(slots=True)
class Memory:
    """What this process remembers about one QuantizationJob (by uid) between passes."""
    written: Obj | None = None              # the last status this process wrote
    last_write: float | None = None         # when (monotonic)
    parsed: tuple[int, QuantizationJobSpec | None, SpecError | None] | None = None    # per generation
    recent_jobs: dict[int, tuple[float, Obj]] = dataclasses.field(default_factory=dict)  # generation → (until, Job)
    first_seen: dict[int, float] = dataclasses.field(default_factory=dict)              # generation → monotonic
    reading: progress.Reading = dataclasses.field(default_factory=progress.Reading)     # the running stage's log


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube):
        self.config = config
        self.kube = kube
        self.qjs: Mapping[Key, Iterable[Obj]] | None = None
        self.jobs: Mapping[Key, Iterable[Obj]] | None = None
        self.pods: Mapping[Key, Iterable[Obj]] | None = None
        self._memory: dict[str, Memory] = {}

    def bind(self, qjs: Mapping, jobs: Mapping, pods: Mapping) -> None:
        self.qjs, self.jobs, self.pods = qjs, jobs, pods

    def _remember(self, uid: str) -> Memory:
        memory = self._memory.get(uid)
        if memory is None:
            memory = self._memory[uid] = Memory()
        return memory

    # -- bookkeeping called by the event handlers -------------------------------------------------

    def seen(self, uid: str, generation: int) -> None:
        self._remember(uid).first_seen.setdefault(generation, time.monotonic())

    def known_status(self, body: Obj) -> Obj:
        memory = self._memory.get((body.get("metadata") or {}).get("uid", ""))
        return (memory.written if memory is not None else None) or body.get("status") or {}

    def forget(self, uid: str) -> None:
        self._memory.pop(uid, None)

    def phases(self) -> Iterable[tuple[str, str]]:
        """(namespace, status.phase) of every QuantizationJob, for the metrics' phase gauge."""
        if self.qjs is None:
            return []
        return [(body["metadata"]["namespace"], self.known_status(body).get("phase") or "")
                for store in list(self.qjs.values()) for body in store]

    # -- the pass: gather, decide, do -------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        started = time.perf_counter()
        try:
            return await self._reconcile(key)
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    async def _reconcile(self, key: Key) -> float | None:
        bodies = _values(self.qjs, key)
        if not bodies:
            return None
        qj = bodies[-1]
        seen = self._see(key, qj)
        jobs = decide_jobs(seen)
        if jobs.watched and (memory := self._memory.get(qj["metadata"]["uid"])) is not None:
            memory.recent_jobs.pop(seen.generation, None)
        for ref in jobs.stop:
            await self._stop(qj, seen.generation, ref)
        if jobs.done:
            return None
        attempt = await self._attempt(qj, seen) if jobs.create else None
        held = queued_job(jobs, attempt)
        queue = await self._queue(held) if held is not None else None
        memory = self._remember(qj["metadata"]["uid"])
        # The running stage's progress line, read from its log when due (progress.py).
        target = progress.log_target(attempt.job if attempt is not None and jobs.create else jobs.current, seen.pods)
        await progress.read(self.kube, key[0], target, memory.reading)
        last = memory.last_write
        status = decide_status(seen, jobs, attempt, now=format_time(), config=self.config, queue=queue,
                               since_write=None if last is None else time.monotonic() - last,
                               progress=memory.reading.line)
        if status.write is not None:
            await self._write(qj, seen.prev, status.write)
        if status.stop is not None:
            await self._stop(qj, seen.generation, status.stop)
        if target is None:
            return status.requeue
        return min(memory.reading.wait(), status.requeue if status.requeue is not None else math.inf)

    def _see(self, key: Key, qj: Obj) -> Seen:
        meta = qj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return Seen(0, "", {}, deleting=True)    # garbage collection removes the Job and its pods
        uid, generation = meta["uid"], int(meta.get("generation") or 1)
        prev = self.known_status(qj)
        memory = self._memory.get(uid)
        recent = memory.recent_jobs.get(generation) if memory is not None else None
        spec, spec_error = (None, None) if settled(False, prev, generation) else self._spec(uid, generation, qj)
        return Seen(generation, job_name(key[1], generation), prev,
                    jobs=tuple(j for j in _values(self.jobs, key) if owner_uid_of_job(j) == uid),
                    pods=tuple(_values(self.pods, key)),
                    recent_job=recent[1] if recent is not None and time.monotonic() < recent[0] else None,
                    spec=spec, spec_error=spec_error)

    def _spec(self, uid: str, generation: int, qj: Obj) -> tuple[QuantizationJobSpec | None, SpecError | None]:
        memory = self._remember(uid)
        if memory.parsed and memory.parsed[0] == generation:
            return memory.parsed[1], memory.parsed[2]
        try:
            spec, err = parse_spec(qj.get("spec") or {}, drop_unknown=True), None
        except SpecError as exc:
            spec, err = None, exc
        except Exception as exc:    # a model bug must not crash the pass forever: report it
            spec, err = None, SpecError("spec", f"cannot be parsed ({type(exc).__name__}: {exc})")
        memory.parsed = (generation, spec, err)
        return spec, err

    async def _stop(self, qj: Obj, generation: int, ref: JobRef) -> None:
        meta = qj["metadata"]
        if ref.replaced is not None:
            log.info("%s/%s: generation %s replaces %s; stopping Job %s", meta["namespace"], meta["name"], generation,
                     ref.replaced, ref.name)
        await self.kube.delete_job(meta["namespace"], ref.name, ref.uid)

    async def _queue(self, job: Obj) -> Queue:
        """The Workload Kueue made for a Job it holds (the newest, should there be several)."""
        meta = job["metadata"]
        try:
            items = await self.kube.list_workloads(meta["namespace"], meta["uid"])
        except ApiError as exc:
            if exc.status == 404:
                return Queue(api="absent")
            if exc.status == 403:
                log.warning("%s: may not list Kueue Workloads (HTTP 403); grant list on workloads.kueue.x-k8s.io",
                            meta["namespace"])
                return Queue(api="forbidden")
            raise
        newest = max(items, key=lambda w: (w.get("metadata") or {}).get("creationTimestamp") or "", default=None)
        return Queue(workload=trim_workload(newest) if newest is not None else None)

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

    async def _attempt(self, qj: Obj, seen: Seen) -> Attempt:
        """The CA ConfigMap check, then the Job create (its 409 and refusals in spec terms)."""
        assert seen.spec is not None
        meta = qj["metadata"]
        problem = await self._config_problem(meta["namespace"], seen.spec)
        if problem is not None:
            return Attempt(config_problem=problem)
        uid, generation = meta["uid"], seen.generation
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=uid, generation=generation)
        manifest = build_job(owner, seen.spec, self.config)
        name = manifest["metadata"]["name"]
        memory = self._remember(uid)
        try:
            body = await self.kube.create_job(owner.namespace, manifest)
        except ApiError as exc:
            if exc.status != 409:
                rejection = job_rejection(exc.status, exc.body, name)
                if rejection is None:
                    raise                   # transient: the scheduler retries with a backoff
                log.warning("%s/%s: Job %s refused (HTTP %s): %s", owner.namespace, owner.name, name, exc.status,
                            rejection.message)
                return Attempt(rejection=rejection)
            body = await self.kube.get_job(owner.namespace, name)
            if owner_uid_of_job(body) != uid:
                log.warning("%s/%s: Job %s exists and is not ours", owner.namespace, owner.name, name)
                return Attempt(conflict=name)
            job = trim_job(body)
            memory.recent_jobs[generation] = (time.monotonic() + RECENT_JOB_SECONDS, job)
            return Attempt(job=job)
        first_seen = memory.first_seen.pop(generation, None)
        if first_seen is not None:
            metrics.JOB_CREATE_LATENCY.observe(time.monotonic() - first_seen)
        log.info("%s/%s: created Job %s for generation %s", owner.namespace, owner.name, name, generation)
        job = trim_job(body)
        memory.recent_jobs[generation] = (time.monotonic() + RECENT_JOB_SECONDS, job)
        return Attempt(job=job, created=True)

    async def _write(self, qj: Obj, prev: Obj, new: Obj) -> None:
        meta = qj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        written = await self.kube.patch_status(namespace, name, new)
        if written is None:
            return
        memory = self._remember(uid)
        memory.written, memory.last_write = new, time.monotonic()
        if transitioned(prev, new):
            log.info("%s/%s: %s%s%s", namespace, name, new.get("phase"),
                     f" ({new['stage']})" if new.get("stage") else "", f" {new['reason']}" if new.get("reason") else "")
            metrics.TRANSITIONS.labels(namespace, new.get("phase") or "", new.get("reason") or "").inc()
        event = transition_event(prev, new)
        if event is not None:
            await self.kube.post_event(qj, event.type, event.reason, event.message)
        if new.get("phase") in c.FINAL_PHASES and not is_final_for(prev, new["observedGeneration"]):
            phase = new["phase"]
            metrics.RUNS_FINISHED.labels(namespace, phase, new.get("reason") or "").inc()
            start, end = parse_time(new.get("startTime")), parse_time(new.get("completionTime"))
            if start is not None and end is not None and end >= start:
                metrics.RUN_DURATION.labels(namespace, phase).observe(end - start)
            drop = (new.get("results") or {}).get("accuracyDrop")
            if isinstance(drop, (int, float)):
                metrics.ACCURACY_DROP.labels(namespace).observe(drop)
