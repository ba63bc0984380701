"""The job → operator progress line, version 1. Defined once, used by both sides.

While a stage runs, the job pod prints progress lines to stderr: the fixed PREFIX, then one
compact JSON object, then a newline. The operator reads the tail of the running container's log
through the API server (`pods/log` with `tailLines`/`sinceSeconds`) and keeps only the last line
that parses; the pod itself holds no API credential. stderr rather than stdout: stdout carries
the stage's result JSON (`kubeslim-job run`, tests and scripts read it), and the kubelet's log
holds both streams anyway.

A line can land mid-way through another tool's output (tqdm draws its bars with a carriage
return and no newline), so the reader finds PREFIX anywhere in a log line, not only at its start.

Fields (camelCase in the JSON):
  v            PROGRESS_VERSION. Version 1 grows only by optional fields; a reader ignores keys it
               does not know and takes any line whose v >= 1 for what v1 defines.
  stage        the pod stage (contract.STAGES) the line belongs to
  step         what runs now, for people: an algo name, "fp32", "fallback"
  done, total  units of work done / planned in the stage's current plan (total may be absent:
               nothing countable is planned yet)
  unit         what is counted: batches (calibration, evaluation), steps (fallback)
  etaSeconds   seconds until the plan is done at the rate measured so far (absent: unknown yet)
  time         when the line was printed, Unix seconds (the pod's clock is its node's)
  finished     the stage's last line: its work is done
"""
from __future__ import annotations

import json
import math

from pydantic import ConfigDict, Field, ValidationError

from .camel import CamelModel
from .contract import Stage

PREFIX = "kubeslim-progress "
PROGRESS_VERSION = 1
MAX_STEP_CHARS = 63          # a label for people; longer ones are cut, never rejected
MAX_ETA_SECONDS = 10 * 365 * 86400.0
MAX_TIME = 253402300799.0    # 9999-12-31T23:59:59Z


class ProgressLine(CamelModel):
    # A reader ignores keys a newer printer adds (the line is versioned by `v`, grown by optional keys).
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(default=PROGRESS_VERSION, ge=1)
    stage: Stage
    step: str = ""
    done: int = Field(default=0, ge=0)
    total: int | None = Field(default=None, ge=1)
    unit: str = ""
    # Finite and bounded: a reader turns them into RFC 3339 times (years 1970-9999).
    eta_seconds: float | None = Field(default=None, ge=0, le=MAX_ETA_SECONDS, allow_inf_nan=False)
    time: float = Field(ge=0, le=MAX_TIME, allow_inf_nan=False)
    finished: bool = False

    @property
    def percent(self) -> int | None:
        """Whole percent of the plan; 100 only on the stage's finished line (a plan can be an
        estimate: a retried calibration pass counts again), else at most 99."""
        if self.finished:
            return 100
        if self.total is None:
            return None
        return min(99, math.floor(100 * self.done / self.total))


def format_line(line: ProgressLine) -> str:
    """PREFIX + compact JSON, without the newline."""
    doc = line.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False)
    doc["step"] = doc.get("step", "")[:MAX_STEP_CHARS]
    return PREFIX + json.dumps(doc, separators=(",", ":"), allow_nan=False)


def parse_line(text: str) -> ProgressLine | None:
    """The progress line in one log line; None if it holds none or a malformed one (a log is
    untrusted text: user code runs in the pod and may print anything)."""
    at = text.rfind(PREFIX)
    if at < 0:
        return None
    try:
        doc = json.loads(text[at + len(PREFIX):])
        if not isinstance(doc, dict):
            return None
        if isinstance(doc.get("step"), str):
            doc["step"] = doc["step"][:MAX_STEP_CHARS]
        return ProgressLine.model_validate(doc)
    except (ValueError, ValidationError):
        return None


def last_line(log_tail: str) -> ProgressLine | None:
    """The last well-formed progress line in a log tail (the lines after it, if any, are other output)."""
    for text in reversed(log_tail.splitlines()):
        line = parse_line(text)
        if line is not None:
            return line
    return None
