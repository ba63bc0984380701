"""Rules for a generation that has no Job: why it has none yet (or no longer), in the order
derive.py gives."""
from __future__ import annotations

from kubeslim_api import reasons

from .. import constants as c
from .evidence import Evidence
from .verdict import Verdict, sentence


def invalid_spec(e: Evidence) -> Verdict | None:
    if e.spec_error is None:
        return None
    return Verdict(c.FAILED, reasons.INVALID_SPEC,
                   f"{e.spec_error.field}: {sentence(e.spec_error.message)[:-1]}; fix the field and apply again.",
                   completion_time=e.now)


def job_deleted(e: Evidence) -> Verdict | None:
    if not e.job_deleted:
        return None
    return Verdict(c.FAILED, reasons.JOB_DELETED,
                   "The Job of this generation was deleted before it finished; change the spec (or delete and "
                   "re-create the QuantizationJob) to run again.", completion_time=e.now)


def config_missing(e: Evidence) -> Verdict | None:
    problem = e.config_problem
    return None if problem is None else Verdict(c.PENDING, problem.reason, problem.message, config=problem)


def job_refused(e: Evidence) -> Verdict | None:
    refusal = e.job_rejection
    if refusal is None:
        return None
    return Verdict(c.FAILED if refusal.final else c.PENDING, refusal.reason, refusal.message,
                   completion_time=e.now if refusal.final else None)


def job_name_taken(e: Evidence) -> Verdict | None:
    if not e.job_conflict:
        return None
    return Verdict(c.PENDING, reasons.JOB_NAME_CONFLICT,
                   f"A Job named {e.job_conflict} exists that this QuantizationJob does not own; delete that Job "
                   "or rename the QuantizationJob.")


def creating_job(e: Evidence) -> Verdict:
    return Verdict(c.PENDING, "", "Creating the Job.")
