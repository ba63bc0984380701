"""What one reconcile pass does, decided from what it saw. Pure: handlers/reconcile.py gathers the
watched state (and the answers to its own requests) and carries out what these functions return.

A pass has one request whose answer the decision needs: creating the generation's Job (after the
CA ConfigMap check). So it is decided in two steps around it:

1. `decide_jobs(seen)` → which Jobs to stop, which Job is the generation's, whether the pass ends
   here (a QuantizationJob being deleted, or a status already final for the generation), and
   whether the Job must be created;
2. `decide_status(seen, jobs, attempt, …)` → the status to write (or how long to hold it back),
   the generation's Job to stop once the status ended it, and when to look again.
"""
from __future__ import annotations

import dataclasses

from kubeslim_api.spec import QuantizationJobSpec, SpecError

from . import constants as c
from .config import OperatorConfig
from .constants import Obj
from .objects import deleting, job_finished, job_generation, pod_belongs_to
from .progress import ProgressLine, status_progress
from .status import Fact, JobRejection, Queue, build_status, is_final_for, observe, visible


@dataclasses.dataclass(frozen=True)
class JobRef:
    """A Job to delete: by name, guarded by its uid (a Job of the same name made later survives)."""
    name: str
    uid: str | None
    replaced: int | None = None        # the older generation it ran, when a newer one replaces it


@dataclasses.dataclass(frozen=True)
class Seen:
    """One QuantizationJob as a pass sees it."""
    generation: int
    job_name: str                      # the generation's Job (the name is deterministic)
    prev: Obj                          # the last status known: written by this process, else the object's
    jobs: tuple[Obj, ...] = ()         # the Jobs it owns (by uid), from the watch
    pods: tuple[Obj, ...] = ()         # the pods under its key, from the watch
    recent_job: Obj | None = None      # the Job this process created (or read after a 409) moments ago,
                                       # standing in for the watch's copy while the watch lags
    deleting: bool = False
    # Parsed only when the pass gets that far (see `settled`): a finished run's spec is never
    # parsed, so a restarted operator does not cache a model per finished QuantizationJob.
    spec: QuantizationJobSpec | None = None
    spec_error: SpecError | None = None


@dataclasses.dataclass(frozen=True)
class JobsDecision:
    stop: tuple[JobRef, ...] = ()      # in this order, before anything else
    current: Obj | None = None         # the generation's Job, if there is one
    watched: bool = False              # `current` is the watch's copy (the stand-in is no longer needed)
    done: bool = False                 # the pass ends after `stop`
    create: bool = False               # the generation has no Job yet: check the CA ConfigMap, create it
    job_deleted: bool = False          # the status recorded the generation's Job and it is gone


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What creating the generation's Job came to."""
    job: Obj | None = None                  # the Job: created now, or ours found after a 409
    created: bool = False
    config_problem: Fact | None = None      # the CA ConfigMap check failed; nothing was sent
    conflict: str | None = None             # a Job that is not ours holds the name
    rejection: JobRejection | None = None   # the API server refused the Job


@dataclasses.dataclass(frozen=True)
class StatusDecision:
    write: Obj | None = None           # the status to write (with one event per visible transition)
    stop: JobRef | None = None         # after the write: the generation's Job, ended by the status
    requeue: float | None = None       # seconds until the next pass; None: only when something changes


def running(job: Obj | None) -> bool:
    """A Job worth stopping: it exists, has not concluded and is not already being deleted."""
    return job is not None and not job_finished(job) and not deleting(job)


def settled(seen_deleting: bool, prev: Obj, generation: int) -> bool:
    """The pass ends after stopping Jobs: garbage collection removes a deleted QuantizationJob's
    children, and a status final for the generation stays so (it may outlive its Job: TTL)."""
    return seen_deleting or is_final_for(prev, generation)


def decide_jobs(seen: Seen) -> JobsDecision:
    if seen.deleting:
        return JobsDecision(done=True)
    gen = seen.generation
    stop = tuple(JobRef(j["metadata"]["name"], j["metadata"].get("uid"), job_generation(j)) for j in seen.jobs
                 if job_generation(j) not in (None, gen) and running(j))
    watched = next((j for j in seen.jobs if job_generation(j) == gen and j["metadata"].get("name") == seen.job_name), None)
    current = watched if watched is not None else seen.recent_job
    if settled(False, seen.prev, gen):
        # A Job that still runs although the status ended it (e.g. an image that cannot be pulled) stops.
        if running(current):
            stop += (JobRef(seen.job_name, current["metadata"].get("uid")),)
        return JobsDecision(stop, current, watched is not None, done=True)
    if seen.spec is None or current is not None:
        return JobsDecision(stop, current, watched is not None)
    if seen.prev.get("observedGeneration") == gen and seen.prev.get("jobName") == seen.job_name:
        return JobsDecision(stop, None, job_deleted=True)    # seen once: never a second Job for a generation
    return JobsDecision(stop, None, create=True)


def queued_job(jobs: JobsDecision, attempt: Attempt | None) -> Obj | None:
    """The generation's Job while Kueue holds it (suspended, labelled with a queue): the pass reads
    its Workload to say why it waits. A Job created in this pass is left to the next one."""
    job = (attempt.job if attempt is not None and not attempt.created else None) if jobs.create else jobs.current
    if job is None or not (job.get("spec") or {}).get("suspend") or deleting(job):
        return None
    return job if (job["metadata"].get("labels") or {}).get(c.LABEL_KUEUE_QUEUE) else None


def progress_wait(prev: Obj, new: Obj, since_write: float | None, progress_seconds: float) -> float:
    """Seconds to hold back a write of mere progress; 0 to write now. `since_write`: seconds since
    this process last wrote the status (None: never)."""
    urgent = (new.get("phase") in c.FINAL_PHASES or new.get("reason") or prev.get("reason")
              or prev.get("observedGeneration") != new.get("observedGeneration") or not prev.get("phase"))
    if urgent or since_write is None:
        return 0.0
    return max(0.0, progress_seconds - since_write)


def decide_status(seen: Seen, jobs: JobsDecision, attempt: Attempt | None, *, now: str,
                  since_write: float | None, config: OperatorConfig, queue: Queue | None = None,
                  progress: ProgressLine | None = None) -> StatusDecision:
    """`queue`: what the pass read of the Workload of `queued_job(...)`, if any; `progress`: the
    last progress line read from the running stage's log (progress.py), if any."""
    a = attempt or Attempt()
    if a.created:
        # The Job's own watch event follows at once; the first status is written by the pass it
        # triggers (after the coalescing window), together with whatever the pod did meanwhile.
        return StatusDecision(requeue=config.status_coalesce_seconds)
    current = a.job if jobs.create else jobs.current
    requeue: float | None = None
    # A Workload's conditions change without the Job changing (Kueue only updates the Job when it
    # admits it), so a held Job is looked at again on the recheck period.
    if a.config_problem is not None or a.conflict or (a.rejection is not None and not a.rejection.final) \
            or queue is not None:
        requeue = config.recheck_seconds
    pods = [p for p in seen.pods if current is not None and pod_belongs_to(p, current)]
    verdict = observe(generation=seen.generation, spec=seen.spec, spec_error=seen.spec_error, job=current, pods=pods,
                      config_problem=a.config_problem, job_conflict=a.conflict, job_deleted=jobs.job_deleted,
                      job_rejection=a.rejection, queue=queue, now=now)
    new = build_status(verdict, generation=seen.generation,
                       job_name=current.get("metadata", {}).get("name") if current else None, prev=seen.prev, now=now)
    new["progress"] = status_progress(new, seen.prev, progress)
    write = None
    if not verdict.hold and visible(new) != visible(seen.prev):
        wait = progress_wait(seen.prev, new, since_write, config.status_progress_seconds)
        if wait > 0:
            requeue = wait if requeue is None else min(requeue, wait)
        else:
            write = new
    stop = JobRef(seen.job_name, current["metadata"].get("uid")) if verdict.final and running(current) else None
    return StatusDecision(write, stop, requeue)
