"""kubeslim-job: the job image's one entrypoint.

In the pod (the operator's Job: three containers in order, e.g. two initContainers + one container,
sharing one emptyDir at /work):

    kubeslim-job export    --work-dir /work
    kubeslim-job calibrate --work-dir /work
    kubeslim-job verify    --work-dir /work

  spec:      env KUBESLIM_SPEC = the CR's .spec as JSON (or --spec-file PATH: JSON or YAML, either the
             .spec mapping or a whole QuantizationJob manifest). --spec-file wins over the env.
  S3:        AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from spec.storage.credentialsSecret (or none:
             the pod's ambient identity), AWS_ENDPOINT_URL (optional; overrides spec.storage.endpoint),
             AWS_CA_BUNDLE = path of the mounted spec.storage.caBundle key (optional).
  writable:  --work-dir (emptyDir, holds the model, the candidates and the preprocessed data:
             size it at least 3x the fp32 model + evaluation samples x C x H x W x 4 bytes),
             HOME and MPLCONFIGDIR (default to <work-dir>/.home when HOME is not writable), /tmp
             (an emptyDir; Paddle writes there). The root filesystem can be read-only.
  sweep:     in a parallel sweep's Indexed Job (spec.quantization.parallelism > 1) the same three
             commands play the pod's part by its JOB_COMPLETION_INDEX, handing files on through the
             run's S3 work prefix KUBESLIM_SWEEP_URI (sweep.py)
  result:    each stage writes a contract.StageResult (<= 4096 bytes) to --termination-log
             (default /dev/termination-log when it exists; "-" for none) and exits with
             0 ok, 3 bad input (do not retry), 4 accuracy gate failed, 75 transient (retry),
             1 anything unexpected (a crash: retry).

Without a cluster:

    kubeslim-job run -f job.yaml --result result.json [--work-dir DIR]

runs export, calibrate and verify in one process and writes the last stage's StageResult (the
same JSON the operator reads) to --result; the exit code is that stage's.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede any paddle import (libpaddle bundles a clashing zlib)

import os

# Paddle 3 reads this flag once, when paddle is imported. With PIR on (its default) jit.save writes
# PIR JSON and PaddleSlim's quant_post_static fails with a bare AssertionError; off, Paddle 3 writes
# and quantizes legacy .pdmodel programs that Paddle 2.6 Inference runs too. Forced, not defaulted:
# a PIR setting inherited from the user's shell would break calibration. Paddle 2.6 has the same
# flag, off already. Set here, before any stage imports paddle, so `kubeslim-job run` outside the
# image (whose ENV sets it too) behaves the same; child processes inherit it.
PIR_FLAG = "FLAGS_enable_pir_api"
os.environ[PIR_FLAG] = "0"

import argparse  # noqa: E402  -- after the Paddle flag above, by design
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile
import time
import traceback
from typing import TYPE_CHECKING, Any

from kubeslim_api import reasons
from kubeslim_api.contract import (EXIT_BAD_INPUT, EXIT_OK, STAGES, TERMINATION_MESSAGE_PATH, WORK_DIR, Stage, StageResult,
                                   encode)
from kubeslim_api.spec import QuantizationJobSpec, SpecError, parse_manifest, parse_spec

from . import progress, sweep
from .errors import JobError, last_line

if TYPE_CHECKING:
    from .handoff import StageRunner
    from .storage import Storage

SPEC_ENV = "KUBESLIM_SPEC"


def load_spec(spec_file: str | None) -> QuantizationJobSpec:
    """The spec from --spec-file or env KUBESLIM_SPEC; a SpecError names the bad field."""
    import yaml

    if spec_file:
        try:
            with open(spec_file) as fh:
                doc = yaml.safe_load(fh)
        except OSError as exc:
            raise SpecError("--spec-file", f"cannot read {spec_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SpecError("--spec-file", f"{spec_file} is not YAML/JSON: {str(exc).splitlines()[0]}") from None
    elif os.environ.get(SPEC_ENV):
        try:
            doc = json.loads(os.environ[SPEC_ENV])
        except json.JSONDecodeError as exc:
            raise SpecError(SPEC_ENV, f"is not JSON ({exc.msg} at char {exc.pos})") from None
    else:
        raise SpecError("spec", f"no spec: pass --spec-file or set {SPEC_ENV}")
    if not isinstance(doc, dict):
        raise SpecError("spec", "must be a mapping")
    if "kind" in doc:
        return parse_manifest(doc)[1]
    if "spec" in doc and "model" not in doc:
        return parse_spec(doc["spec"])
    return parse_spec(doc)


def _ensure_writable_home(work_dir: str) -> None:
    """Paddle and matplotlib write under HOME / MPLCONFIGDIR; with a read-only root filesystem and a
    numeric user, point them into the work dir."""
    home = os.environ.get("HOME", "")
    if not home or not os.access(home, os.W_OK):
        home = os.path.join(work_dir, ".home")
        os.makedirs(home, exist_ok=True)
        os.environ["HOME"] = home
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ["HOME"], ".matplotlib"))


# Each stage's module; its `run(spec, storage, work)` (handoff.StageRunner) returns an outcome that knows
# its StageResult. Imported when the stage runs: calibrate and verify import paddle at load.
STAGE_MODULES: dict[Stage, str] = {"export": ".export", "calibrate": ".calibrate", "verify": ".verify"}


def run_stage(stage: Stage, spec: QuantizationJobSpec, work_dir: str) -> StageResult:
    """Run one stage and return its StageResult; a JobError becomes a not-ok result (never raises).
    Progress lines for the operator (progress.py) go to stderr from start to end."""
    progress.start(stage)
    res = _run_stage(stage, spec, work_dir)
    progress.finish(res.ok)
    return res


def _run_stage(stage: Stage, spec: QuantizationJobSpec, work_dir: str) -> StageResult:
    from .storage import Storage
    from .workdir import WorkDir

    t0 = time.perf_counter()
    work = WorkDir(work_dir)
    storage = None
    try:
        storage = Storage.from_spec(spec)
        # A parallel sweep's pod plays its index's part (sweep.py); any other pod runs the stage as is.
        run: StageRunner = sweep.runner(stage, spec) or importlib.import_module(STAGE_MODULES[stage], __package__).run
        return _ok(run(spec, storage, work).to_result(), storage, t0)
    except SpecError as exc:
        return _fail(stage, reasons.INVALID_SPEC, str(exc), EXIT_BAD_INPUT, {}, storage, t0)
    except JobError as exc:
        res = _fail(stage, exc.reason, exc.message, exc.exit_code, exc.details, storage, t0)
        res.results, res.gate, res.artifacts = exc.results, exc.gate, exc.artifacts
        return res
    except MemoryError:
        return _fail(stage, reasons.OUT_OF_MEMORY, "ran out of memory; raise spec.resources.memory or lower "
                                                   "spec.verification.batchSize", 1, {}, storage, t0)
    except Exception as exc:  # a crash: the traceback goes to the log, one line to the message
        traceback.print_exc()
        return _fail(stage, reasons.INTERNAL_ERROR, f"unexpected {last_line(exc)}; see the pod log", 1, {}, storage, t0)


def _ok(res: StageResult, storage: Storage, t0: float) -> StageResult:
    res.details = {**res.details, "seconds": round(time.perf_counter() - t0, 3), "bytesReadTotal": storage.bytes_read}
    return res


def _fail(stage: Stage, reason: str, message: str, code: int, details: dict[str, Any], storage: Storage | None,
          t0: float) -> StageResult:
    details = {**(details or {}), "seconds": round(time.perf_counter() - t0, 3), "exitCode": code}
    if storage is not None:
        details["bytesReadTotal"] = storage.bytes_read
    return StageResult(stage=stage, ok=False, reason=reason, message=message, details=details)


def exit_code(res: StageResult) -> int:
    return EXIT_OK if res.ok else int(res.details.get("exitCode", 1))


def _emit(res: StageResult, path: str | None) -> None:
    text = encode(res)
    print(text, flush=True)
    if path:
        try:
            with open(path, "w") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"kubeslim-job: cannot write the result to {path}: {exc.strerror}", file=sys.stderr)


def _default_termination_log() -> str | None:
    return TERMINATION_MESSAGE_PATH if os.path.exists(TERMINATION_MESSAGE_PATH) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubeslim-job", description="int8 post-training quantization of a Paddle model "
                                "(export -> calibrate -> verify) as described by a QuantizationJob spec")
    sub = p.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        s = sub.add_parser(stage, help=f"the {stage} stage of the pod")
        s.add_argument("--spec-file", help=f"spec JSON/YAML (default: env {SPEC_ENV})")
        s.add_argument("--work-dir", default=WORK_DIR, help=f"directory shared by the stages (default {WORK_DIR})")
        s.add_argument("--termination-log", default=None,
                       help=f"where to write the result message (default {TERMINATION_MESSAGE_PATH} if present; - for none)")
    r = sub.add_parser("run", help="all three stages locally on a QuantizationJob manifest")
    r.add_argument("-f", "--filename", required=True, help="QuantizationJob manifest (YAML)")
    r.add_argument("--result", required=True, help="write the final result JSON here")
    r.add_argument("--work-dir", default=None, help="work directory (default: a fresh temporary directory)")
    args = p.parse_args(argv)

    if args.command == "run":
        work_dir = args.work_dir or tempfile.mkdtemp(prefix="kubeslim-")
        os.makedirs(work_dir, exist_ok=True)
        _ensure_writable_home(work_dir)
        try:
            spec = load_spec(args.filename)
        except SpecError as exc:
            res = _fail("export", reasons.INVALID_SPEC, str(exc), EXIT_BAD_INPUT, {}, None, time.perf_counter())
            _emit(res, args.result)
            return exit_code(res)
        for stage in STAGES:
            res = run_stage(stage, spec, work_dir)
            print(f"kubeslim-job: {stage}: {'ok' if res.ok else res.reason}: {res.message}", file=sys.stderr, flush=True)
            if not res.ok:
                break
        _emit(res, args.result)
        return exit_code(res)

    tlog = args.termination_log
    tlog = None if tlog == "-" else (tlog or _default_termination_log())
    os.makedirs(args.work_dir, exist_ok=True)
    _ensure_writable_home(args.work_dir)
    try:
        spec = load_spec(args.spec_file)
    except SpecError as exc:
        res = _fail(args.command, reasons.INVALID_SPEC, str(exc), EXIT_BAD_INPUT, {}, None, time.perf_counter())
    else:
        res = run_stage(args.command, spec, args.work_dir)
    _emit(res, tlog)
    return exit_code(res)


if __name__ == "__main__":
    sys.exit(main())
