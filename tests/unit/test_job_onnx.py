"""spec.output.onnx, the pure parts: what paddle2onnx's log says when it fails, how onnxruntime's
numbers are judged against Paddle's int8, and how the finding reaches the result message and the
operator's status. The conversion itself (a child process) runs in tests/job/test_onnx.py."""
from __future__ import annotations

import numpy as np
import pytest

from kubeslim_api import reasons
from kubeslim_api.contract import (Artifacts, Gate, Int8Metrics, ModelMetrics, OnnxResult, Results, StageResult, decode,
                                   encode)
from kubeslim_api.spec import OnnxOutput, SpecError, parse_spec
from kubeslim_job import onnx_export
from kubeslim_job.handoff import MeasuredCandidate

pytestmark = pytest.mark.unit

# Verbatim from paddle2onnx 1.2.11 on a model with paddle.cumprod (the process then dies of SIGABRT).
UNSUPPORTED_LOG = """[Paddle2ONNX] Start to parse PaddlePaddle model...
[Paddle2ONNX] Model file path: /work/int8/hist/model.pdmodel
[Paddle2ONNX] [Info] The Paddle model is a quantized model.
[Paddle2ONNX] Oops, there are some operators not supported yet, including cumprod,
[ERROR] Due to the unsupported operators, the conversion is aborted.
--------------------------------------
C++ Traceback (most recent call last):
--------------------------------------
0   paddle2onnx::Export(char const*, char const*, char**, int*, int, bool, bool, bool, bool, bool, ...)
FatalError: `Process abort signal` is detected by the operating system.
"""
OPSET_LOG = """[Paddle2ONNX] Due to the operator: dequantize_linear, requires opset_version >= 13.
[Paddle2ONNX] Please set the opset_version to 10 or set auto_upgrade_opset=true.
[ERROR] Due to opset version, the model exporting is aborted.
"""
OK_LOG = """[Paddle2ONNX] [Info] The Paddle model is a quantized model.
[Paddle2ONNX] Use opset_version = 16 for ONNX export.
[Paddle2ONNX] PaddlePaddle model is exported as ONNX format now.
"""


@pytest.mark.parametrize("log, ops", [
    (UNSUPPORTED_LOG, ["cumprod"]),
    ("[Paddle2ONNX] Oops, there are some operators not supported yet, including cumprod,logcumsumexp,\n"
     "[Paddle2ONNX] Oops, there are some operators not supported yet, including cumprod,\n", ["cumprod", "logcumsumexp"]),
    (OPSET_LOG, []),
    (OK_LOG, []),
    ("", []),
])
def test_unsupported_operators_are_read_from_the_log(log, ops):
    assert onnx_export.unsupported_operators(log) == ops


@pytest.mark.parametrize("log, requested, used", [(OK_LOG, 13, 16), (UNSUPPORTED_LOG, 13, 13), ("", 17, 17)])
def test_the_opset_written_is_the_one_paddle2onnx_announced(log, requested, used):
    assert onnx_export.used_opset(log, requested) == used


@pytest.mark.parametrize("log, line", [
    (OPSET_LOG, "[ERROR] Due to opset version, the model exporting is aborted."),
    ("I1201 glog noise\nsomething went sideways\n\n", "something went sideways"),
    ("", "no output"),
])
def test_error_line_picks_the_cause(log, line):
    assert onnx_export.error_line(log) == line


@pytest.mark.parametrize("log, code, reason, says", [
    (UNSUPPORTED_LOG, -6, reasons.ONNX_UNSUPPORTED_OPERATORS,
     "paddle2onnx 1.2.11 has no ONNX converter for the operator cumprod of this model, so no model.onnx was written; "
     "the Paddle int8 model is published as usual."),
    (OPSET_LOG, 1, reasons.ONNX_CONVERSION_FAILED,
     "paddle2onnx 1.2.11 failed (exit code 1): [ERROR] Due to opset version, the model exporting is aborted.; no "
     "model.onnx was written (the pod log has the converter's output); the Paddle int8 model is published as usual."),
    ("boom\n", -9, reasons.ONNX_CONVERSION_FAILED,
     "paddle2onnx 1.2.11 failed (killed by SIGKILL): boom; no model.onnx was written (the pod log has the converter's "
     "output); the Paddle int8 model is published as usual."),
])
def test_a_failed_conversion_is_a_finding_with_a_reason(log, code, reason, says):
    r = onnx_export.conversion_failure(log, code, "paddle2onnx 1.2.11", 13)
    assert (r.exported, r.reason, r.message, r.opset_version) == (False, reason, says, 13)
    assert r.unsupported_operators == (["cumprod"] if reason == reasons.ONNX_UNSUPPORTED_OPERATORS else None)


CONV = onnx_export.Conversion(path="/w/int8/hist/model.onnx", opset_version=13, converter="paddle2onnx 1.2.11",
                              size_bytes=88_417)
PADDLE = MeasuredCandidate(algo="hist", top1=0.95, top5=0.99, latency_ms=2.0, predictions=[0, 1, 2, 3])


@pytest.mark.parametrize("onnx_value, tolerance, exported, delta", [
    (0.95, 0.01, True, 0.0),
    (0.94, 0.01, True, -0.01),       # exactly the tolerance: accepted
    (0.96, 0.01, True, 0.01),        # better is a deviation too, and within it
    (0.93, 0.01, False, -0.02),
    (0.95, 0.0, True, 0.0),
])
def test_onnx_accuracy_is_judged_against_paddle_int8(onnx_value, tolerance, exported, delta):
    r = onnx_export.judge(CONV, OnnxOutput(enabled=True, max_accuracy_delta=tolerance), "top1", paddle=PADDLE,
                          onnx_value=onnx_value, top1=onnx_value, top5=0.99, predictions=np.array([0, 1, 2, 0]),
                          latency_ms=3.5)
    assert r.exported is exported
    assert r.reason == (reasons.ONNX_EXPORTED if exported else reasons.ONNX_ACCURACY_MISMATCH)
    assert r.accuracy_delta == pytest.approx(delta) and r.agreement == 0.75
    assert (r.top1, r.top5, r.latency_ms, r.size_bytes, r.opset_version) == (onnx_value, 0.99, 3.5, 88_417, 13)
    assert r.runtime.startswith("onnxruntime ") and r.converter == "paddle2onnx 1.2.11"
    assert f"scores top1 {onnx_value:.4f}" in r.message and "against 0.9500 for the Paddle int8 model" in r.message
    assert ("not uploaded; raise maxAccuracyDelta" in r.message) is not exported


def test_agreement_is_left_out_when_the_predictions_do_not_line_up():
    r = onnx_export.judge(CONV, OnnxOutput(enabled=True), "top1", paddle=PADDLE.model_copy(update={"predictions": []}),
                          onnx_value=0.95, top1=0.95, top5=0.99, predictions=np.array([0, 1]), latency_ms=1.0)
    assert r.agreement is None and "agreement" not in r.message


def test_an_onnxruntime_failure_is_a_finding():
    r = onnx_export.runtime_failed(CONV, RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : bad\nnode"))
    assert (r.exported, r.reason, r.size_bytes) == (False, reasons.ONNX_RUNTIME_FAILED, 88_417)
    assert r.message.startswith("onnxruntime ") and "cannot run the converted model.onnx" in r.message


def test_the_converter_and_runtime_are_named_by_their_installed_versions_which_are_the_pins():
    import tomllib
    from pathlib import Path

    job = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["job"]
    assert "paddle2onnx==1.2.11" in job and "onnxruntime==1.32.0" in job
    assert onnx_export.converter_name() == "paddle2onnx 1.2.11"
    assert onnx_export.runtime_name() == "onnxruntime 1.32.0 (CPUExecutionProvider)"


@pytest.mark.parametrize("onnx, error", [
    ({}, None),
    ({"enabled": True, "opsetVersion": 19, "maxAccuracyDelta": 0}, None),
    ({"enabled": True, "opsetVersion": 12}, "spec.output.onnx.opsetVersion"),
    ({"enabled": True, "opsetVersion": 20}, "spec.output.onnx.opsetVersion"),
    ({"enabled": True, "maxAccuracyDelta": 1.5}, "spec.output.onnx.maxAccuracyDelta"),
    ({"enable": True}, "spec.output.onnx.enable"),
])
def test_output_onnx_spec(onnx, error):
    raw = {"model": {"inference": {"uri": "s3://b/m/"}},
           "data": {"calibration": {"uri": "s3://b/c.npz", "format": "npz"},
                    "evaluation": {"uri": "s3://b/e.npz", "format": "npz"}},
           "output": {"uri": "s3://b/out/", "onnx": onnx}}
    if error is None:
        o = parse_spec(raw).output.onnx
        assert o.opset_version == onnx.get("opsetVersion", 13) and o.enabled is onnx.get("enabled", False)
        return
    with pytest.raises(SpecError) as ei:
        parse_spec(raw)
    assert ei.value.field == error


def _verify_result(onnx: OnnxResult | None, onnx_uri: str | None) -> StageResult:
    results = Results(backend="cpu-onednn-int8", fp32=ModelMetrics(top1=0.96, latency_ms=4.0),
                      int8=Int8Metrics(algo="hist", top1=0.95, latency_ms=2.0), accuracy_drop=0.01, speedup=2.0, onnx=onnx)
    return StageResult(stage="verify", ok=True, reason="Succeeded", results=results,
                       gate=Gate(metric="top1", max_accuracy_drop=0.02, passed=True),
                       artifacts=Artifacts(model="s3://b/out/model.pdmodel", onnx=onnx_uri))


def test_the_onnx_finding_survives_the_termination_message():
    unsupported = onnx_export.conversion_failure(UNSUPPORTED_LOG, -6, "paddle2onnx 1.2.11", 13)
    back = decode(encode(_verify_result(unsupported, None)))
    assert back.results.onnx == unsupported and back.artifacts.onnx is None


@pytest.mark.parametrize("onnx, uri, condition, says", [
    (None, None, None, "int8 (hist) top1 0.9500 vs fp32 0.9600; drop 0.0100; 2.00x faster on cpu-onednn-int8; "
                       "model at s3://b/out/model.pdmodel."),
    (OnnxResult(exported=True, reason=reasons.ONNX_EXPORTED, message="model.onnx (opset 13) scores top1 0.9500"),
     "s3://b/out/model.onnx", ("True", "Exported", "model.onnx (opset 13) scores top1 0.9500."),
     "int8 (hist) top1 0.9500 vs fp32 0.9600; drop 0.0100; 2.00x faster on cpu-onednn-int8; "
     "model at s3://b/out/model.pdmodel; ONNX at s3://b/out/model.onnx."),
    (onnx_export.conversion_failure(UNSUPPORTED_LOG, -6, "paddle2onnx 1.2.11", 13), None,
     ("False", "UnsupportedOperators", "paddle2onnx 1.2.11 has no ONNX converter for the operator cumprod of this "
                                       "model, so no model.onnx was written; the Paddle int8 model is published as usual."),
     "int8 (hist) top1 0.9500 vs fp32 0.9600; drop 0.0100; 2.00x faster on cpu-onednn-int8; "
     "model at s3://b/out/model.pdmodel; no ONNX (UnsupportedOperators; see the OnnxExported condition)."),
])
def test_the_operator_reports_the_onnx_export_as_a_condition(onnx, uri, condition, says):
    from kubeslim_operator.status import build_status
    from kubeslim_operator.status.stage_result import StageOutcome, verdict_from_result

    out = StageOutcome(container="verify", exit_code=0, reason="Completed", message="")
    v = verdict_from_result(out, _verify_result(onnx, uri))
    assert v.phase == "Succeeded" and v.message == says
    st = build_status(v, generation=1, job_name="j", prev=None, now="2026-01-01T00:00:00Z")
    conds = {x["type"]: (x["status"], x["reason"], x["message"]) for x in st["conditions"]}
    assert conds.get("OnnxExported") == condition
    assert st["artifacts"].get("onnx") == uri
    assert (st["results"].get("onnx") or None) == (onnx.dump() if onnx else None)


def test_contract_v1_reads_messages_from_before_and_after_these_fields():
    """Optional fields only: a message from an older job (no onnx, fp16) and one from a newer job
    (a results key this build does not know) both decode."""
    old = encode(_verify_result(None, None))
    assert "onnx" not in old and "fp16" not in old
    back = decode(old)
    assert back.results.onnx is None and back.results.fp16 is None and back.artifacts.onnx is None
    newer = old.replace('"backend":', '"fromTheFuture":{"x":1},"backend":', 1)
    assert decode(newer).results == back.results


def test_a_crowded_message_sheds_the_onnx_sentence_before_the_verdicts_message():
    unsupported = onnx_export.conversion_failure(UNSUPPORTED_LOG, -6, "paddle2onnx 1.2.11", 13)
    res = _verify_result(unsupported, None)
    res.message = "the verify stage's own sentence"
    full = len(encode(res).encode())
    limit = full - len(unsupported.message) // 2      # too small for both sentences, big enough for one
    back = decode(encode(res, limit=limit))
    assert back.message == "the verify stage's own sentence"
    assert back.results.onnx.message == "" and back.results.onnx.reason == "UnsupportedOperators"
    assert back.results.onnx.unsupported_operators == ["cumprod"]
