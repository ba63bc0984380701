"""The job CLI's pure parts: where the spec comes from, choosing the best candidate, and the
result message staying within the kubelet's 4096 bytes."""
from __future__ import annotations

import json

import pytest

from kubeslim_job import cli
from kubeslim_api.contract import Candidate, Gate, Int8Metrics, ModelMetrics, Results, StageResult, decode, encode
from kubeslim_api.spec import SpecError

SPEC = {
    "model": {"builtin": {"architecture": "lenet", "numClasses": 10}, "inputShape": [1, 28, 28]},
    "data": {"calibration": {"uri": "s3://d/train.npz", "format": "npz"},
             "evaluation": {"uri": "s3://d/val/", "format": "imageList", "listFile": "val.txt"}},
    "output": {"uri": "s3://m/out/"},
}


def test_spec_from_env(monkeypatch):
    monkeypatch.setenv(cli.SPEC_ENV, json.dumps(SPEC))
    spec = cli.load_spec(None)
    assert spec.model.source == "builtin" and spec.calibration_samples == 320


@pytest.mark.parametrize("doc", [
    SPEC,
    {"spec": SPEC},
    {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": "x"}, "spec": SPEC},
])
def test_spec_file_forms(tmp_path, monkeypatch, doc):
    monkeypatch.setenv(cli.SPEC_ENV, "{not json")      # the file wins over the env
    f = tmp_path / "spec.yaml"
    f.write_text(json.dumps(doc))
    assert cli.load_spec(str(f)).output.uri == "s3://m/out/"


@pytest.mark.parametrize("env, field", [(None, "spec"), ("{oops", cli.SPEC_ENV),
                                        (json.dumps({**SPEC, "quantization": {"algos": ["min_max"]}}),
                                         "spec.quantization.algos")])
def test_spec_errors_name_the_field(monkeypatch, env, field):
    if env is None:
        monkeypatch.delenv(cli.SPEC_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.SPEC_ENV, env)
    with pytest.raises(SpecError) as ei:
        cli.load_spec(None)
    assert ei.value.field.startswith(field)


def test_bad_spec_exits_3_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(cli.SPEC_ENV, json.dumps({**SPEC, "output": {"uri": "http://x"}}))
    msg = tmp_path / "msg"
    assert cli.main(["verify", "--work-dir", str(tmp_path / "w"), "--termination-log", str(msg)]) == 3
    res = decode(msg.read_text())
    assert res.stage == "verify" and res.reason == "InvalidSpec" and "spec.output.uri" in res.message


def test_choose_best_then_fastest():
    from kubeslim_job.handoff import MeasuredCandidate
    from kubeslim_job.verify import choose

    rows = [MeasuredCandidate.model_validate(r) for r in (
        {"algo": "hist", "top1": 0.97, "latencyMs": 3.0}, {"algo": "avg", "top1": 0.98, "latencyMs": 5.0},
        {"algo": "mse", "top1": 0.98, "latencyMs": 4.0}, {"algo": "KL", "error": "boom"})]
    assert choose(rows, "top1").algo == "mse"
    assert choose([MeasuredCandidate(algo="KL", error="x")], "top1") is None


def test_a_full_sweep_result_fits_the_termination_message():
    cands = [Candidate(algo=a, top1=0.9812345, top5=0.999, accuracy_drop=0.00123, latency_ms=12.3456,
                       size_bytes=5_900_000, calibration_seconds=41.2) for a in ("KL", "hist", "mse", "avg", "abs_max", "emd")]
    cands.append(Candidate(algo="ptf", error="inference failed: " + "x" * 600))
    m = ModelMetrics(top1=0.98, top5=0.99, latency_ms=4.1, latency_p95_ms=5.0, throughput=1540.0, size_bytes=21_990_000)
    res = StageResult(stage="verify", ok=True, message="int8 hist ..." * 20, details={"big": "y" * 3000},
                      results=Results(backend="cpu-onednn-int8", fp32=m, int8=Int8Metrics(algo="hist", **m.dump()),
                                      accuracy_drop=0.001, speedup=2.1, candidates=cands),
                      gate=Gate(metric="top1", max_accuracy_drop=0.01, passed=True))
    text = encode(res)
    assert len(text.encode()) <= 4096
    back = decode(text)
    assert back.results.int8.algo == "hist" and len(back.results.candidates) == 7 and back.gate.passed


def _pir_flag_seen_by_paddle(import_cli_first: bool) -> bool:
    """FLAGS_enable_pir_api as the paddle imported in a fresh process reads it, with PIR asked for
    in the environment (as a user's shell or a Paddle 3 default would)."""
    import os
    import subprocess
    import sys

    code = ("import zlib, os\n" + ("import kubeslim_job.cli\n" if import_cli_first else "")
            + "import paddle\nprint(paddle.get_flags(['FLAGS_enable_pir_api'])['FLAGS_enable_pir_api'])")
    env = {**os.environ, "FLAGS_enable_pir_api": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_the_cli_turns_pir_off_before_paddle_loads():
    # Without it Paddle 3 writes PIR JSON and quant_post_static fails; the control run shows the
    # environment really asked for PIR, on Paddle 2.6 and 3.x alike.
    assert _pir_flag_seen_by_paddle(import_cli_first=False)
    assert not _pir_flag_seen_by_paddle(import_cli_first=True)
