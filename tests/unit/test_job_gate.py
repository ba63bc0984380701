"""The one accuracy gate (kubeslim_job.gate) and the job modules' import direction: verify, the
fallback and the ONNX check judge by the same rule and tolerance, and the fallback does not reach
back into verify."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kubeslim_api.contract import Fidelity
from kubeslim_api.spec import OnnxOutput, VerificationSpec
from kubeslim_job import gate, onnx_export
from kubeslim_job.handoff import MeasuredCandidate, Measurement

pytestmark = pytest.mark.unit

JOB = Path(__file__).resolve().parents[2] / "job_image" / "kubeslim_job"


def _fp32(top1: float = 0.9) -> Measurement:
    return Measurement(top1=top1, agreement=1.0, correct=None, fidelity=Fidelity(cosine=1.0))


@pytest.mark.parametrize("metric, value, limit, passed", [
    ("top1", 0.85, 0.05, True),              # a drop equal to the limit passes...
    ("top1", 0.85 - 2e-9, 0.05, False),      # ...one beyond the tolerance does not
    ("top1", 0.85 - 5e-10, 0.05, True),      # float noise under the tolerance never decides
    ("agreement", 0.97, 0.03, True),
    ("agreement", 0.969, 0.03, False),
    ("top1", None, 0.05, False),             # no value: fails
])
def test_drop_gate(metric, value, limit, passed):
    model = MeasuredCandidate(algo="avg", top1=value if metric == "top1" else None,
                              agreement=value if metric == "agreement" else None)
    assert gate.passes(_fp32(), model, VerificationSpec(metric=metric, max_accuracy_drop=limit)) is passed


@pytest.mark.parametrize("cosine, passed", [(0.99, True), (0.99 - 5e-10, True), (0.99 - 2e-9, False), (None, False)])
def test_fidelity_gate(cosine, passed):
    model = MeasuredCandidate(algo="avg", fidelity=Fidelity(cosine=cosine))
    assert gate.passes(_fp32(), model, VerificationSpec(metric="fidelity", min_cosine=0.99)) is passed


@pytest.mark.parametrize("onnx_value, exported", [(0.87, True), (0.93, True), (0.8699, False), (0.9301, False)])
def test_the_onnx_check_allows_the_delta_both_ways_and_no_more(onnx_value, exported):
    conv = onnx_export.Conversion("model.onnx", 13, "paddle2onnx")
    paddle = MeasuredCandidate(algo="avg", top1=0.9, predictions=[0, 1])
    result = onnx_export.judge(conv, OnnxOutput(enabled=True, max_accuracy_delta=0.03), "top1", paddle=paddle,
                               onnx_value=onnx_value, top1=onnx_value, top5=None, predictions=[0, 1], latency_ms=1.0)
    assert result.exported is exported


def test_the_gate_message_names_what_was_missed_and_the_knob():
    fp32, v = _fp32(), VerificationSpec(metric="top1", max_accuracy_drop=0.01)
    best = MeasuredCandidate(algo="hist", top1=0.8)
    drop, verdict = gate.judge(fp32, best, v)
    assert drop == 0.1 and not verdict.passed
    assert "loses 0.1000 top1 against fp32 (0.9000 -> 0.8000)" in gate.miss(fp32, best, v, drop)
    assert gate.knob(v) == "raise spec.verification.maxAccuracyDrop"
    assert gate.knob(VerificationSpec(metric="fidelity")) == "lower spec.verification.minCosine"


def test_a_long_list_of_unmatched_outputs_is_cut_to_its_named_limit():
    from kubeslim_api.contract import OutputFidelity

    outputs = [OutputFidelity(name=f"out{i}", comparable=False, reason="shape differs " * 5) for i in range(40)]
    best = MeasuredCandidate(algo="avg", fidelity=Fidelity(cosine=None, per_output=outputs))
    said = gate.miss(_fp32(), best, VerificationSpec(metric="fidelity"), None)
    why = said[said.index("(") + 1:said.index("), so")]
    assert len(why) == gate.UNCOMPARABLE_REASONS_CHARS and why.endswith("…")


def test_the_candidates_error_list_names_each_failed_algo_within_its_limit():
    from kubeslim_job.errors import CANDIDATE_ERRORS_CHARS, candidate_errors

    rows = [MeasuredCandidate(algo="avg", error="RuntimeError: a"), MeasuredCandidate(algo="hist"),
            MeasuredCandidate(algo="KL", error="ValueError: b")]
    assert candidate_errors(rows) == "avg: RuntimeError: a; KL: ValueError: b"     # hist ran: not listed
    long = candidate_errors([MeasuredCandidate(algo=f"a{i}", error="x" * 100) for i in range(20)])
    assert len(long) == CANDIDATE_ERRORS_CHARS and long.endswith("…")


def _imports(module: str) -> set[str]:
    """The kubeslim_job modules `module` imports, lazily inside functions too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((JOB / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names |= {node.module} if node.module else {a.name for a in node.names}
    return names


def test_the_fallback_and_the_onnx_check_do_not_import_verify():
    # verify runs both; the gate and the inference loop they share live in modules of their own
    assert "verify" not in _imports("fallback") and "verify" not in _imports("onnx_export")
    assert {"gate", "inference"} <= _imports("fallback") and "gate" in _imports("onnx_export")
    assert {"gate", "inference"} <= _imports("verify")
