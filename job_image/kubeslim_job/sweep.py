"""The pod roles of a parallel sweep (spec.quantization.parallelism > 1; the design and why it is so:
kubeslim_api.sweep). Outside an Indexed Job of the operator's (no KUBESLIM_SWEEP_URI or no
JOB_COMPLETION_INDEX, e.g. `kubeslim-job run -f`) `runner` gives None and the plain stages run.

  index 0        export: the plain export, then its files to <work prefix>/export/
  index > 0      export: waits for index 0's files and downloads them
  index i < K    calibrate: algos[i] alone, its model and its CalibratedCandidate to candidates/
                 verify: hands on (the final index verifies)
  index K        calibrate: the samples as usual (the fallback re-calibrates from them), then waits
                 for the K candidates and downloads them; verify: the plain verify stage over all of
                 them, then removes the work prefix
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable

from kubeslim_api import reasons, sweep
from kubeslim_api.contract import NON_RETRYABLE_EXIT_CODES, Stage, StageResult
from kubeslim_api.spec import QuantizationJobSpec, QuantizationSpec

from . import progress
from .errors import JobError
from .handoff import CalibratedCandidate, ExportFacts, StageOutcome, StageRunner
from .storage import Storage, join_uri
from .workdir import MODEL_FILE, PARAMS_FILE, WorkDir

POLL_SECONDS = 2.0
# The work prefix lies under spec.output.uri: a storage error names that field.
FIELD = "spec.output.uri"
MODEL_FILES = (MODEL_FILE, PARAMS_FILE)


def runner(stage: Stage, spec: QuantizationJobSpec, env: dict[str, str] | os._Environ = os.environ) -> StageRunner | None:
    """This pod's runner for `stage` in a parallel sweep; None where the plain stage runs."""
    uri, index = env.get(sweep.URI_ENV), env.get(sweep.INDEX_ENV)
    q = spec.quantization
    if not sweep.is_sweep(q) or not uri or index is None:
        return None
    i = int(index)
    final = i == sweep.final_index(q)
    if stage == "export":
        return _export_first(uri) if i == 0 else _export_from(uri)
    if stage == "calibrate":
        return _gather(uri) if final else _candidate(uri, q.algos[i])
    return _publish(uri) if final else _handed_on(q, i)


# -- export ----------------------------------------------------------------------------------------

def _export_first(uri: str) -> StageRunner:
    def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> ExportFacts:
        from . import export

        facts = export.run(spec, storage, work)
        prefix = join_uri(uri, sweep.EXPORT_PREFIX)
        for name in MODEL_FILES:
            storage.upload(os.path.join(work.fp32, name), join_uri(prefix, name), FIELD)
        storage.upload(work.path(ExportFacts.FILE), join_uri(prefix, ExportFacts.FILE), FIELD)   # the marker: last
        return facts
    return run


def _export_from(uri: str) -> StageRunner:
    def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> ExportFacts:
        prefix = join_uri(uri, sweep.EXPORT_PREFIX)
        wait_for(storage, prefix, [ExportFacts.FILE], "exports", "index 0's export")
        for name in MODEL_FILES:
            storage.download(join_uri(prefix, name), os.path.join(work.fp32, name), FIELD)
        storage.download(join_uri(prefix, ExportFacts.FILE), work.path(ExportFacts.FILE), FIELD)
        return work.load(ExportFacts)
    return run


# -- calibrate -------------------------------------------------------------------------------------

def _one_algo(spec: QuantizationJobSpec, algo: str) -> QuantizationJobSpec:
    return spec.model_copy(update={"quantization": spec.quantization.model_copy(update={"algos": [algo]})})


def _candidate(uri: str, algo: str) -> StageRunner:
    def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir):
        from . import calibrate

        # No require_candidate: an algo that fails is a candidate with its error, as in a sequential
        # sweep; the final index decides whether any quantized the model.
        doc = calibrate.calibrate(_one_algo(spec, algo), storage, work, calibrate.quantize_each)
        (cand,) = doc.candidates
        prefix = join_uri(uri, sweep.CANDIDATES_PREFIX)
        if cand.error is None:
            for name in MODEL_FILES:
                storage.upload(os.path.join(work.root, cand.dir, name), join_uri(prefix, f"{algo}/{name}"), FIELD)
        _put_json(storage, cand.model_dump_json(by_alias=True, exclude_none=True), join_uri(prefix, f"{algo}.json"))
        return doc
    return run


def _gather(uri: str) -> StageRunner:
    def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir):
        from . import calibrate

        return calibrate.require_candidate(calibrate.calibrate(spec, storage, work, candidates_from(storage, uri)))
    return run


def candidates_from(storage: Storage, uri: str) -> Callable[..., list[CalibratedCandidate]]:
    """calibrate's CandidateMaker for the final index: every algo's candidate as its index left it,
    in spec order, its model downloaded to work/int8/<algo> as a sequential sweep would have it."""
    def make(q: QuantizationSpec, calib, facts: ExportFacts, work: WorkDir, batch_nums: int) -> list[CalibratedCandidate]:
        prefix = join_uri(uri, sweep.CANDIDATES_PREFIX)
        wait_for(storage, prefix, [f"{a}.json" for a in q.algos], "candidates", "the candidates")
        out = []
        for algo in q.algos:
            cand = CalibratedCandidate.model_validate_json(storage.get_bytes(join_uri(prefix, f"{algo}.json"), FIELD))
            if cand.error is None:
                for name in MODEL_FILES:
                    storage.download(join_uri(prefix, f"{algo}/{name}"), os.path.join(work.int8(algo), name), FIELD)
            out.append(cand)
        return out
    return make


# -- verify ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HandedOn:
    """A candidate index's verify stage: nothing to measure here."""
    algo: str
    final: int

    def to_result(self) -> StageResult:
        return StageResult(stage="verify", ok=True, reason=reasons.SUCCEEDED,
                           message=f"candidate {self.algo} handed on: index {self.final} verifies every candidate, "
                                   "chooses and publishes")


def _handed_on(q: QuantizationSpec, index: int) -> StageRunner:
    def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> StageOutcome:
        return HandedOn(q.algos[index], sweep.final_index(q))
    return run


def _publish(uri: str) -> StageRunner:
    def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> StageOutcome:
        from . import verify

        try:
            outcome = verify.run(spec, storage, work)
        except JobError as exc:
            if exc.exit_code in NON_RETRYABLE_EXIT_CODES:     # a final verdict (a failed gate): no retry reads them
                remove_prefix(storage, uri)
            raise
        remove_prefix(storage, uri)
        return outcome
    return run


# -- the work prefix -------------------------------------------------------------------------------

def wait_for(storage: Storage, prefix: str, names: list[str], unit: str, what: str,
             sleep: Callable[[float], None] = time.sleep) -> None:
    """Until every object of `names` (relative to `prefix`) exists. Unbounded here: the Job's
    activeDeadlineSeconds bounds it, and a failed index that cannot be retried fails the Job,
    whose controller then stops this pod."""
    want = set(names)
    progress.plan(len(want), unit, step=f"waiting for {what}")
    have: set[str] = set()
    while True:
        found = {u[len(prefix):] for u in storage.iter_objects(prefix, FIELD)} & want
        progress.advance(unit, len(found - have))
        have = found
        if have == want:
            return
        sleep(POLL_SECONDS)


def _put_json(storage: Storage, text: str, uri: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(text)
    try:
        storage.upload(fh.name, uri, FIELD, "application/json")
    finally:
        os.remove(fh.name)


def remove_prefix(storage: Storage, uri: str) -> None:
    """The run's work files, once its result is final. Best effort: what is left costs storage,
    not correctness (the next run has a prefix of its own)."""
    try:
        for obj in list(storage.iter_objects(uri, FIELD)):
            storage.delete(obj, FIELD)
    except JobError as exc:
        print(f"kubeslim-job: the sweep's work files under {uri} stay: {exc.message}", file=sys.stderr, flush=True)
