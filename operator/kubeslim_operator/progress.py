"""status.progress: how far the running stage is, from the job pod's own log.

The decision (issue 19). The job pod prints progress lines (kubeslim_api.progress: a fixed prefix
and one JSON object, at most one per 2 s and at least one per 5 s while a stage runs) and the
operator reads the tail of the running container's log through the API server's `pods/log`
subresource (`tailLines`, `limitBytes`, `sinceSeconds`): only the last line matters. Why this way:
- The pod stays credential-free. It runs user code (custom models) and has no ServiceAccount
  token (the admission policy refuses one); a pod that patched its own status would need a token
  allowed to write QuantizationJob status in its namespace.
- No network path from the operator to job pods (a scraped HTTP endpoint would need one, an open
  port in a pod running user code and a NetworkPolicy hole), no sidecar, no volume.
- The kubelet keeps the log anyway, and `pods/log` get is the only new permission.
Why the reconciler's own scheduler rather than a kopf timer: the scheduler already serialises
passes per QuantizationJob, runs only on the leader and takes "look again in N seconds" as a
pass's return value (the requeue); a kopf timer would be a second trigger path with per-object
state of its own, and kopf's timers keep their state in annotations on the object (a patch the
operator's RBAC does not grant).

When: a pass that sees a stage container running reads that container's log when its read is due,
every READ_SECONDS, and returns that due time as its requeue, so a running QuantizationJob gets a
pass at least every READ_SECONDS with no watch event at all. The status write of progress alone is
held to once per config.status_progress_seconds (5 s) by decide.progress_wait; a line that did
not change writes nothing (the progress object is a function of the line). Worst case from a
printed line to the status: 5 s (printer heartbeat) + 5 s (read) < 10 s. A container whose log
gives no progress line (kwok's fake pods, a job image without the printer, an error from the API
server) is read again after a doubling backoff up to MAX_BACKOFF_SECONDS, so thousands of such
pods cost little.

GitOps: progress is not a condition; Ready/Reconciling/Stalled and observedGeneration are written
exactly as before, so Argo CD and kstatus judge the object the same while it changes, and no event
is posted for it (status.transition_event keys on phase, reason and stage only).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import aiohttp

from kubeslim_api.progress import ProgressLine, last_line

from . import constants as c
from .constants import Obj
from .kube import ApiError, Kube
from .objects import pod_belongs_to
from .status.sweep import shown_pod
from .status.verdict import created
from .times import format_time

log = logging.getLogger(__name__)

READ_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 60.0
# The printer writes a line at least every 5 s: the last minute of a log holds the newest line,
# and 50 lines / 64 KiB leave room for what Paddle and PaddleSlim print between two of them.
TAIL_LINES = 50
SINCE_SECONDS = 60
LIMIT_BYTES = 64 * 1024
# The API server fetches a log from the node's kubelet; a node that does not answer (lost, or a
# kwok node with no kubelet) must not hold the reconciler's shared connection pool (which status
# writes and Job creates use) for the session's c.API_REQUEST_TIMEOUT_SECONDS. So a read gives up
# after READ_TIMEOUT_SECONDS, and at most MAX_CONCURRENT_READS run at once: a pass that finds them
# all busy reads next time.
READ_TIMEOUT_SECONDS = 5.0
MAX_CONCURRENT_READS = 4
_reads_in_flight = 0


def log_target(job: Obj | None, pods: list[Obj] | tuple[Obj, ...]) -> tuple[str, str] | None:
    """(pod, container) whose log tells the progress: the stage container running in the Job's
    newest live pod; None when no stage runs."""
    if job is None:
        return None
    live = [p for p in pods if pod_belongs_to(p, job) and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")
            and not (p.get("metadata") or {}).get("deletionTimestamp")]
    if not live:
        return None
    pod = shown_pod(job, sorted(live, key=created))    # the pod whose stage the status shows
    st = pod.get("status") or {}
    for s in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        if s.get("name") in c.STAGE_NAMES and "running" in (s.get("state") or {}):
            return pod["metadata"]["name"], s["name"]
    return None


@dataclasses.dataclass(slots=True)
class Reading:
    """What this process read of one QuantizationJob's log (kept in the reconciler's Memory)."""
    target: tuple[str, str] | None = None
    line: ProgressLine | None = None       # the last progress line of `target`
    due: float = 0.0                       # monotonic time of the next read
    misses: int = 0                        # reads in a row that gave no line

    def wait(self, now: float | None = None) -> float:
        return max(0.0, self.due - (time.monotonic() if now is None else now))


def next_read(misses: int) -> float:
    """Seconds to the next read after `misses` reads in a row without a line (0: a line was read)."""
    return min(MAX_BACKOFF_SECONDS, READ_SECONDS * 2 ** misses)


async def read(kube: Kube, namespace: str, target: tuple[str, str] | None, reading: Reading,
               now: float | None = None) -> None:
    """Read the target's log tail into `reading` when due; any failure only delays the next read
    (progress is a courtesy: the pass goes on without it)."""
    global _reads_in_flight
    now = time.monotonic() if now is None else now
    if target != reading.target:
        reading.target, reading.line, reading.due, reading.misses = target, None, 0.0, 0
    if target is None or now < reading.due:
        return
    if _reads_in_flight >= MAX_CONCURRENT_READS:
        reading.due = now + READ_SECONDS
        return
    pod, container = target
    line = None
    _reads_in_flight += 1
    try:
        text = await kube.read_log(namespace, pod, container, tail_lines=TAIL_LINES, since_seconds=SINCE_SECONDS,
                                   limit_bytes=LIMIT_BYTES, timeout=READ_TIMEOUT_SECONDS)
        line = last_line(text)
    except ApiError as exc:
        if exc.status == 403:
            log.warning("%s: may not read pod logs (HTTP 403); grant get on pods/log for status.progress", namespace)
        else:
            log.debug("%s/%s: no log for %s (HTTP %s)", namespace, pod, container, exc.status)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.debug("%s/%s: reading the log of %s failed: %s", namespace, pod, container, exc)
    finally:
        _reads_in_flight -= 1
    if line is not None and line.stage == container:
        reading.line, reading.misses = line, 0
    else:
        reading.misses += 1
    reading.due = now + next_read(reading.misses)


def from_line(line: ProgressLine) -> Obj:
    """A line as status.progress. A stage with nothing countable planned yet (export; the data
    download before calibration) is at 0 %: PROGRESS shows a number throughout a run."""
    counted = line.total is not None
    out: Obj = {"stage": c.STAGE_NAMES[line.stage], "step": line.step or None,
                "done": line.done if counted else None, "total": line.total, "unit": (line.unit or None) if counted else None,
                "percent": line.percent if line.percent is not None else 0,
                "eta": format_time(line.time + line.eta_seconds) if line.eta_seconds is not None else None,
                "updatedAt": format_time(line.time)}
    return {k: v for k, v in out.items() if v is not None}


def status_progress(new: Obj, prev: Obj, line: ProgressLine | None) -> Obj | None:
    """status.progress for the status `new` (built from the same pass), given the last one
    written (`prev`) and the running stage's last progress line.

    Running: the line, when it is of the running stage; else what the status said of that stage;
    else the stage at 0 %. Pending: 0 % (nothing runs; a retry starts over). Succeeded: 100 %.
    Failed: what the status said last in this generation (how far it got), else nothing."""
    phase, stage = new.get("phase"), new.get("stage") or ""
    before = prev.get("progress") if prev.get("observedGeneration") == new.get("observedGeneration") else None
    if phase == c.SUCCEEDED:
        return {"percent": 100}
    if phase == c.FAILED:
        return before
    if phase == c.RUNNING and stage:
        if line is not None and c.STAGE_NAMES.get(line.stage) == stage:
            return from_line(line)
        if before and before.get("stage") == stage:
            return before
        return {"stage": stage, "percent": 0}
    return {"percent": 0}
