"""spec.output.onnx: the chosen int8 model as ONNX (QDQ) through paddle2onnx, checked by onnxruntime.

paddle2onnx's C++ core ends the whole process (SIGABRT) when a model has an operator it has no
converter for, and on its other export errors, so the conversion runs in a child process
(`python -m kubeslim_job.onnx_export MODEL PARAMS DEST OPSET`) and its log says why. A model that
does not convert, that onnxruntime cannot run, or whose accuracy under onnxruntime strays more
than spec.output.onnx.maxAccuracyDelta from the Paddle int8 model's is a finding (an OnnxResult
with exported=False and a reason from kubeslim_api.reasons), never a failed run: the Paddle int8
model it came from passed its gate and is published either way.

Why a tolerance at all: onnxruntime's int8 kernels (QLinearConv/QLinearMatMul from the QDQ pairs)
and oneDNN's round and requantize differently, so a few samples near a decision boundary change
class. onnxruntime runs on the CPU in both images: this is a check of the file, and its latency
is onnxruntime's on this pod's CPUs, whatever backend verified the Paddle model.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle (paddle2onnx imports it)

import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from kubeslim_api import reasons
from kubeslim_api.contract import OnnxResult, metric_value
from kubeslim_api.spec import OnnxOutput
from kubeslim_api.text import truncate

from .errors import ERROR_LINE_CHARS, last_line
from .gate import within
from .handoff import MeasuredCandidate
from .workdir import MODEL_FILE, PARAMS_FILE

MODEL_ONNX = "model.onnx"
CONVERT_TIMEOUT_S = 900
CONVERTER_LOG_TAIL_CHARS = 8000     # what of paddle2onnx's (verbose) output goes to the pod log

_UNSUPPORTED = re.compile(r"operators not supported yet, including ([^\n]*)")
_OPSET_USED = re.compile(r"Use opset_version = (\d+)")
_ERROR_LINE = re.compile(r"\[ERROR\]|Error:|Exception|Aborted|error", re.IGNORECASE)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def converter_name() -> str:
    return f"paddle2onnx {_version('paddle2onnx')}"


def runtime_name() -> str:
    return f"onnxruntime {_version('onnxruntime')} (CPUExecutionProvider)"


# ----------------------------------------------------------------------------------------------
# Reading paddle2onnx's log (pure).

def unsupported_operators(log: str) -> list[str]:
    """The operators paddle2onnx names in 'Oops, there are some operators not supported yet,
    including a,b,' (its one message for them), in its order, without repeats."""
    names: list[str] = []
    for m in _UNSUPPORTED.finditer(log):
        names += [n.strip() for n in m.group(1).split(",") if n.strip()]
    return list(dict.fromkeys(names))


def used_opset(log: str, requested: int) -> int:
    """The opset paddle2onnx wrote: it raises the requested one when an operator needs more."""
    found = _OPSET_USED.findall(log)
    return int(found[-1]) if found else requested


def error_line(log: str) -> str:
    """The line of a failed conversion's log that names the cause: the first error line (a C++
    abort prints its traceback and signal after it), else the last non-blank line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.strip().startswith(("I1", "W1", "---"))]
    picked = next((ln for ln in lines if _ERROR_LINE.search(ln)), lines[-1] if lines else "no output")
    return truncate(picked, ERROR_LINE_CHARS)


def _exit_text(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def conversion_failure(log: str, code: int, converter: str, opset: int) -> OnnxResult:
    """A failed paddle2onnx run → the finding, naming the operators when that is the cause."""
    ops = unsupported_operators(log)
    if ops:
        return OnnxResult(exported=False, reason=reasons.ONNX_UNSUPPORTED_OPERATORS, converter=converter,
                          opset_version=opset, unsupported_operators=ops,
                          message=f"{converter} has no ONNX converter for the operator{'s' if len(ops) > 1 else ''} "
                                  f"{', '.join(ops)} of this model, so no model.onnx was written; the Paddle int8 "
                                  "model is published as usual.")
    return OnnxResult(exported=False, reason=reasons.ONNX_CONVERSION_FAILED, converter=converter, opset_version=opset,
                      message=f"{converter} failed ({_exit_text(code)}): {error_line(log)}; no model.onnx was written "
                              "(the pod log has the converter's output); the Paddle int8 model is published as usual.")


# ----------------------------------------------------------------------------------------------
# Converting (a child process) and running (onnxruntime).

@dataclass(frozen=True)
class Conversion:
    path: str                          # model.onnx beside the Paddle files it came from
    opset_version: int
    converter: str
    size_bytes: int | None = None
    failure: OnnxResult | None = None  # set when no model.onnx was written


def convert(model_dir: str, opset: int, timeout: float = CONVERT_TIMEOUT_S) -> Conversion:
    """model_dir/model.pdmodel + .pdiparams → model_dir/model.onnx, in a child process."""
    dest = os.path.join(model_dir, MODEL_ONNX)
    if os.path.exists(dest):
        os.remove(dest)
    converter = converter_name()
    cmd = [sys.executable, "-m", __name__, os.path.join(model_dir, MODEL_FILE), os.path.join(model_dir, PARAMS_FILE),
           dest, str(opset)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Conversion(dest, opset, converter, failure=OnnxResult(
            exported=False, reason=reasons.ONNX_CONVERSION_FAILED, converter=converter, opset_version=opset,
            message=f"{converter} did not finish within {timeout:.0f} s; no model.onnx was written."))
    log = proc.stdout + proc.stderr
    sys.stderr.write(log[-CONVERTER_LOG_TAIL_CHARS:])     # the pod log keeps what the converter said
    if proc.returncode != 0 or not os.path.exists(dest):
        return Conversion(dest, opset, converter, failure=conversion_failure(log, proc.returncode, converter, opset))
    return Conversion(dest, used_opset(log, opset), converter, size_bytes=os.path.getsize(dest))


def session(path: str, threads: int) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """An onnxruntime CPU session on `path` as a function: {input name: batch} → {output name: array}
    (paddle2onnx keeps the Paddle feed names and the outputs' order)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3          # warnings about unused initializers would bury the pod log
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(outputs, sess.run(None, {n: feeds[n] for n in inputs})))


def runtime_failed(conv: Conversion, exc: BaseException) -> OnnxResult:
    runtime = runtime_name()
    return OnnxResult(exported=False, reason=reasons.ONNX_RUNTIME_FAILED, converter=conv.converter, runtime=runtime,
                      opset_version=conv.opset_version, size_bytes=conv.size_bytes,
                      message=f"{runtime} cannot run the converted model.onnx: {last_line(exc)}; it was not uploaded.")


def judge(conv: Conversion, cfg: OnnxOutput, metric: str, *, paddle: MeasuredCandidate, onnx_value: float,
          top1: float | None, top5: float | None, predictions: np.ndarray, latency_ms: float) -> OnnxResult:
    """onnxruntime's numbers against Paddle int8's: within maxAccuracyDelta in the gate's metric,
    model.onnx is exported (uploaded); beyond it, not."""
    paddle_value = float(metric_value(paddle, metric))
    delta = round(onnx_value - paddle_value, 6)
    agreement = round(float(np.mean(np.asarray(paddle.predictions) == predictions)), 6) \
        if len(paddle.predictions) == len(predictions) and len(predictions) else None
    ok = within(abs(delta), cfg.max_accuracy_delta)
    runtime = runtime_name()
    said = (f"model.onnx (opset {conv.opset_version}) scores {metric} {onnx_value:.4f} under {runtime} against "
            f"{paddle_value:.4f} for the Paddle int8 model (delta {delta:+.4f}"
            + (f", top-1 agreement {agreement:.4f}" if agreement is not None else "") + ")")
    message = (said + "." if ok else
               said + f", more than spec.output.onnx.maxAccuracyDelta {cfg.max_accuracy_delta}, so it was not "
                      "uploaded; raise maxAccuracyDelta to accept it or deploy the Paddle int8 model.")
    return OnnxResult(exported=ok, reason=reasons.ONNX_EXPORTED if ok else reasons.ONNX_ACCURACY_MISMATCH,
                      message=message, converter=conv.converter, runtime=runtime, opset_version=conv.opset_version,
                      top1=top1, top5=top5, accuracy_delta=delta, agreement=agreement, latency_ms=latency_ms,
                      size_bytes=conv.size_bytes)


def _main(argv: list[str]) -> int:
    """The child: one paddle2onnx export. QDQ (deploy_backend onnxruntime) keeps the int8 model's
    scales in QuantizeLinear/DequantizeLinear pairs, which onnxruntime and TensorRT both read."""
    model, params, dest, opset = argv
    import paddle2onnx

    paddle2onnx.export(model, params, dest, opset_version=int(opset), auto_upgrade_opset=True, verbose=True,
                       enable_onnx_checker=True, deploy_backend="onnxruntime")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
