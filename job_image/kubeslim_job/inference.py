"""Paddle Inference on one model, the one inference loop, and what it measures: used by verify (fp32,
fp16 and every int8 candidate), by the fallback (its ranking subset and its steps), by calibrate
(one fp32 run that checks the data's shapes) and, through `score`, by the ONNX check
(onnxruntime's session is another `Infer`).

Backends ("backend" in the results names what really ran the int8 model):
- cpu-onednn-int8: Paddle Inference on CPU with oneDNN and enable_mkldnn_int8 (fp32 with oneDNN).
- gpu-tensorrt-int8: GPU with TensorRT in Int8 precision (fp32 with TensorRT Float32). The fp32 model
  is also built as a TensorRT fp16 engine (results.fp16, speedupVsFp16): on GPUs int8 is often only
  1.3-1.5x faster than fp16, and fp16 is what GPU users compare with. No GPU here: the TensorRT
  settings are unit-tested on a fake Config (tests/unit/test_job_inference_config.py), never run here.
Int8 latency is only reported from one of these; a quantized model run without int8 kernels is
slower than fp32 (it runs fake-quantize ops in float) and would be a lie. verification.backend: auto = GPU+TensorRT when
the image has CUDA, a GPU is visible and Paddle loads TensorRT, else CPU; cpu forces CPU; gpu and tensorrt both mean
GPU + TensorRT (the only GPU path with int8 kernels) and fail if no GPU is visible or Paddle cannot
load TensorRT (choose_backend); kubeslim-job checks that before the first stage, not after calibration.

Per model: top-1/top-5 over the whole evaluation set, then latency p50/p95 of full batches of
verification.batchSize (after warm-up) and throughput.

Output fidelity (every metric): fp32's outputs on the evaluation set are kept on disk batch by batch
(work/outputs/fp32) and every int8 model's outputs are compared with them output by output: mean
per-sample cosine similarity, SQNR and max abs error (FidelityMeter). An output whose shape differs
between the two in some batch (NMS boxes of different counts) is reported not comparable, with the
reason, and left out of the summary.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import numpy as np
from kubeslim_api.contract import Fidelity, OutputFidelity
from kubeslim_api.text import truncate

from . import data, progress
from .errors import ERROR_LINE_CHARS, BadInput
from .handoff import Measurement
from .workdir import MODEL_FILE, PARAMS_FILE

CPU_ONEDNN = "cpu-onednn-int8"
GPU_TENSORRT = "gpu-tensorrt-int8"
Precision = Literal["fp32", "fp16", "int8"]


# The op types oneDNN runs in int8: every type Paddle 2.6's oneDNN quantization takes (it refuses a
# set naming any other) except elementwise_mul and pool2d. enable_mkldnn_int8() with no set runs
# those two in int8 too wherever onnx_format wrote a scale on their output (it writes one on every
# op), and on squeeze-excitation blocks (a global pool2d, then x * hardsigmoid(...)) that costs
# fidelity: mobilenet_v3_small (seeded, hist, 32 calibration images) penultimate features cosine
# 0.895 with every type, 0.977 without elementwise_mul, 0.990 without both (what its quantize ops
# themselves compute in Paddle's executor: 0.990); logits 0.833 -> 0.958, agreement 0.84 -> 0.91
# (avg: 0.894 -> 0.897). The price, 2 shared cores, alternating rounds, fastest round per batch:
# mobilenet_v3_small 7-9% (23.6 against 22.0 ms avg, 25.6 against 23.5 hist); resnet50 and the
# zoo's ocr_det, ocr_rec and lcnet within the noise (ocr_det 22.3 against 22.0 ms). Keeping every
# op but the weighted layers fp32 instead cost ocr_det 27% (49.9 against 39.2 ms).
ONEDNN_INT8_OPS = frozenset({
    "conv2d", "depthwise_conv2d", "fused_conv2d", "fused_conv3d", "fc", "matmul", "matmul_v2", "fused_matmul",
    "elementwise_add", "elementwise_sub", "fused_elementwise_add", "fused_elementwise_sub", "concat", "slice", "split",
    "reshape2", "transpose2", "nearest_interp", "nearest_interp_v2", "prior_box", "fusion_gru", "fusion_lstm", "multi_gru"})


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


# spec.verification.backend values that insist on the GPU (auto takes one only where it can run).
GPU_REQUESTS = ("gpu", "tensorrt")
NO_GPU = "NoGPU"
NO_TENSORRT = "TensorRTUnavailable"


@dataclass(frozen=True)
class Accelerator:
    """What this process's Paddle can use. A GPU image runs where no GPU is (a CPU node, a pod
    without nvidia.com/gpu) and, built from PyPI alone, without TensorRT (no registry wheel of it):
    each is a fact of its own, so a refusal can say which one is missing."""
    cuda: str | None                 # paddle.version.cuda() of a CUDA build; None: a CPU build
    gpus: int = 0
    tensorrt: str | None = None      # the TensorRT version Paddle loaded; None: it could not load one
    tensorrt_error: str = ""


def visible_gpus() -> int | None:
    """GPUs this process's Paddle can use; None for a CPU build (it has no CUDA runtime to ask)."""
    import paddle

    return paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else None


def accelerator() -> Accelerator:
    import paddle

    gpus = visible_gpus()
    if gpus is None:
        return Accelerator(cuda=None)
    try:
        # dlopens libnvinfer.so; Paddle raises NotFound when it cannot (measured without a GPU too),
        # the cause on its first line ("(NotFound) TensorRT is needed, but TensorRT dynamic library is
        # not found."), a source location on its last.
        version = ".".join(map(str, paddle.inference.get_trt_runtime_version()))
    except Exception as exc:
        cause = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        return Accelerator(cuda=paddle.version.cuda(), gpus=gpus,
                           tensorrt_error=f"{type(exc).__name__}: {truncate(cause, ERROR_LINE_CHARS)}")
    return Accelerator(cuda=paddle.version.cuda(), gpus=gpus, tensorrt=version)


def choose_backend(requested: str, acc: Accelerator) -> str:
    """The backend for spec.verification.backend `requested` on `acc`; a GPU request that cannot be
    met is a BadInput naming the field, what is missing and the ways out."""
    gpu = acc.cuda is not None and acc.gpus > 0
    if requested == "cpu" or (requested == "auto" and not (gpu and acc.tensorrt)):
        return CPU_ONEDNN
    ways_out = "or set spec.verification.backend to auto or cpu (oneDNN int8 on the CPU)"
    if acc.cuda is None:
        raise BadInput(NO_GPU, f"spec.verification.backend is {requested} but this image's Paddle is a CPU build "
                               f"(no CUDA): run the GPU job image, {ways_out}")
    if not gpu:
        raise BadInput(NO_GPU, f"spec.verification.backend is {requested} but no GPU is visible to the job (Paddle "
                               f"CUDA {acc.cuda} sees 0 devices): request spec.resources.gpu on a node with one, {ways_out}")
    if not acc.tensorrt:
        raise BadInput(NO_TENSORRT, f"spec.verification.backend is {requested} but this image's Paddle cannot load "
                                    f"TensorRT, its only GPU path with int8 kernels ({acc.tensorrt_error}): run an "
                                    f"image with TensorRT 8, {ways_out}")
    return GPU_TENSORRT


def pick_backend(requested: str) -> str:
    return CPU_ONEDNN if requested == "cpu" else choose_backend(requested, accelerator())


def configure(config: Any, backend: str, precision: Precision, batch_size: int, shapes: dict[str, list[int]],
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
            config.enable_mkldnn_int8(set(ONEDNN_INT8_OPS))
            if not config.mkldnn_int8_enabled():
                raise RuntimeError("oneDNN int8 could not be enabled; refusing to time int8 without int8 kernels")
        return
    mode = {"fp32": PrecisionType.Float32, "fp16": PrecisionType.Half, "int8": PrecisionType.Int8}[precision]
    config.enable_use_gpu(256, 0)
    # use_calib_mode=False: an int8 candidate carries its scales in its quantize ops (TensorRT's own
    # calibration would replace them); fp32 and fp16 need none.
    config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=batch_size, min_subgraph_size=3,
                                  precision_mode=mode, use_static=False, use_calib_mode=False)
    config.set_trt_dynamic_shape_info({n: [1, *s] for n, s in shapes.items()}, {n: [batch_size, *s] for n, s in shapes.items()},
                                      {n: [batch_size, *s] for n, s in shapes.items()})
    if not config.tensorrt_engine_enabled() or config.tensorrt_precision_mode() != mode:
        raise RuntimeError(f"TensorRT {precision} could not be enabled; refusing to time it without TensorRT")


def predictor(model_dir: str, backend: str, precision: Precision, batch_size: int, shapes: dict[str, list[int]]):
    from paddle.inference import Config, create_predictor

    config = Config(os.path.join(model_dir, MODEL_FILE), os.path.join(model_dir, PARAMS_FILE))
    configure(config, backend, precision, batch_size, shapes, cpu_threads())
    return create_predictor(config)


Outputs = dict[str, np.ndarray]       # a model's outputs for one batch, by name, in the model's order
Infer = Callable[[dict[str, np.ndarray]], Outputs]


def runner(pred) -> Infer:
    """A Paddle Inference predictor as a function: {input name: batch} -> {output name: array}."""
    inputs = {n: pred.get_input_handle(n) for n in pred.get_input_names()}
    outputs = {n: pred.get_output_handle(n) for n in pred.get_output_names()}

    def infer(feeds: dict[str, np.ndarray]) -> Outputs:
        for name, handle in inputs.items():
            x = np.ascontiguousarray(feeds[name])
            handle.reshape(list(x.shape))
            handle.copy_from_cpu(x)
        pred.run()
        return {n: h.copy_to_cpu() for n, h in outputs.items()}
    return infer


def open_model(model_dir: str, backend: str, precision: Precision, batch_size: int, shapes: dict[str, list[int]]) -> Infer:
    """The model in model_dir on `backend` at `precision`, as an `Infer`."""
    return runner(predictor(model_dir, backend, precision, batch_size, shapes))


def run_batches(infer: Infer, tensors: data.TensorFile, batch_size: int
                ) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray, Outputs]]:
    """The one inference loop: `infer` over `tensors` in batches of `batch_size`, yielding (batch
    index, inputs, labels, outputs) and counting each batch for the progress line (counted only
    while the stage's plan is in batches)."""
    for index, (x, y) in enumerate(tensors.batches(batch_size)):
        outs = infer(x)
        progress.advance("batches")
        yield index, x, y, outs


class OutputStore:
    """One model's outputs on the evaluation set, batch by batch on disk (the reference the int8
    models are compared with; disk keeps memory flat for large outputs)."""

    def __init__(self, directory: str):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.batches = 0

    def _path(self, index: int) -> str:
        return os.path.join(self.dir, f"batch-{index:06d}.npz")

    def put(self, index: int, outputs: Outputs) -> None:
        if index == 0:
            with open(os.path.join(self.dir, "names.json"), "w") as fh:
                json.dump(list(outputs), fh)
        np.savez(self._path(index), *outputs.values())
        self.batches = max(self.batches, index + 1)

    def joined(self) -> Outputs:
        """Every output over all batches, joined along the first axis (what a custom metric gets)."""
        with open(os.path.join(self.dir, "names.json")) as fh:
            names = json.load(fh)
        batches = [self.get(i) for i in range(self.batches)]
        return {n: np.concatenate([b[k] for b in batches]) if batches[0][k].ndim else batches[0][k]
                for k, n in enumerate(names)}

    def get(self, index: int) -> list[np.ndarray]:
        with np.load(self._path(index), allow_pickle=False) as z:
            return [z[f"arr_{k}"] for k in range(len(z.files))]


@dataclass
class _OutputStats:
    name: str
    cosines: float = 0.0
    rows: int = 0
    signal: float = 0.0
    noise: float = 0.0
    max_error: float = 0.0
    reason: str | None = None


class FidelityMeter:
    """Compares a model's outputs with the reference's, batch by batch, output by output (by
    position: ONNX may rename them). Per output: the mean over samples of the cosine similarity of
    the flattened sample (rows are samples where the output's first dimension is the batch, else
    the whole batch is one row), SQNR over all elements, and the max abs error. An output whose
    shapes differ in any batch is not comparable; int8 NaN/Inf count as cosine 0."""

    def __init__(self, names: list[str]):
        self.stats = [_OutputStats(n) for n in names]

    def add(self, ref: list[np.ndarray], got: list[np.ndarray], batch: int) -> None:
        if len(ref) != len(got):
            for st in self.stats:
                st.reason = st.reason or f"the model has {len(got)} outputs, fp32 {len(ref)}"
            return
        for st, r, g in zip(self.stats, ref, got):
            if st.reason is not None:
                continue
            if r.shape != g.shape:
                st.reason = (f"shape differs from fp32's in a batch ({list(g.shape)} vs {list(r.shape)}): a variable-"
                             "length output such as NMS boxes cannot be matched element for element")
                continue
            r64 = r.astype(np.float64)
            if not np.isfinite(r64).all():
                st.reason = "fp32's output holds NaN or Inf"
                continue
            g64 = g.astype(np.float64)
            bad = ~np.isfinite(g64)
            g64[bad] = 0.0
            per = batch if r64.ndim and r64.shape[0] == batch else 1
            rr, gg = r64.reshape(per, -1), g64.reshape(per, -1)
            nr, ng = np.linalg.norm(rr, axis=1), np.linalg.norm(gg, axis=1)
            both_zero = (nr == 0) & (ng == 0)
            cos = np.where(both_zero, 1.0, (rr * gg).sum(1) / np.maximum(nr * ng, 1e-300))
            cos[bad.reshape(per, -1).any(axis=1)] = 0.0
            st.cosines += float(np.clip(cos, -1.0, 1.0).sum())
            st.rows += per
            st.signal += float((rr ** 2).sum())
            st.noise += float(((rr - gg) ** 2).sum())
            if rr.size:
                st.max_error = max(st.max_error, float(np.abs(rr - gg).max()))

    def result(self) -> Fidelity:
        rows = []
        for st in self.stats:
            if st.reason is not None or not st.rows:
                rows.append(OutputFidelity(name=st.name, comparable=False, reason=st.reason or "no samples"))
                continue
            sqnr = round(10.0 * float(np.log10(st.signal / st.noise)), 4) if st.noise > 0 and st.signal > 0 else None
            rows.append(OutputFidelity(name=st.name, comparable=True, cosine=round(st.cosines / st.rows, 6), sqnr_db=sqnr,
                                       max_abs_error=round(st.max_error, 6)))
        ok = [o for o in rows if o.comparable]
        sqnrs = [o.sqnr_db for o in ok if o.sqnr_db is not None]
        return Fidelity(cosine=min(o.cosine for o in ok) if ok else None, sqnr_db=min(sqnrs) if sqnrs else None,
                        max_abs_error=max(o.max_abs_error for o in ok) if ok else None, per_output=rows)


def reference_fidelity(names: list[str]) -> Fidelity:
    """fp32 against itself: every output identical."""
    return Fidelity(cosine=1.0, max_abs_error=0.0,
                    per_output=[OutputFidelity(name=n, comparable=True, cosine=1.0, max_abs_error=0.0) for n in names])


@dataclass(frozen=True)
class Scores:
    """One model's answers on the evaluation set; top1/top5/correct are None where its labels were
    not read (metric agreement or fidelity) or the model is no classifier, agreement None where no
    reference was given, fidelity None where no reference outputs were."""
    top1: float | None
    top5: float | None
    correct: int | None
    predictions: np.ndarray     # the top-1 class of every sample, in order (empty: not a classifier)
    batch: dict[str, np.ndarray]  # a full batch of batch_size samples per input, for timing
    agreement: float | None = None
    fidelity: Fidelity | None = None


def agreement(predictions: np.ndarray, reference: np.ndarray) -> float:
    """The fraction of samples whose top-1 class equals the reference model's."""
    if predictions.shape != reference.shape or not len(reference):
        raise ValueError(f"cannot compare {predictions.shape[0]} predictions with {reference.shape[0]} reference ones")
    return round(float((predictions == reference).mean()), 6)


def score(infer: Infer, evalset: data.TensorFile, batch_size: int, reference: np.ndarray | None = None, *,
          classify: bool = True, record: OutputStore | None = None, against: OutputStore | None = None) -> Scores:
    """Run `infer` ({input: batch} -> {output: array}) over the evaluation set. With `classify`
    (the first output is [N, classes] scores): top-1/top-5 (if labelled), the predictions and their
    agreement with `reference` (another model's predictions). `record`: keep the outputs (the fp32
    reference); `against`: compare them with a recorded reference (fidelity). The same for every
    runtime, so Paddle's and onnxruntime's numbers compare."""
    top1 = top5 = 0
    first: dict[str, np.ndarray] | None = None
    preds: list[np.ndarray] = []
    meter: FidelityMeter | None = None
    names: list[str] = []
    for index, x, y, outs in run_batches(infer, evalset, batch_size):
        if first is None:    # a full batch for timing
            first = {k: np.resize(v, (batch_size, *v.shape[1:])).astype(v.dtype) for k, v in x.items()}
        names = names or list(outs)
        if record is not None:
            record.put(index, outs)
        if against is not None:
            meter = meter or FidelityMeter(names)
            meter.add(against.get(index), list(outs.values()), len(y))
        if not classify:
            continue
        logits = next(iter(outs.values()))
        if logits.ndim != 2 or logits.shape[0] != len(y):
            # Not one row of scores per sample (a detector's NMS boxes): nothing to classify, and the
            # rows of earlier batches that happened to match were boxes too.
            classify, preds, top1, top5 = False, [], 0, 0
            continue
        k = min(5, logits.shape[1])
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        preds.append(np.argmax(logits, axis=1))
        top1 += int((preds[-1] == y).sum())
        top5 += int((top == y[:, None]).any(axis=1).sum())
    n = evalset.n
    assert first is not None
    fidelity = meter.result() if meter is not None else reference_fidelity(names) if record is not None else None
    predictions = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    agreed = agreement(predictions, reference) if reference is not None and classify else None
    if not evalset.labelled or not classify:
        return Scores(top1=None, top5=None, correct=None, predictions=predictions, batch=first, agreement=agreed,
                      fidelity=fidelity)
    return Scores(top1=round(top1 / n, 6), top5=round(top5 / n, 6), correct=top1, predictions=predictions,
                  batch=first, agreement=agreed, fidelity=fidelity)


def measure(model_dir: str, backend: str, int8: bool, evalset: data.TensorFile, batch_size: int, *,
            fp16: bool = False, reference: Measurement | None = None, classify: bool = True,
            outputs: OutputStore | None = None, keep: OutputStore | None = None) -> Measurement:
    """Score and time one model; `fp16` builds the (fp32) model as a TensorRT fp16 engine.
    `reference`: the fp32 measurement its agreement is taken against, `outputs` fp32's recorded
    outputs its fidelity is; without a reference the model is the reference itself (agreement 1.0,
    its outputs recorded into `outputs`). `keep`: also record this model's outputs there (for a
    custom metric). `classify`: the first output is [N, classes] scores."""
    infer = open_model(model_dir, backend, "int8" if int8 else "fp16" if fp16 else "fp32", batch_size, evalset.shapes)
    s = score(infer, evalset, batch_size, np.asarray(reference.predictions) if reference is not None else None,
              classify=classify, record=outputs if reference is None else keep,
              against=outputs if reference is not None else None)
    lat = latencies(lambda: infer(s.batch))
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in (MODEL_FILE, PARAMS_FILE))
    p50 = float(np.percentile(lat, 50))
    classified = classify and len(s.predictions) == evalset.n
    return Measurement(top1=s.top1 if classified else None, top5=s.top5 if classified else None,
                       agreement=(s.agreement if reference is not None else 1.0) if classified else None,
                       latency_ms=round(p50, 4),
                       latency_p95_ms=round(float(np.percentile(lat, 95)), 4),
                       throughput=round(batch_size / (p50 / 1000.0), 2), size_bytes=size, correct=s.correct,
                       predictions=s.predictions.tolist(), fidelity=s.fidelity)


def latencies(fn) -> list[float]:
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
