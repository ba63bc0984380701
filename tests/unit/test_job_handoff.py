"""The typed boundaries between the job's stages: the work-dir files keep their camelCase JSON,
each outcome becomes the StageResult the operator reads, and verify's richer rows serialise as
the contract's types only."""
from __future__ import annotations

import json

import pytest

from kubeslim_api.contract import STAGES, Int8Metrics, Results, decode, encode
from kubeslim_job import cli
from kubeslim_job.errors import JobError
from kubeslim_api.spec import ModelInput
from kubeslim_job.handoff import (CalibratedCandidate, CalibrationFacts, ExportFacts, MeasuredCandidate, Measurement,
                                  OutputFacts, Verification)
from kubeslim_job.workdir import WorkDir

pytestmark = pytest.mark.unit

EXPORT = ExportFacts(source="custom", inputs=[ModelInput(name="x", shape=[1, 28, 28])],
                     outputs=[OutputFacts(name="linear_1.tmp_1", shape=[1, 10], dtype="float32")],
                     input_shape=[1, 28, 28], num_classes=10, ops=14,
                     op_types={"conv2d": 2, "relu": 2}, params=31_000, size_bytes=96_344, seconds=1.5, bytes_read=125_000)
CALIB = CalibrationFacts(samples=64, batch_size=32, batch_nums=2, bytes_read=51_429, bytes_used=50_176, fetch_seconds=0.2,
                         seconds=4.0, device="gpu:0", candidates=[
                             CalibratedCandidate(algo="hist", calibration_seconds=1.2, size_bytes=47_535, quant_ops=28,
                                                 dir="int8/hist"),
                             CalibratedCandidate(algo="KL", calibration_seconds=0.1, error="AssertionError: boom")])


@pytest.mark.parametrize("facts, keys", [
    (EXPORT, {"source", "inputs", "outputs", "inputShape", "numClasses", "ops", "opTypes", "params", "sizeBytes", "seconds",
              "bytesRead"}),
    (CALIB, {"samples", "batchSize", "batchNums", "bytesRead", "bytesUsed", "fetchSeconds", "candidates", "seconds",
             "device"}),
])
def test_work_dir_files_keep_their_json_and_read_back_typed(tmp_path, facts, keys):
    work = WorkDir(str(tmp_path))
    work.save(facts)
    doc = json.loads((tmp_path / facts.FILE).read_text())
    assert set(doc) == keys
    assert work.load(type(facts)) == facts


def test_calibration_json_lists_a_failed_candidate_without_the_fields_it_has_not():
    doc = CALIB.dump()
    assert doc["candidates"][1] == {"algo": "KL", "calibrationSeconds": 0.1, "error": "AssertionError: boom"}
    assert doc["candidates"][0]["dir"] == "int8/hist" and doc["candidates"][0]["quantOps"] == 28


@pytest.mark.parametrize("kind, stage", [(ExportFacts, "export"), (CalibrationFacts, "calibrate")])
def test_a_missing_file_names_the_stage_to_run_first(tmp_path, kind, stage):
    with pytest.raises(JobError) as ei:
        WorkDir(str(tmp_path)).load(kind)
    assert ei.value.reason == "StageOrder" and ei.value.exit_code == 1
    assert ei.value.message == (f"{tmp_path / kind.FILE} is missing: run the {stage} stage first with the same "
                                "--work-dir")


def test_export_and_calibrate_outcomes_become_their_stage_results():
    exp = EXPORT.to_result()
    assert (exp.stage, exp.ok, exp.reason) == ("export", True, "Succeeded")
    assert exp.message == ("exported custom model: inputs x float32 [1, 28, 28]; outputs linear_1.tmp_1 [1, 10] "
                           "(10 classes), 14 ops, 31000 parameters")
    assert exp.details == {"source": "custom", "inputs": [{"name": "x", "shape": [1, 28, 28], "dtype": "float32"}],
                           "outputs": [{"name": "linear_1.tmp_1", "shape": [1, 10], "dtype": "float32"}],
                           "inputShape": [1, 28, 28], "numClasses": 10, "ops": 14, "params": 31_000,
                           "sizeBytes": 96_344}
    cal = CALIB.to_result()
    assert (cal.stage, cal.ok, cal.reason) == ("calibrate", True, "Succeeded")
    assert cal.message == "calibrated 1/2 candidates (hist) on 64 samples (device gpu:0)"
    assert cal.details == {"samples": 64, "bytesRead": 51_429, "bytesUsed": 50_176, "device": "gpu:0", "candidates": [
        {"algo": "hist", "calibrationSeconds": 1.2, "sizeBytes": 47_535},
        {"algo": "KL", "calibrationSeconds": 0.1, "error": "AssertionError: boom"}]}


def _verification() -> tuple[Verification, MeasuredCandidate]:
    from kubeslim_api.contract import Artifacts, Gate

    fp32 = Measurement(top1=0.965, top5=0.995, latency_ms=2.0, latency_p95_ms=2.5, throughput=32_000.0,
                       size_bytes=96_344, correct=193)
    best = MeasuredCandidate(algo="hist", top1=0.96, top5=0.995, latency_ms=1.0, latency_p95_ms=1.2, throughput=64_000.0,
                             size_bytes=47_535, correct=192, accuracy_drop=0.005, calibration_seconds=1.2, dir="int8/hist")
    failed = MeasuredCandidate(algo="avg", calibration_seconds=0.9, dir="int8/avg", error="inference failed: x")
    results = Results(backend="cpu-onednn-int8", fp32=fp32, int8=Int8Metrics.model_validate(best, from_attributes=True),
                      accuracy_drop=0.005, speedup=2.0, candidates=[best, failed])
    return Verification(results=results, gate=Gate(metric="top1", max_accuracy_drop=0.01, passed=True),
                        artifacts=Artifacts(model="s3://m/out/model.pdmodel"), details={"evalSamples": 200}), best


def test_verify_rows_serialise_as_the_contract_types():
    v, best = _verification()
    r = v.results.dump()
    assert r["fp32"] == {"top1": 0.965, "top5": 0.995, "latencyMs": 2.0, "latencyP95Ms": 2.5, "throughput": 32_000.0,
                         "sizeBytes": 96_344}
    assert r["int8"] == {"algo": "hist", "top1": 0.96, "top5": 0.995, "latencyMs": 1.0, "latencyP95Ms": 1.2,
                         "throughput": 64_000.0, "sizeBytes": 47_535}
    assert r["candidates"] == [
        {"algo": "hist", "top1": 0.96, "top5": 0.995, "accuracyDrop": 0.005, "latencyMs": 1.0, "sizeBytes": 47_535,
         "calibrationSeconds": 1.2},
        {"algo": "avg", "calibrationSeconds": 0.9, "error": "inference failed: x"}]
    # the report's row: everything measured, never the work-dir path
    assert best.dump() == {"algo": "hist", "top1": 0.96, "top5": 0.995, "accuracyDrop": 0.005, "latencyMs": 1.0,
                           "latencyP95Ms": 1.2, "throughput": 64_000.0, "sizeBytes": 47_535, "calibrationSeconds": 1.2,
                           "correct": 192}


def test_verification_becomes_the_verify_stage_result_and_survives_the_message():
    v, _ = _verification()
    res = v.to_result()
    assert (res.stage, res.ok, res.reason) == ("verify", True, "Succeeded")
    assert res.message == ("int8 hist: top1 0.9600 vs fp32 0.9650 (drop 0.0050), 2.0x faster on cpu-onednn-int8; "
                           "model at s3://m/out/model.pdmodel")
    back = decode(encode(res))
    assert back.results.dump() == v.results.dump() and back.gate == v.gate and back.artifacts == v.artifacts


def test_every_stage_has_a_module():
    assert tuple(cli.STAGE_MODULES) == STAGES
