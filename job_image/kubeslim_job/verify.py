"""Stage 3: measure fp32 and every int8 candidate with Paddle Inference, choose, gate, publish.

One evaluation set (the first `limit` samples) is fetched once into work/data/evaluation and
streamed batch by batch through every model. Per model: top-1/top-5 over the whole set, then
latency p50/p95 of full batches of verification.batchSize (after warm-up) and throughput.

Backends ("backend" in the results names what really ran the int8 model):
- cpu-onednn-int8: Paddle Inference on CPU with oneDNN and enable_mkldnn_int8 (fp32 with oneDNN).
- gpu-tensorrt-int8: GPU with TensorRT in Int8 precision (fp32 with TensorRT Float32). The fp32 model
  is also built as a TensorRT fp16 engine (results.fp16, speedupVsFp16): on GPUs int8 is often only
  1.3-1.5x faster than fp16, and fp16 is what GPU users compare with. No GPU here: the TensorRT
  settings are unit-tested on a fake Config (tests/unit/test_job_inference_config.py), never run here.
Int8 latency is only reported from one of these; a quantized model run without int8 kernels is
slower than fp32 (it runs fake-quantize ops in float) and would be a lie. verification.backend: auto = GPU+TensorRT when
the image has CUDA and a GPU is visible, else CPU; cpu forces CPU; gpu and tensorrt both mean
GPU + TensorRT (the only GPU path with int8 kernels) and fail if no GPU is visible.

Best candidate: highest spec metric, ties broken by lower latency. Gate: fp32 - best <=
maxAccuracyDrop. Every int8 candidate's `agreement` (the share of evaluation images whose top-1
class equals fp32's; fp32's own is 1.0) is reported; with metric agreement it is also what the
choice and the gate use (1 - agreement <= maxAccuracyDrop), and the labels are not read, so
top1/top5 are absent. With spec.output.onnx.enabled and a passed gate, the best model also goes
through onnx_export (paddle2onnx, then onnxruntime on the same evaluation set) and model.onnx is
uploaded beside it when it converts and scores within maxAccuracyDelta of Paddle's int8. On
success the best model goes to output.uri (model.pdmodel, model.pdiparams) with report.json,
report.html and the plots; on a failed gate only the report is uploaded (a model that failed its
gate must not be picked up by a deploy pipeline watching output.uri).
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from kubeslim_api import reasons
from kubeslim_api.contract import Artifacts, Gate, Int8Metrics, OnnxResult, Results
from kubeslim_api.spec import OnnxOutput, QuantizationJobSpec

from . import data, fallback, onnx_export, progress, report
from .errors import BadInput, GateFailed, last_line
from .handoff import CalibrationFacts, ExportFacts, MeasuredCandidate, Measurement, Verification
from .storage import Storage, join_uri
from .workdir import MODEL_FILE, PARAMS_FILE, WorkDir

EPS = 1e-9
CPU_ONEDNN = "cpu-onednn-int8"
GPU_TENSORRT = "gpu-tensorrt-int8"
Precision = Literal["fp32", "fp16", "int8"]


# Where a container finds its CPU quota: cgroup v2, then v1 (the real node here runs cgroup v1; a
# v2-only check left a 1-CPU pod timing 2 threads that the CFS quota then throttled).
CGROUP_V2_CPU_MAX = "/sys/fs/cgroup/cpu.max"
CGROUP_V1_CPU_DIRS = ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct")


def cgroup_cpu_limit(read: Callable[[str], str]) -> float | None:
    """The CPUs the cgroup quota allows, None when unlimited or unknown; `read(path)` returns a
    file's text or raises OSError."""
    try:
        quota, period = read(CGROUP_V2_CPU_MAX).split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for d in CGROUP_V1_CPU_DIRS:
        try:
            quota_us, period_us = int(read(f"{d}/cpu.cfs_quota_us")), int(read(f"{d}/cpu.cfs_period_us"))
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def cpu_threads() -> int:
    """CPU threads for inference: KUBESLIM_THREADS, else the cgroup CPU limit (rounded down, at
    least 1), else the affinity set."""
    if os.environ.get("KUBESLIM_THREADS"):
        return max(1, int(os.environ["KUBESLIM_THREADS"]))
    n = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(_read)
    return n if limit is None else min(n, max(1, int(limit)))


def pick_backend(requested: str) -> str:
    import paddle

    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if requested == "cpu" or (requested == "auto" and not has_gpu):
        return CPU_ONEDNN
    if not has_gpu:
        raise BadInput("NoGPU", f"spec.verification.backend is {requested} but no GPU is visible to the job "
                                "(or the image has no CUDA); request spec.resources.gpu or use backend cpu")
    return GPU_TENSORRT


def configure(config: Any, backend: str, precision: Precision, batch_size: int, feed: str, shape: list[int],
              threads: int) -> None:
    """Set a paddle.inference.Config up for one backend and precision, and refuse one that did not
    take: a model timed without the kernels it was meant for would report a lie. Touches nothing
    but `config`, so the TensorRT settings are tested on a fake where no GPU is."""
    from paddle.inference import PrecisionType

    config.disable_glog_info()
    config.switch_ir_optim(True)          # off, inference measured 13x slower on these models
    config.enable_memory_optim()
    if backend == CPU_ONEDNN:
        if precision == "fp16":
            raise ValueError("fp16 is timed on the TensorRT backend only")
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.set_mkldnn_cache_capacity(4)   # bounded shape cache: the last batch may be short
        if precision == "int8":
            config.enable_mkldnn_int8()
            if not config.mkldnn_int8_enabled():
                raise RuntimeError("oneDNN int8 could not be enabled; refusing to time int8 without int8 kernels")
        return
    mode = {"fp32": PrecisionType.Float32, "fp16": PrecisionType.Half, "int8": PrecisionType.Int8}[precision]
    config.enable_use_gpu(256, 0)
    # use_calib_mode=False: an int8 candidate carries its scales in its quantize ops (TensorRT's own
    # calibration would replace them); fp32 and fp16 need none.
    config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=batch_size, min_subgraph_size=3,
                                  precision_mode=mode, use_static=False, use_calib_mode=False)
    config.set_trt_dynamic_shape_info({feed: [1, *shape]}, {feed: [batch_size, *shape]}, {feed: [batch_size, *shape]})
    if not config.tensorrt_engine_enabled() or config.tensorrt_precision_mode() != mode:
        raise RuntimeError(f"TensorRT {precision} could not be enabled; refusing to time it without TensorRT")


def predictor(model_dir: str, backend: str, precision: Precision, batch_size: int, feed: str, shape: list[int]):
    from paddle.inference import Config, create_predictor

    config = Config(os.path.join(model_dir, MODEL_FILE), os.path.join(model_dir, PARAMS_FILE))
    configure(config, backend, precision, batch_size, feed, shape, cpu_threads())
    return create_predictor(config)


@dataclass(frozen=True)
class Scores:
    """One model's answers on the evaluation set; top1/top5/correct are None where its labels were
    not read (metric agreement), agreement None where no reference was given."""
    top1: float | None
    top5: float | None
    correct: int | None
    predictions: np.ndarray     # the top-1 class of every sample, in order
    batch: np.ndarray           # a full batch of batch_size samples, for timing
    agreement: float | None = None


def agreement(predictions: np.ndarray, reference: np.ndarray) -> float:
    """The fraction of samples whose top-1 class equals the reference model's."""
    if predictions.shape != reference.shape or not len(reference):
        raise ValueError(f"cannot compare {predictions.shape[0]} predictions with {reference.shape[0]} reference ones")
    return round(float((predictions == reference).mean()), 6)


def score(infer: Callable[[np.ndarray], np.ndarray], evalset: data.TensorFile, batch_size: int,
          reference: np.ndarray | None = None) -> Scores:
    """Run `infer` (a batch of inputs -> logits) over the evaluation set: top-1/top-5 (if labelled),
    the predictions and their agreement with `reference` (another model's predictions). The same
    for every runtime, so Paddle's and onnxruntime's numbers compare."""
    top1 = top5 = 0
    first: np.ndarray | None = None
    preds: list[np.ndarray] = []
    for x, y in evalset.batches(batch_size):
        if first is None:
            first = np.resize(x, (batch_size, *x.shape[1:])).astype(np.float32)  # a full batch for timing
        logits = infer(x)
        progress.advance("batches")
        k = min(5, logits.shape[1])
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        preds.append(np.argmax(logits, axis=1))
        top1 += int((preds[-1] == y).sum())
        top5 += int((top == y[:, None]).any(axis=1).sum())
    n = evalset.n
    assert first is not None
    predictions = np.concatenate(preds)
    agreed = agreement(predictions, reference) if reference is not None else None
    if not evalset.labelled:
        return Scores(top1=None, top5=None, correct=None, predictions=predictions, batch=first, agreement=agreed)
    return Scores(top1=round(top1 / n, 6), top5=round(top5 / n, 6), correct=top1, predictions=predictions,
                  batch=first, agreement=agreed)


def measure(model_dir: str, backend: str, int8: bool, evalset: data.TensorFile, batch_size: int, feed: str,
            shape: list[int], *, fp16: bool = False, reference: Measurement | None = None) -> Measurement:
    """Score and time one model; `fp16` builds the (fp32) model as a TensorRT fp16 engine.
    `reference`: the fp32 measurement its agreement is taken against; without one the model is
    the reference itself (agreement 1.0)."""
    pred = predictor(model_dir, backend, "int8" if int8 else "fp16" if fp16 else "fp32", batch_size, feed, shape)
    inp = pred.get_input_handle(pred.get_input_names()[0])
    out = pred.get_output_handle(pred.get_output_names()[0])

    def infer(x: np.ndarray) -> np.ndarray:
        inp.reshape(list(x.shape))
        inp.copy_from_cpu(x)
        pred.run()
        return out.copy_to_cpu()

    s = score(infer, evalset, batch_size, np.asarray(reference.predictions) if reference is not None else None)
    lat = _latency(lambda: infer(s.batch))
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in (MODEL_FILE, PARAMS_FILE))
    p50 = float(np.percentile(lat, 50))
    return Measurement(top1=s.top1, top5=s.top5, agreement=s.agreement if reference is not None else 1.0,
                       latency_ms=round(p50, 4),
                       latency_p95_ms=round(float(np.percentile(lat, 95)), 4),
                       throughput=round(batch_size / (p50 / 1000.0), 2), size_bytes=size, correct=s.correct,
                       predictions=s.predictions.tolist())


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


def speedup(baseline: Measurement, model: Measurement | MeasuredCandidate) -> float | None:
    return round(baseline.latency_ms / model.latency_ms, 3) if baseline.latency_ms and model.latency_ms else None


def verify_onnx(cfg: OnnxOutput, best: MeasuredCandidate, best_dir: str, evalset: data.TensorFile, metric: str,
                batch_size: int, fp32: Measurement) -> OnnxResult:
    """The best int8 model through paddle2onnx into best_dir/model.onnx, then scored and timed by
    onnxruntime on the same evaluation set and judged against Paddle's int8 numbers."""
    conv = onnx_export.convert(best_dir, cfg.opset_version)
    if conv.failure is not None:
        return conv.failure
    try:
        infer = onnx_export.session(conv.path, cpu_threads())
        s = score(infer, evalset, batch_size, np.asarray(fp32.predictions))
        lat = float(np.percentile(_latency(lambda: infer(s.batch)), 50))
    except Exception as exc:    # onnxruntime refusing the file is a finding about the file, not a crash
        return onnx_export.runtime_failed(conv, exc)
    # agreement, like Paddle int8's, is with fp32's top-1
    return onnx_export.judge(conv, cfg, metric, paddle=best, onnx_value=getattr(s, metric), top1=s.top1, top5=s.top5,
                             predictions=s.predictions, latency_ms=round(lat, 4))


def judge(fp32: Measurement, best: MeasuredCandidate, metric: str, max_drop: float) -> tuple[float, Gate]:
    """The drop of `best` against fp32 in the metric, and the gate's verdict on it."""
    drop = getattr(fp32, metric) - getattr(best, metric)
    return drop, Gate(metric=metric, max_accuracy_drop=max_drop, passed=drop <= max_drop + EPS)


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
    progress.plan(progress.evaluation_batches(evalset.n, v.batch_size, 1 + (backend == GPU_TENSORRT) + spec.output.onnx.enabled
                                              + sum(c.error is None for c in calib.candidates)), "batches", step="fp32")
    fp32 = measure(work.fp32, backend, False, evalset, v.batch_size, feed, shape)
    fp16 = measure(work.fp32, backend, False, evalset, v.batch_size, feed, shape, fp16=True, reference=fp32) \
        if backend == GPU_TENSORRT else None
    metric = v.metric
    rows: list[MeasuredCandidate] = []
    for c in calib.candidates:
        row = MeasuredCandidate(algo=c.algo, calibration_seconds=c.calibration_seconds, dir=c.dir, error=c.error)
        if c.error is None:
            progress.step(c.algo)
            try:
                m = measure(os.path.join(work.root, c.dir), backend, True, evalset, v.batch_size, feed, shape,
                            reference=fp32)
            except Exception as exc:
                row.error = f"inference failed: {last_line(exc)}"
            else:
                row = row.model_copy(update={**dict(m), "accuracy_drop": round(getattr(fp32, metric) - getattr(m, metric), 6)})
        rows.append(row)
    best = choose(rows, metric)
    if best is None:
        raise BadInput("CalibrationFailed", "no int8 candidate could be measured: "
                                            + "; ".join(f"{r.algo}: {r.error}" for r in rows)[:900])
    drop, gate = judge(fp32, best, metric, v.max_accuracy_drop)
    fb = None
    if fallback.wanted(spec.quantization.accuracy_control, gate.passed):
        fb = fallback.run(spec, work, facts, calib, evalset, backend, fp32, best, gate,
                          lambda d: measure(d, backend, True, evalset, v.batch_size, feed, shape, reference=fp32))
        rows += fb.rows
        best = fb.best or choose(rows, metric)
        drop, gate = judge(fp32, best, metric, v.max_accuracy_drop)
    best_dir = os.path.join(work.root, best.dir)
    onnx = verify_onnx(spec.output.onnx, best, best_dir, evalset, metric, v.batch_size, fp32) \
        if spec.output.onnx.enabled and gate.passed else None
    results = Results(
        backend=backend,
        fp32=fp32,                     # a Measurement and MeasuredCandidates: they serialise as the contract's types
        int8=Int8Metrics.model_validate(best, from_attributes=True),
        accuracy_drop=round(drop, 6),
        speedup=speedup(fp32, best),
        candidates=rows,
        fp16=fp16,
        speedup_vs_fp16=speedup(fp16, best) if fp16 is not None else None,
        onnx=onnx,
        fallback=fb.summary if fb else None,
    )
    details = {"evalSamples": evalset.n, "bytesRead": stats.bytes_read, "bytesUsed": stats.bytes_used,
               "fp32Correct": fp32.correct, "bestCorrect": best.correct, "threads": cpu_threads()}
    # Publish: report always; the model only when the gate passed.
    out = spec.output.uri
    files = report.write(work.report, spec, facts, calib, results, gate, rows, details,
                         sensitivity=[x.dump() for x in fb.sensitivity] if fb else None)
    artifacts = Artifacts()
    if gate.passed:
        for name in (MODEL_FILE, PARAMS_FILE):
            storage.upload(os.path.join(best_dir, name), join_uri(out, name), "spec.output.uri", "application/octet-stream")
        artifacts.model, artifacts.params = join_uri(out, MODEL_FILE), join_uri(out, PARAMS_FILE)
    if onnx is not None and onnx.exported:
        name = onnx_export.MODEL_ONNX
        storage.upload(os.path.join(best_dir, name), join_uri(out, name), "spec.output.uri", "application/octet-stream")
        artifacts.onnx = join_uri(out, name)
    for name, ctype in files.items():
        storage.upload(os.path.join(work.report, name), join_uri(out, name), "spec.output.uri", ctype)
    artifacts.report, artifacts.report_json = join_uri(out, "report.html"), join_uri(out, "report.json")
    details["seconds"] = round(time.perf_counter() - t0, 3)
    if not gate.passed:
        loss = (f"gives a different top-1 class than fp32 on {drop:.4f} of the evaluation images (agreement "
                f"{best.agreement:.4f}), more than maxAccuracyDrop " if metric == "agreement" else
                f"loses {drop:.4f} {metric} against fp32 ({getattr(fp32, metric):.4f} -> {getattr(best, metric):.4f}), "
                "more than maxAccuracyDrop ")
        tried = (f" even with {best.fp32_layers} of the most sensitive layers in fp32" if best.fp32_layers else "") + \
            (f" (fallback stopped: {fb.summary.stop_reason})" if fb else "")
        raise GateFailed(reasons.GATE_FAILED,
                         f"the best int8 candidate ({best.algo}){tried} {loss}"
                         f"{v.max_accuracy_drop}; try other algos, more calibration samples, skipTensors, a larger "
                         "spec.quantization.accuracyControl budget, or raise "
                         "spec.verification.maxAccuracyDrop").with_results(results, gate, artifacts, details)
    return Verification(results=results, gate=gate, artifacts=artifacts, details=details)
