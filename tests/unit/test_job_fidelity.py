"""Output fidelity (inference.FidelityMeter, score with recorded fp32 outputs) and the fidelity gate:
any model's outputs against fp32's, by numbers computed here by hand."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import numpy as np
import pytest

from kubeslim_api.contract import Fidelity, StageResult, Results, decode, encode, metric_value
from kubeslim_api.spec import VerificationSpec
from kubeslim_job import data, gate, inference, verify
from kubeslim_job.handoff import MeasuredCandidate, Measurement

pytestmark = pytest.mark.unit


def test_identical_outputs_have_cosine_one_no_noise_and_no_error():
    meter = inference.FidelityMeter(["out"])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    meter.add([x], [x.copy()], 3)
    fid = meter.result()
    assert fid.cosine == 1.0 and fid.max_abs_error == 0.0 and fid.sqnr_db is None
    assert fid.per_output[0].comparable and fid.per_output[0].name == "out"


def test_cosine_is_the_mean_over_samples_and_sqnr_over_all_elements():
    ref = np.array([[1.0, 0.0], [1.0, 1.0]])
    got = np.array([[0.0, 1.0], [1.0, 1.0]])       # sample 0 orthogonal (cos 0), sample 1 equal (cos 1)
    meter = inference.FidelityMeter(["y"])
    meter.add([ref[:1]], [got[:1]], 1)              # two batches of one sample each
    meter.add([ref[1:]], [got[1:]], 1)
    out = meter.result().per_output[0]
    assert out.cosine == 0.5
    assert out.sqnr_db == pytest.approx(10 * np.log10(3.0 / 2.0), abs=1e-4)   # signal 1+1+1, noise 1+1
    assert out.max_abs_error == 1.0


def test_an_output_whose_first_dimension_is_not_the_batch_is_compared_as_one_row_per_batch():
    meter = inference.FidelityMeter(["boxes"])
    ref = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])   # 3 boxes for a batch of 2 images
    meter.add([ref], [2 * ref], 2)
    assert meter.result().cosine == 1.0            # one row: the whole batch, scaled


def test_variable_length_outputs_are_not_comparable_and_left_out_of_the_summary():
    meter = inference.FidelityMeter(["scores", "nms_boxes"])
    scores = np.ones((2, 3), np.float32)
    meter.add([scores, np.zeros((5, 6))], [scores * 0.5 + 0.5, np.zeros((4, 6))], 2)
    meter.add([scores, np.zeros((3, 6))], [scores, np.zeros((3, 6))], 2)   # equal later: still not comparable
    fid = meter.result()
    boxes = fid.per_output[1]
    assert not boxes.comparable and boxes.cosine is None and "[4, 6] vs [5, 6]" in boxes.reason and "NMS" in boxes.reason
    assert fid.cosine == 1.0 and fid.per_output[0].comparable


def test_nothing_comparable_leaves_no_cosine_to_gate_on():
    meter = inference.FidelityMeter(["boxes"])
    meter.add([np.zeros((5, 6))], [np.zeros((4, 6))], 1)
    fid = meter.result()
    assert fid.cosine is None and fid.max_abs_error is None
    best = MeasuredCandidate(algo="hist", fidelity=fid)
    fp32 = Measurement(correct=None, fidelity=inference.reference_fidelity(["boxes"]))
    assert not gate.passes(fp32, best, VerificationSpec(metric="fidelity"))
    assert "no output that can be compared" in gate.miss(fp32, best, VerificationSpec(metric="fidelity"), None)


def test_int8_nan_counts_as_a_lost_sample_not_a_crash():
    meter = inference.FidelityMeter(["y"])
    ref = np.ones((2, 4))
    got = ref.copy()
    got[0, 1] = np.nan
    meter.add([ref], [got], 2)
    assert meter.result().cosine == 0.5


def _evalset(tmp_path, n: int = 5) -> data.TensorFile:
    samples = (({"image": np.full((2,), float(i), np.float32), "ids": np.array([i], np.int64)}, data.NO_LABEL)
               for i in range(n))
    return data._write(str(tmp_path / "eval"), samples, data.LoadStats(source="mem"), "k")


def _model(noise: float):
    """Two inputs, two outputs: a feature map [N, 2] and a scalar per sample [N]."""
    def infer(feeds):
        x, ids = feeds["image"], feeds["ids"][:, 0].astype(np.float32)
        return {"feat": x * (1 + noise * np.array([1.0, -1.0], np.float32)), "score": ids + 1 + noise}
    return infer


def test_score_records_fp32_outputs_and_compares_every_output_of_a_model_with_two_inputs(tmp_path):
    evalset = _evalset(tmp_path)
    store = inference.OutputStore(str(tmp_path / "outputs"))
    ref = inference.score(_model(0.0), evalset, 2, classify=False, record=store)
    assert ref.fidelity.cosine == 1.0 and [o.name for o in ref.fidelity.per_output] == ["feat", "score"]
    assert ref.top1 is None and ref.predictions.size == 0 and set(ref.batch) == {"image", "ids"}
    got = inference.score(_model(0.1), evalset, 2, classify=False, against=store)
    feat, score = got.fidelity.per_output
    # feat: each sample [i, i] against [1.1 i, 0.9 i]; sample 0 is all zeros in both (cosine 1)
    expected = (1 + 4 * (1.1 + 0.9) / (np.sqrt(2) * np.sqrt(1.1 ** 2 + 0.9 ** 2))) / 5
    assert feat.cosine == pytest.approx(expected, abs=1e-6)
    assert score.cosine == 1.0 and score.max_abs_error == pytest.approx(0.1, abs=1e-6)   # scalars keep their sign
    assert got.fidelity.cosine == feat.cosine and got.fidelity.max_abs_error == pytest.approx(0.4, abs=1e-6)


def test_fidelity_gate_choice_and_drop_use_the_worst_output_cosine():
    fp32 = Measurement(correct=None, fidelity=inference.reference_fidelity(["a"]))
    good = MeasuredCandidate(algo="avg", latency_ms=2.0, fidelity=Fidelity(cosine=0.995))
    worse = MeasuredCandidate(algo="hist", latency_ms=1.0, fidelity=Fidelity(cosine=0.98))
    lost = MeasuredCandidate(algo="KL", latency_ms=0.5, fidelity=Fidelity(cosine=None))
    v = VerificationSpec(metric="fidelity", min_cosine=0.99)
    assert verify.choose([lost, worse, good], "fidelity") is good
    drop, verdict = gate.judge(fp32, good, v)
    assert drop == 0.005 and verdict.passed and verdict.min_cosine == 0.99 and verdict.metric == "fidelity"
    assert not gate.judge(fp32, worse, v)[1].passed
    assert gate.judge(fp32, worse, VerificationSpec(metric="fidelity", min_cosine=0.98))[1].passed
    assert metric_value(good, "fidelity") == 0.995 and metric_value(good, "top1") is None


def test_a_result_with_many_outputs_still_fits_the_termination_message():
    per = [{"name": f"output_{k:03d}_with_a_long_name", "comparable": True, "cosine": 0.999, "sqnrDb": 30.0,
            "maxAbsError": 0.01} for k in range(60)]
    fid = {"cosine": 0.999, "sqnrDb": 30.0, "maxAbsError": 0.01, "perOutput": per}
    res = StageResult(stage="verify", ok=True, results=Results.model_validate(
        {"backend": "cpu-onednn-int8", "fp32": {"fidelity": fid}, "int8": {"algo": "hist", "fidelity": fid}}))
    back = decode(encode(res))
    assert back.results.int8.fidelity.cosine == 0.999 and back.results.int8.fidelity.per_output == []
