"""Progress lines for the operator (kubeslim_api.progress): a rate-limited printer.

The stages call the module-level functions; they do nothing unless `start()` made a Reporter for
the running stage (cli.run_stage does), so calibrate/verify/fallback code called directly (tests,
benchmarks) prints nothing.

  start(stage)                  a line at once ("stage started"), and a heartbeat thread
  plan(total, unit, step="")    a new plan: `total` units of `unit` from now on (a line at once)
  step(name)                    a label for what runs now (rate-limited line)
  advance(unit, n=1)            n units done; counted only when `unit` is the plan's unit, so the
                                evaluation loop's batches do not count as fallback steps while the
                                fallback measures its candidates (rate-limited line)
  finish(ok=True)               the stage's last line (finished, percent 100, when ok) and the
                                thread stops

Rate: at most one line per `interval` (2 s) from advance/step, so a loop of thousands of
batches costs a few dozen lines; start, plan and finish always print. The heartbeat prints the
current state again when nothing was printed for `heartbeat` seconds (5 s): long Paddle calls
without a countable unit (KL's threshold search, latency timing, an upload) still show a fresh
`time`, which is how the operator and the user tell a slow stage from a stuck one.

ETA: the remaining units at the rate measured since the plan began (`done / elapsed`); unknown
until the first unit is done.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from kubeslim_api.contract import Stage
from kubeslim_api.progress import ProgressLine, format_line

INTERVAL_SECONDS = 2.0
HEARTBEAT_SECONDS = 5.0


class Reporter:
    def __init__(self, stage: Stage, *, write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 interval: float = INTERVAL_SECONDS):
        self.stage: Stage = stage
        self._write = write or _write_stderr
        self._clock, self._wall = clock, wall
        self._interval = interval
        self._lock = threading.Lock()
        self._step = ""
        self._unit = ""
        self._done = 0
        self._total: int | None = None
        self._plan_started = clock()
        self._last_print: float | None = None
        self._finished = False

    # -- what the stages call ---------------------------------------------------------------------

    def plan(self, total: int, unit: str, step: str | None = None) -> None:
        with self._lock:
            self._total, self._unit, self._done = max(1, int(total)), unit, 0
            self._plan_started = self._clock()
            if step is not None:
                self._step = step
            self._print()

    def step(self, name: str) -> None:
        with self._lock:
            self._step = name
            self._maybe_print()

    def advance(self, unit: str, n: int = 1) -> None:
        with self._lock:
            if unit != self._unit or self._finished:
                return
            self._done += n
            self._maybe_print()

    def finish(self, ok: bool = True) -> None:
        """The last line: finished (100 %) when the stage's work is done; a failed stage's last line
        keeps how far it got."""
        with self._lock:
            self._finished = ok
            self._print()

    def beat(self, heartbeat: float) -> None:
        """The heartbeat: print the current state if nothing was printed for `heartbeat` seconds."""
        with self._lock:
            if not self._finished and (self._last_print is None or self._clock() - self._last_print >= heartbeat):
                self._print()

    # -- the line ---------------------------------------------------------------------------------

    def line(self) -> ProgressLine:
        now = self._clock()
        done = self._done if self._total is None else min(self._done, self._total)
        eta = None
        if self._total is not None and done > 0 and not self._finished:
            eta = round((self._total - done) * (now - self._plan_started) / done, 1)
        return ProgressLine(stage=self.stage, step=self._step, done=done, total=self._total, unit=self._unit,
                            eta_seconds=eta, time=round(self._wall(), 3), finished=self._finished)

    def _maybe_print(self) -> None:
        if self._last_print is None or self._clock() - self._last_print >= self._interval:
            self._print()

    def _print(self) -> None:
        self._last_print = self._clock()
        self._write(format_line(self.line()))


def _write_stderr(text: str) -> None:
    # A newline first when another tool left a line open (tqdm's \r bars) would cost a blank line
    # in every other case; the reader finds the prefix anywhere in a line instead.
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def calibration_batches(algos: tuple[str, ...] | list[str], batches: int) -> int:
    """Batches PaddleSlim's quant_post_static takes from its DataLoader for `algos`, `batches`
    (batch_nums) per pass: KL and hist take them twice (Paddle 2.6's
    PostTrainingQuantization.quantize first collects each activation's abs-max over every batch,
    then fills the histograms in a second pass), the others once. adaround reads more than this;
    the percent then waits at 99 until the end."""
    return sum((2 if algo in ("KL", "hist") else 1) * batches for algo in algos)


def evaluation_batches(samples: int, batch_size: int, models: int) -> int:
    """Batches the verify stage scores: every model runs the whole evaluation set once."""
    return models * -(-samples // batch_size)


# -- the running stage's reporter (one stage per process at a time) -------------------------------

_current: Reporter | None = None
_stop_heartbeat: threading.Event | None = None


def start(stage: Stage, heartbeat: float | None = HEARTBEAT_SECONDS, **kwargs) -> Reporter:
    """Make the reporter of `stage` current and print its first line; `heartbeat` None: no thread."""
    global _current, _stop_heartbeat
    finish()
    reporter = _current = Reporter(stage, **kwargs)
    with reporter._lock:
        reporter._print()
    if heartbeat:
        stop = _stop_heartbeat = threading.Event()

        def beat() -> None:
            while not stop.wait(heartbeat / 2):
                reporter.beat(heartbeat)

        threading.Thread(target=beat, name="kubeslim-progress", daemon=True).start()
    return reporter


def finish(ok: bool = True) -> None:
    """Print the current stage's last line and stop its heartbeat (no-op without one)."""
    global _current, _stop_heartbeat
    if _stop_heartbeat is not None:
        _stop_heartbeat.set()
        _stop_heartbeat = None
    if _current is not None:
        _current.finish(ok)
        _current = None


def plan(total: int, unit: str, step: str | None = None) -> None:
    if _current is not None:
        _current.plan(total, unit, step)


def step(name: str) -> None:
    if _current is not None:
        _current.step(name)


def advance(unit: str, n: int = 1) -> None:
    if _current is not None:
        _current.advance(unit, n)
