"""Stage 3: measure fp32 and every int8 candidate with Paddle Inference, choose, gate, publish.

One evaluation set (the first `limit` samples) is fetched once into work/data/evaluation and
streamed batch by batch through every model. Per model: top-1/top-5 over the whole set, then
latency p50/p95 of full batches of verification.batchSize (after warm-up) and throughput.

Backends ("backend" in the results names what really ran the int8 model):
- cpu-onednn-int8: Paddle Inference on CPU with oneDNN and enable_mkldnn_int8 (fp32 with oneDNN).
- gpu-tensorrt-int8: GPU with TensorRT in Int8 precision (fp32 with TensorRT Float32).
Int8 latency is only reported from one of these; a quantized model run without int8 kernels is
slower than fp32 (it runs fake-quantize ops in float) and would be a lie. verification.backend: auto = GPU+TensorRT when
the image has CUDA and a GPU is visible, else CPU; cpu forces CPU; gpu and tensorrt both mean
GPU + TensorRT (the only GPU path with int8 kernels) and fail if no GPU is visible.

Best candidate: highest spec metric, ties broken by lower latency. Gate: fp32 - best <=
maxAccuracyDrop. On success the best model goes to output.uri (model.pdmodel, model.pdiparams)
with report.json, report.html and the plots; on a failed gate only the report is uploaded (a model
that failed its gate must not be picked up by a deploy pipeline watching output.uri).
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import os
import time

import numpy as np
from kubeslim_api import reasons
from kubeslim_api.contract import Artifacts, Gate, Int8Metrics, Results
from kubeslim_api.spec import QuantizationJobSpec

from . import data, report
from .errors import BadInput, GateFailed, last_line
from .handoff import CalibrationFacts, ExportFacts, MeasuredCandidate, Measurement, Verification
from .storage import Storage, join_uri
from .workdir import MODEL_FILE, PARAMS_FILE, WorkDir

EPS = 1e-9


def cpu_threads() -> int:
    """CPU threads for inference: KUBESLIM_THREADS, else the cgroup CPU limit, else the affinity set."""
    if os.environ.get("KUBESLIM_THREADS"):
        return max(1, int(os.environ["KUBESLIM_THREADS"]))
    n = len(os.sched_getaffinity(0))
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def pick_backend(requested: str) -> str:
    import paddle

    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if requested == "cpu" or (requested == "auto" and not has_gpu):
        return "cpu-onednn-int8"
    if not has_gpu:
        raise BadInput("NoGPU", f"spec.verification.backend is {requested} but no GPU is visible to the job "
                                "(or the image has no CUDA); request spec.resources.gpu or use backend cpu")
    return "gpu-tensorrt-int8"


def predictor(model_dir: str, backend: str, int8: bool, batch_size: int, feed: str, shape: list[int]):
    from paddle.inference import Config, PrecisionType, create_predictor

    config = Config(os.path.join(model_dir, MODEL_FILE), os.path.join(model_dir, PARAMS_FILE))
    config.disable_glog_info()
    config.switch_ir_optim(True)          # off, inference measured 13x slower on these models
    config.enable_memory_optim()
    if backend == "cpu-onednn-int8":
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(cpu_threads())
        config.set_mkldnn_cache_capacity(4)   # bounded shape cache: the last batch may be short
        if int8:
            config.enable_mkldnn_int8()
            if not config.mkldnn_int8_enabled():
                raise RuntimeError("oneDNN int8 could not be enabled; refusing to time int8 without int8 kernels")
    else:
        config.enable_use_gpu(256, 0)
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=batch_size, min_subgraph_size=3,
                                      precision_mode=PrecisionType.Int8 if int8 else PrecisionType.Float32,
                                      use_static=False, use_calib_mode=False)
        config.set_trt_dynamic_shape_info({feed: [1, *shape]}, {feed: [batch_size, *shape]}, {feed: [batch_size, *shape]})
    return create_predictor(config)


def measure(model_dir: str, backend: str, int8: bool, evalset: data.TensorFile, batch_size: int, feed: str,
            shape: list[int]) -> Measurement:
    pred = predictor(model_dir, backend, int8, batch_size, feed, shape)
    inp = pred.get_input_handle(pred.get_input_names()[0])
    out = pred.get_output_handle(pred.get_output_names()[0])

    def infer(x: np.ndarray) -> np.ndarray:
        inp.reshape(list(x.shape))
        inp.copy_from_cpu(x)
        pred.run()
        return out.copy_to_cpu()

    top1 = top5 = 0
    first: np.ndarray | None = None
    for x, y in evalset.batches(batch_size):
        if first is None:
            first = np.resize(x, (batch_size, *x.shape[1:])).astype(np.float32)  # a full batch for timing
        logits = infer(x)
        k = min(5, logits.shape[1])
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        top1 += int((np.argmax(logits, axis=1) == y).sum())
        top5 += int((top == y[:, None]).any(axis=1).sum())
    n = evalset.n
    assert first is not None
    lat = _latency(lambda: infer(first))
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in (MODEL_FILE, PARAMS_FILE))
    p50 = float(np.percentile(lat, 50))
    return Measurement(top1=round(top1 / n, 6), top5=round(top5 / n, 6), latency_ms=round(p50, 4),
                       latency_p95_ms=round(float(np.percentile(lat, 95)), 4),
                       throughput=round(batch_size / (p50 / 1000.0), 2), size_bytes=size, correct=top1)


def _latency(fn) -> list[float]:
    """Per-batch milliseconds: 3 warm-up runs, then runs until KUBESLIM_LATENCY_SECONDS (default 1.5)
    or 200 runs, at least 10."""
    budget = float(os.environ.get("KUBESLIM_LATENCY_SECONDS", "1.5"))
    for _ in range(3):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 10 or (time.perf_counter() - start < budget and len(times) < 200):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return times


def choose(candidates: list[MeasuredCandidate], metric: str) -> MeasuredCandidate | None:
    """Highest metric; ties (within 1e-9) go to the lower latency."""
    ok = [c for c in candidates if c.error is None]
    if not ok:
        return None
    return min(ok, key=lambda c: (-round(getattr(c, metric), 9), c.latency_ms or float("inf")))


def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> Verification:
    t0 = time.perf_counter()
    facts = work.load(ExportFacts)
    calib = work.load(CalibrationFacts)
    v = spec.verification
    backend = pick_backend(v.backend)
    prep = data.Prep.from_spec(spec.data.preprocess, facts.input_shape)
    evalset, stats = data.load(storage, spec.data.evaluation, "spec.data.evaluation", spec.data.evaluation.limit,
                               prep, work.eval, facts.num_classes, spec.needs_labels("evaluation"))
    feed, shape = facts.feed_name, facts.input_shape
    fp32 = measure(work.fp32, backend, False, evalset, v.batch_size, feed, shape)
    metric = v.metric
    rows: list[MeasuredCandidate] = []
    for c in calib.candidates:
        row = MeasuredCandidate(algo=c.algo, calibration_seconds=c.calibration_seconds, dir=c.dir, error=c.error)
        if c.error is None:
            try:
                m = measure(os.path.join(work.root, c.dir), backend, True, evalset, v.batch_size, feed, shape)
            except Exception as exc:
                row.error = f"inference failed: {last_line(exc)}"
            else:
                row = row.model_copy(update={**dict(m), "accuracy_drop": round(getattr(fp32, metric) - getattr(m, metric), 6)})
        rows.append(row)
    best = choose(rows, metric)
    if best is None:
        raise BadInput("CalibrationFailed", "no int8 candidate could be measured: "
                                            + "; ".join(f"{r.algo}: {r.error}" for r in rows)[:900])
    drop = getattr(fp32, metric) - getattr(best, metric)
    gate = Gate(metric=metric, max_accuracy_drop=v.max_accuracy_drop, passed=drop <= v.max_accuracy_drop + EPS)
    results = Results(
        backend=backend,
        fp32=fp32,                     # a Measurement and MeasuredCandidates: they serialise as the contract's types
        int8=Int8Metrics.model_validate(best, from_attributes=True),
        accuracy_drop=round(drop, 6),
        speedup=round(fp32.latency_ms / best.latency_ms, 3) if best.latency_ms else None,
        candidates=rows,
    )
    details = {"evalSamples": evalset.n, "bytesRead": stats.bytes_read, "bytesUsed": stats.bytes_used,
               "fp32Correct": fp32.correct, "bestCorrect": best.correct, "threads": cpu_threads()}
    # Publish: report always; the model only when the gate passed.
    out = spec.output.uri
    files = report.write(work.report, spec, facts, calib, results, gate, rows, details)
    artifacts = Artifacts()
    if gate.passed:
        best_dir = os.path.join(work.root, best.dir)
        for name in (MODEL_FILE, PARAMS_FILE):
            storage.upload(os.path.join(best_dir, name), join_uri(out, name), "spec.output.uri", "application/octet-stream")
        artifacts.model, artifacts.params = join_uri(out, MODEL_FILE), join_uri(out, PARAMS_FILE)
    for name, ctype in files.items():
        storage.upload(os.path.join(work.report, name), join_uri(out, name), "spec.output.uri", ctype)
    artifacts.report, artifacts.report_json = join_uri(out, "report.html"), join_uri(out, "report.json")
    details["seconds"] = round(time.perf_counter() - t0, 3)
    if not gate.passed:
        raise GateFailed(reasons.GATE_FAILED,
                         f"the best int8 candidate ({best.algo}) loses {drop:.4f} {metric} against fp32 "
                         f"({getattr(fp32, metric):.4f} -> {getattr(best, metric):.4f}), more than maxAccuracyDrop "
                         f"{v.max_accuracy_drop}; try other algos, more calibration samples, skipTensors, or raise "
                         "spec.verification.maxAccuracyDrop").with_results(results, gate, artifacts, details)
    return Verification(results=results, gate=gate, artifacts=artifacts, details=details)
