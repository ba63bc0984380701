"""The accuracy gate, in one place: what verify judges its best candidate by, what the fallback
judges each of its steps by, and the tolerance the ONNX check compares onnxruntime with Paddle by.

Gate: fp32 - model <= maxAccuracyDrop in spec.verification.metric (agreement: 1 - agreement <=
maxAccuracyDrop); with metric fidelity the model's cosine (its worst output's) >= minCosine. A
model without a value in the metric (fidelity with no comparable output) fails.

Pure: no Paddle, no I/O, so every rule is unit-tested on a table.
"""
from __future__ import annotations

from typing import Any

from kubeslim_api.contract import Gate, metric_value
from kubeslim_api.spec import VerificationSpec
from kubeslim_api.text import truncate

from .handoff import MeasuredCandidate, Measurement

# Metrics are rounded to 6 digits before they are compared: a drop that equals its limit after
# rounding passes, and float noise below the 9th digit never decides a gate.
TOLERANCE = 1e-9
UNCOMPARABLE_REASONS_CHARS = 400    # why no output compared, in a gate message that also names the fix


def within(amount: float, limit: float) -> bool:
    """The one comparison every gate makes: `amount` (a drop, a shortfall, a delta) at most `limit`."""
    return amount <= limit + TOLERANCE


def drop_of(fp32: Measurement, model: Any, metric: str) -> float | None:
    """fp32's metric minus the model's (fidelity: 1 - cosine); None where the model has no value
    (fidelity with no comparable output)."""
    value = metric_value(model, metric)
    return None if value is None else round(metric_value(fp32, metric) - value, 6)


def passes(fp32: Measurement, model: Any, v: VerificationSpec) -> bool:
    """The gate: the drop within maxAccuracyDrop, or for fidelity the cosine at least minCosine."""
    value = metric_value(model, v.metric)
    if value is None:
        return False
    if v.metric == "fidelity":
        return within(v.min_cosine - value, 0.0)
    return within(metric_value(fp32, v.metric) - value, v.max_accuracy_drop)


def judge(fp32: Measurement, best: MeasuredCandidate, v: VerificationSpec) -> tuple[float | None, Gate]:
    """The drop of `best` against fp32 in the metric, and the gate's verdict on it."""
    return drop_of(fp32, best, v.metric), Gate(metric=v.metric, max_accuracy_drop=v.max_accuracy_drop,
                                               passed=passes(fp32, best, v),
                                               min_cosine=v.min_cosine if v.metric == "fidelity" else None)


def miss(fp32: Measurement, best: MeasuredCandidate, v: VerificationSpec, drop: float | None) -> str:
    """What the best candidate missed the gate by, in the metric's terms."""
    if v.metric == "fidelity":
        fid = best.fidelity
        if fid is None or fid.cosine is None:
            why = truncate("; ".join(f"{o.name}: {o.reason}" for o in (fid.per_output if fid else [])),
                           UNCOMPARABLE_REASONS_CHARS)
            return (f"has no output that can be compared with fp32's ({why}), so metric fidelity cannot judge it; "
                    "export the model without its variable-length post-processing (e.g. NMS)")
        worst = min((o for o in fid.per_output if o.comparable), key=lambda o: o.cosine)
        return (f"reaches an output cosine of {fid.cosine:.4f} against fp32 (worst output {worst.name}, SQNR "
                f"{worst.sqnr_db} dB), below minCosine {v.min_cosine}")
    if v.metric == "agreement":
        return (f"gives a different top-1 class than fp32 on {drop:.4f} of the evaluation images (agreement "
                f"{best.agreement:.4f}), more than maxAccuracyDrop {v.max_accuracy_drop}")
    return (f"loses {drop:.4f} {v.metric} against fp32 ({metric_value(fp32, v.metric):.4f} -> "
            f"{metric_value(best, v.metric):.4f}), more than maxAccuracyDrop {v.max_accuracy_drop}")


def knob(v: VerificationSpec) -> str:
    """The spec field that loosens this gate."""
    return "lower spec.verification.minCosine" if v.metric == "fidelity" else "raise spec.verification.maxAccuracyDrop"
