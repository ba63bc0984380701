"""A per-key, coalescing work queue. Many triggers for one QuantizationJob (its own watch event,
its Job's, its pods') within a short window become one reconcile pass; one key never has two
passes at once; a trigger during a pass schedules one more pass after it.

Not kopf's own queue (issue 21 item 4): kopf serialises and batches the events of one object
(settings.batching), but a Job's and a Pod's events must trigger a pass of their QuantizationJob,
another object, for which kopf has no queue; its timers and daemons would poll every object."""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# A key's first failures in a row are logged as one line (usually a conflict or an API server
# blip that the retry clears); from this many earlier failures on, with the traceback.
TRACEBACK_AFTER_FAILURES = 2


class Scheduler:
    def __init__(self, worker: Callable[[Hashable], Awaitable[float | None]], concurrency: int = 64):
        self._worker = worker
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._running: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}
        self._errors: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._closed = False
        # Passes wait until the caller says the caches are complete (kopf: all indexes filled).
        self.ready = False

    def enqueue(self, key: Hashable, delay: float = 0.0) -> None:
        if self._closed:
            return
        if key in self._running:
            self._again[key] = min(self._again.get(key, math.inf), delay)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= due:
                return              # an earlier pass is already due: it will see this change too
            timer.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def forget(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._again.pop(key, None)
        self._errors.pop(key, None)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        if not self.ready:
            self._timers[key] = asyncio.get_running_loop().call_later(0.5, self._fire, key)
            return
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable) -> None:
        requeue: float | None = None
        try:
            async with self._slots:
                requeue = await self._worker(key)
            self._errors.pop(key, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed pass is retried with a backoff; the next trigger may come first
            n = self._errors.get(key, 0)
            self._errors[key] = n + 1
            requeue = ERROR_BACKOFF[min(n, len(ERROR_BACKOFF) - 1)]
            log.warning("reconcile of %s failed (retry in %.0fs): %s", key, requeue, exc, exc_info=n >= TRACEBACK_AFTER_FAILURES)
        finally:
            self._running.discard(key)
        again = self._again.pop(key, None)
        delays = [d for d in (again, requeue) if d is not None]
        if delays:
            self.enqueue(key, min(delays))

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
