"""Paddle Inference settings per backend and precision (inference.configure), on a fake Config that
records the calls: no GPU is here, so this is how the TensorRT int8/fp16/fp32 settings are
checked at all (they never run in CI). And verify.run's hook: on the TensorRT backend the fp32
model is also timed as an fp16 engine and int8 is reported against it; on the CPU, never."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import json

import numpy as np
import pytest
from paddle.inference import PrecisionType

from kubeslim_job import inference, verify
from kubeslim_api.spec import ModelInput
from kubeslim_job.handoff import CalibratedCandidate, CalibrationFacts, ExportFacts, Measurement, OutputFacts
from kubeslim_job.workdir import MODEL_FILE, PARAMS_FILE, WorkDir

pytestmark = pytest.mark.unit


class FakeConfig:
    """paddle.inference.Config's calls as a list; `takes` says whether TensorRT / oneDNN int8 take
    effect (False plays a build without them, which must be refused, not timed)."""

    def __init__(self, takes: bool = True):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.takes = takes
        self._trt, self._mode, self._int8 = False, None, False

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
        return record

    def enable_tensorrt_engine(self, **kwargs):
        self.calls.append(("enable_tensorrt_engine", (), kwargs))
        if self.takes:
            self._trt, self._mode = True, kwargs["precision_mode"]

    def tensorrt_engine_enabled(self):
        return self._trt

    def tensorrt_precision_mode(self):
        return self._mode

    def enable_mkldnn_int8(self, op_types=None):
        self.calls.append(("enable_mkldnn_int8", (op_types,), {}))
        self._int8 = self.takes

    def mkldnn_int8_enabled(self):
        return self._int8

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def call(self, name: str) -> tuple[tuple, dict]:
        (found,) = [(a, k) for n, a, k in self.calls if n == name]
        return found


COMMON = ["disable_glog_info", "switch_ir_optim", "enable_memory_optim"]


@pytest.mark.parametrize("precision, mode", [
    ("fp32", PrecisionType.Float32), ("fp16", PrecisionType.Half), ("int8", PrecisionType.Int8)])
def test_tensorrt_builds_the_engine_in_the_precision_asked(precision, mode):
    cfg = FakeConfig()
    inference.configure(cfg, inference.GPU_TENSORRT, precision, 16, {"image": [3, 224, 224]}, threads=2)
    assert cfg.names() == COMMON + ["enable_use_gpu", "enable_tensorrt_engine", "set_trt_dynamic_shape_info"]
    _, trt = cfg.call("enable_tensorrt_engine")
    # the int8 model's scales come from its quantize ops, never from TensorRT's own calibration
    assert trt == {"workspace_size": 1 << 30, "max_batch_size": 16, "min_subgraph_size": 3, "precision_mode": mode,
                   "use_static": False, "use_calib_mode": False}
    shapes, _ = cfg.call("set_trt_dynamic_shape_info")
    assert shapes == ({"image": [1, 3, 224, 224]}, {"image": [16, 3, 224, 224]}, {"image": [16, 3, 224, 224]})
    assert not any(n.startswith(("enable_mkldnn", "disable_gpu")) for n in cfg.names())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_that_did_not_take_is_refused(precision):
    with pytest.raises(RuntimeError, match=f"TensorRT {precision} could not be enabled"):
        inference.configure(FakeConfig(takes=False), inference.GPU_TENSORRT, precision, 8, {"x": [1, 8, 8]}, threads=2)


@pytest.mark.parametrize("precision, int8_calls", [("fp32", []), ("int8", ["enable_mkldnn_int8"])])
def test_cpu_runs_onednn_with_int8_kernels_for_int8(precision, int8_calls):
    cfg = FakeConfig()
    inference.configure(cfg, inference.CPU_ONEDNN, precision, 64, {"x": [1, 28, 28]}, threads=3)
    assert cfg.names() == COMMON + ["disable_gpu", "enable_mkldnn", "set_cpu_math_library_num_threads",
                                    "set_mkldnn_cache_capacity"] + int8_calls
    assert cfg.call("set_cpu_math_library_num_threads") == ((3,), {})


def test_onednn_keeps_pool_and_elementwise_mul_in_fp32():
    """pool2d and elementwise_mul, which onnx_format's output scales would otherwise put in int8
    (mobilenet_v3_small's features cosine 0.895 against 0.990), stay fp32; the rest runs int8."""
    cfg = FakeConfig()
    inference.configure(cfg, inference.CPU_ONEDNN, "int8", 16, {"x": [3, 8, 8]}, threads=1)
    ((ops,), _) = cfg.call("enable_mkldnn_int8")
    assert {"conv2d", "depthwise_conv2d", "fused_conv2d", "fc", "matmul_v2", "elementwise_add", "concat"} <= ops
    assert not ops & {"pool2d", "elementwise_mul", "fused_elementwise_mul"}


def test_paddle_takes_every_int8_op_type(tmp_path):
    """Paddle refuses a predictor whose int8 op set names a type its oneDNN quantization lacks
    (mul did), so the set is checked against the real one on a small conv + fc model."""
    import paddle

    layer = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 2))
    paddle.jit.save(layer, str(tmp_path / "model"), input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
    infer = inference.open_model(str(tmp_path), inference.CPU_ONEDNN, "int8", 2, {"x": [3, 8, 8]})
    assert list(infer({"x": np.zeros((2, 3, 8, 8), np.float32)}).values())[0].shape == (2, 2)


def test_cpu_refuses_fp16_and_an_int8_that_did_not_take():
    with pytest.raises(ValueError, match="TensorRT backend only"):
        inference.configure(FakeConfig(), inference.CPU_ONEDNN, "fp16", 8, {"x": [1, 8, 8]}, threads=1)
    with pytest.raises(RuntimeError, match="oneDNN int8 could not be enabled"):
        inference.configure(FakeConfig(takes=False), inference.CPU_ONEDNN, "int8", 8, {"x": [1, 8, 8]}, threads=1)


# ----------------------------------------------------------------------------------------------
# verify.run on the TensorRT backend, with measure() answering from a table.

def _m(latency: float, top1: float = 0.95) -> Measurement:
    return Measurement(top1=top1, top5=0.99, agreement=1.0, latency_ms=latency, latency_p95_ms=latency,
                       throughput=1.0, size_bytes=1000, correct=int(top1 * 100), predictions=[0, 1])


class _Eval:
    n, labelled = 100, True


class _Storage:
    def __init__(self):
        self.uploads: list[str] = []

    def upload(self, path, uri, field, content_type=None):
        self.uploads.append(uri)


@pytest.mark.parametrize("backend, fp16_timed", [(inference.GPU_TENSORRT, True), (inference.CPU_ONEDNN, False)])
def test_run_reports_int8_against_tensorrt_fp16(backend, fp16_timed, tmp_path, monkeypatch):
    from kubeslim_api.spec import parse_spec

    work = WorkDir(str(tmp_path))
    work.save(ExportFacts(source="inference", inputs=[ModelInput(name="x", shape=[1, 8, 8])],
                          outputs=[OutputFacts(name="y", shape=[1, 10], dtype="float32")], num_classes=10, ops=3, op_types={},
                          params=10, size_bytes=100))
    work.save(CalibrationFacts(samples=8, batch_size=8, batch_nums=1, bytes_read=1, bytes_used=1, fetch_seconds=0.0,
                               seconds=0.1, candidates=[CalibratedCandidate(algo="hist", calibration_seconds=0.1,
                                                                            dir="int8/hist")]))
    for name in (MODEL_FILE, PARAMS_FILE):
        (tmp_path / "int8" / "hist").mkdir(parents=True, exist_ok=True)
        (tmp_path / "int8" / "hist" / name).write_bytes(b"x")
    spec = parse_spec({"model": {"inference": {"uri": "s3://b/m/"}},
                       "data": {"calibration": {"uri": "s3://b/c.npz", "format": "npz"},
                                "evaluation": {"uri": "s3://b/e.npz", "format": "npz"}, "preprocess": {}},
                       "verification": {"backend": "tensorrt", "maxAccuracyDrop": 0.05},
                       "output": {"uri": "s3://b/out/"}})
    asked: list[tuple[str, bool, bool]] = []

    def measure(model_dir, backend_, int8, evalset, batch_size, *, fp16=False, reference=None, classify=True, keep=None,
                outputs=None):
        asked.append((model_dir, int8, fp16))
        return _m(2.0 if int8 else 3.0 if fp16 else 6.0)

    monkeypatch.setattr(verify, "pick_backend", lambda requested: backend)
    monkeypatch.setattr(verify.data, "load", lambda *a, **k: (_Eval(), verify.data.LoadStats()))
    monkeypatch.setattr(verify, "measure", measure)
    out = verify.run(spec, _Storage(), work)
    r = out.results
    fp16_calls = [a for a in asked if a[2]]
    if fp16_timed:
        assert fp16_calls == [(work.fp32, False, True)]        # the fp32 model, built as an fp16 engine
        assert r.fp16.latency_ms == 3.0 and r.speedup_vs_fp16 == 1.5 and r.speedup == 3.0
        assert "(1.5x against TensorRT fp16)" in out.to_result().message
    else:
        assert fp16_calls == [] and r.fp16 is None and r.speedup_vs_fp16 is None
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["results"].get("speedupVsFp16") == (1.5 if fp16_timed else None)
    html = (tmp_path / "report" / "report.html").read_text()
    assert ("int8 against TensorRT fp16" in html) is fp16_timed
