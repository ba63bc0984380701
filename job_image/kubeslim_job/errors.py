"""Errors that map to the result contract's exit codes.

Every failure the job can explain is a `JobError` with a machine-readable `reason`, one human
sentence naming the cause and the fix, and the exit code the operator's podFailurePolicy acts on.
Anything else escaping a stage is a crash (exit 1, retried by the Job's backoffLimit).
"""
from __future__ import annotations

from typing import Iterable, Protocol

from kubeslim_api.contract import EXIT_ACCURACY_GATE, EXIT_BAD_INPUT, EXIT_TRANSIENT
from kubeslim_api.text import truncate

# How much of a foreign error (Paddle's, numpy's) one line of ours quotes, and how long the list of
# every candidate's error may get: the termination message that carries them holds 4 KiB in all.
ERROR_LINE_CHARS = 300
CANDIDATE_ERRORS_CHARS = 900


class JobError(Exception):
    exit_code = EXIT_BAD_INPUT

    def __init__(self, reason: str, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code
        self.results = self.gate = self.artifacts = None
        self.details: dict = {}

    def with_results(self, results, gate, artifacts, details: dict) -> "JobError":
        """Attach what was measured, so a failed gate still reports its numbers."""
        self.results, self.gate, self.artifacts, self.details = results, gate, artifacts, details
        return self


class BadInput(JobError):
    """The spec, the data or the model is wrong: retrying cannot help."""
    exit_code = EXIT_BAD_INPUT


class Transient(JobError):
    """Storage timeout, throttling, a 5xx: the Job retries the pod."""
    exit_code = EXIT_TRANSIENT


class GateFailed(JobError):
    exit_code = EXIT_ACCURACY_GATE


def last_line(exc: BaseException) -> str:
    """`Type: the last meaningful line` of an exception: Paddle and numpy put the cause last, under
    banners of dashes. For messages; the traceback goes to the log."""
    text = str(exc).strip().splitlines()
    line = next((ln.strip() for ln in reversed(text) if ln.strip() and not set(ln.strip()) <= set("-=[]")), "")
    return f"{type(exc).__name__}: {truncate(line, ERROR_LINE_CHARS)}" if line else type(exc).__name__


class _Failed(Protocol):
    algo: str
    error: str | None


def candidate_errors(candidates: Iterable[_Failed]) -> str:
    """`algo: error; algo: error` of the candidates that failed, cut to CANDIDATE_ERRORS_CHARS."""
    return truncate("; ".join(f"{c.algo}: {c.error}" for c in candidates if c.error is not None),
                    CANDIDATE_ERRORS_CHARS)
