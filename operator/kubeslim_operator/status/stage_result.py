"""What a stage's container says when it ends: its exit code, kubelet's reason, and the result
(kubeslim_api.contract) in its termination message — success, a failed gate, or why it failed."""
from __future__ import annotations

import dataclasses
from typing import Any

from kubeslim_api import reasons
from kubeslim_api.contract import NON_RETRYABLE_EXIT_CODES, BadResultMessage, StageResult, decode, metric_value
from kubeslim_api.spec import QuantizationJobSpec

from .. import constants as c
from ..constants import Obj
from .verdict import Fact, Verdict, attempt_note, container_statuses, last_line, sentence


@dataclasses.dataclass(frozen=True)
class StageOutcome:
    container: str                 # export | calibrate | verify
    exit_code: int
    reason: str                    # kubelet's terminated.reason (Completed, Error, OOMKilled…)
    message: str                   # the termination message (JSON, or a log tail on a crash)


def terminal_outcome(pod: Obj) -> StageOutcome | None:
    """The first stage of a pod that terminated with a non-zero code, else verify's outcome."""
    last: StageOutcome | None = None
    for s in container_statuses(pod):
        term = (s.get("state") or {}).get("terminated")
        if not term:
            continue
        last = StageOutcome(s["name"], int(term.get("exitCode") or 0), term.get("reason") or "", term.get("message") or "")
        if last.exit_code != 0:
            return last
    return last


def _gate_fact(result: StageResult) -> Fact | None:
    g = result.gate
    if g is None:
        return None
    drop = result.results.accuracy_drop if result.results else None
    drop_text = f"{drop:.4f}" if drop is not None else "unknown"
    if g.passed:
        return Fact(True, reasons.GATE_PASSED, f"The {g.metric} drop {drop_text} is within maxAccuracyDrop {g.max_accuracy_drop}.")
    return Fact(False, reasons.GATE_FAILED, f"The {g.metric} drop {drop_text} exceeds maxAccuracyDrop {g.max_accuracy_drop}.")


def _onnx_fact(result: StageResult) -> Fact | None:
    """results.onnx → the OnnxExported condition. False is a warning, not a failure: the Paddle int8
    model passed its gate and is published either way."""
    o = result.results.onnx if result.results else None
    if o is None:
        return None
    return Fact(o.exported, o.reason, sentence(o.message or ("model.onnx exported." if o.exported else "model.onnx not exported.")))


def _success_message(result: StageResult) -> str:
    r = result.results
    if r is None or r.int8 is None:
        return "Quantization finished."
    metric = result.gate.metric if result.gate else "top1"
    fp32 = metric_value(r.fp32, metric)        # fidelity: the worst output cosine (fp32: 1.0)
    int8 = metric_value(r.int8, metric)
    parts = [f"int8 ({r.int8.algo}) {metric} {int8:.4f} vs fp32 {fp32:.4f}" if fp32 is not None and int8 is not None
             else f"int8 ({r.int8.algo}) verified"]
    if r.accuracy_drop is not None:
        parts.append(f"drop {r.accuracy_drop:.4f}")
    if r.speedup is not None:
        parts.append(f"{r.speedup:.2f}x faster on {r.backend}")
    if r.fallback is not None and r.fallback.fp32_layers:
        cost = f", {r.fallback.latency_cost:.2f}x the latency of plain int8" if r.fallback.latency_cost else ""
        parts.append(f"{len(r.fallback.fp32_layers)} layer(s) kept in fp32 ({', '.join(r.fallback.fp32_layers)}{cost})")
    if r.speed_aware is not None and r.speed_aware.applied:
        gain = f", {r.speed_aware.gain:.0%} faster than all-int8" if r.speed_aware.gain is not None else ""
        parts.append(f"{len(r.speed_aware.fp32_layers)} layer(s) kept in fp32 for speed{gain}")
    where = result.artifacts.model if result.artifacts and result.artifacts.model else None
    if where:
        parts.append(f"model at {where}")
    if result.artifacts and result.artifacts.onnx:
        parts.append(f"ONNX at {result.artifacts.onnx}")
    elif r.onnx is not None:
        parts.append(f"no ONNX ({r.onnx.reason}; see the {c.ONNX_EXPORTED} condition)")
    return "; ".join(parts) + "."


def verdict_from_result(out: StageOutcome, result: StageResult, **times: Any) -> Verdict:
    """A decoded stage result: success, a failed gate, or the stage's own failure reason."""
    stage = c.STAGE_NAMES[out.container]
    results = result.results.dump() if result.results else None
    artifacts = result.artifacts.dump() if result.artifacts else None
    gate = _gate_fact(result)
    if gate is not None and not gate.status:
        msg = sentence(result.message) if result.message else \
            gate.message[:-1] + "; raise spec.verification.maxAccuracyDrop or try other spec.quantization.algos."
        return Verdict(c.FAILED, reasons.GATE_FAILED, msg, stage, gate=gate, results=results, artifacts=artifacts, **times)
    if out.exit_code == 0 and result.ok:
        if out.container != "verify":
            return Verdict(c.FAILED, reasons.BAD_RESULT, f"The Job completed but its last result came from {out.container}, not verify.", stage, **times)
        return Verdict(c.SUCCEEDED, "", _success_message(result), "", gate=gate, onnx=_onnx_fact(result), results=results,
                       artifacts=artifacts, **times)
    reason = result.reason or reasons.STAGE_FAILED
    msg = sentence(result.message) if result.message else f"The {out.container} stage failed with exit code {out.exit_code}."
    return Verdict(c.FAILED, reason, msg, stage, gate=gate, results=results, artifacts=artifacts, **times)


def verdict_from_failed_stage(out: StageOutcome, spec: QuantizationJobSpec | None, attempts: int, **times: Any) -> Verdict:
    """A stage that exited non-zero: out of memory, a crash (its log tail), or its own result."""
    stage = c.STAGE_NAMES[out.container]
    if out.reason == "OOMKilled":
        mem = spec.resources.memory if spec else "the limit"
        return Verdict(c.FAILED, reasons.OOM,
                       f"The {out.container} stage ran out of memory ({mem}){attempt_note(attempts)}; raise "
                       "spec.resources.memory or lower spec.quantization.batchSize / spec.verification.batchSize.", stage, **times)
    try:
        result = decode(out.message)
    except BadResultMessage as exc:
        if out.exit_code in NON_RETRYABLE_EXIT_CODES:
            # These codes promise a v1 result; a stage that breaks the promise is a bug, not input.
            return Verdict(c.FAILED, reasons.BAD_RESULT,
                           f"The {out.container} stage exited with code {out.exit_code} but its termination message "
                           f"is not a result ({exc}); check that the job image matches the operator version.", stage, **times)
        tail = last_line(out.message)
        return Verdict(c.FAILED, reasons.STAGE_FAILED,
                       f"The {out.container} stage exited with code {out.exit_code}{attempt_note(attempts)}"
                       + (f" after logging: {tail}" if tail else "") + "; see the pod's logs.", stage, **times)
    return verdict_from_result(out, result, **times)
