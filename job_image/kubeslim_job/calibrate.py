"""Stage 2: one quant_post_static run per requested algo over the same calibration samples.

The calibration samples (the first spec.calibrationSamples of the dataset) are fetched once into
work/data/calibration and fed through the paddle.io.DataLoader form that paddle 2.6.2 requires
(feed_list + return_list=False; a plain generator fails inside quant_post_static). Each candidate lands in
work/int8/<algo>/model.pdmodel|.pdiparams; work/calibration.json (handoff.CalibrationFacts) lists them with their
calibration time and size, or the error that stopped them. `min_max` is refused by the spec
(it inserts no quant ops in paddleslim 2.6.0); any algo whose output has no quantize ops is
reported as a failed candidate for the same reason.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import math
import os
import time
from typing import Callable

import numpy as np
import paddle
from kubeslim_api.spec import QuantizationJobSpec, QuantizationSpec

from . import data, progress
from .inference import CPU_ONEDNN, open_model, visible_gpus
from .errors import BadInput, candidate_errors, last_line
from .handoff import CalibratedCandidate, CalibrationFacts, ExportFacts
from .storage import Storage
from .workdir import MODEL_FILE, PARAMS_FILE, WorkDir

QUANT_OP_TYPES = ("quantize_linear", "fake_quantize_abs_max", "fake_quantize_range_abs_max",
                  "fake_quantize_moving_average_abs_max", "fake_channel_wise_quantize_abs_max",
                  "fake_quantize_dequantize_moving_average_abs_max", "fake_channel_wise_quantize_dequantize_abs_max",
                  "fake_quantize_dequantize_abs_max")


def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> CalibrationFacts:
    return require_candidate(calibrate(spec, storage, work, quantize_each))


# What makes the candidates once the samples are ready: quantize_each here, or a parallel sweep's
# pod roles (sweep.py), from (spec.quantization, the samples, the export, the work dir, batch_nums).
CandidateMaker = Callable[[QuantizationSpec, "data.TensorFile", ExportFacts, WorkDir, int], list[CalibratedCandidate]]


def calibrate(spec: QuantizationJobSpec, storage: Storage, work: WorkDir, make: CandidateMaker) -> CalibrationFacts:
    """The calibration samples fetched and checked against the model, the candidates `make`
    gives, and work/calibration.json written."""
    t0 = time.perf_counter()
    facts = work.load(ExportFacts)
    prep = data.prep_for(spec.data.preprocess, facts.inputs)
    calib, stats = data.load(storage, spec.data.calibration, "spec.data.calibration", spec.calibration_samples, prep,
                             work.calib, facts.num_classes, spec.needs_labels("calibration"), inputs=facts.inputs)
    fetch_s = time.perf_counter() - t0
    check_shapes(work.fp32, calib, "spec.data.calibration")
    q = spec.quantization
    batch_nums = math.ceil(calib.n / q.batch_size)
    candidates = make(q, calib, facts, work, batch_nums)
    doc = CalibrationFacts(samples=calib.n, batch_size=q.batch_size, batch_nums=batch_nums, bytes_read=stats.bytes_read,
                           bytes_used=stats.bytes_used, fetch_seconds=round(fetch_s, 3), candidates=candidates,
                           seconds=round(time.perf_counter() - t0, 3), device=calibration_device())
    work.save(doc)
    return doc


def quantize_each(q: QuantizationSpec, calib: data.TensorFile, facts: ExportFacts, work: WorkDir,
                  batch_nums: int) -> list[CalibratedCandidate]:
    """One quant_post_static run per algo, one after the other."""
    progress.plan(progress.calibration_batches(q.algos, batch_nums), "batches")
    candidates = []
    for algo in q.algos:
        progress.step(algo)
        candidates.append(quantize(algo, q, calib, facts, work, batch_nums))
    return candidates


def require_candidate(doc: CalibrationFacts) -> CalibrationFacts:
    """A sweep goes on while one algo quantized the model; none is bad input."""
    if all(c.error is not None for c in doc.candidates):
        raise BadInput("CalibrationFailed", f"every algo failed to quantize the model: {candidate_errors(doc.candidates)}")
    return doc


def calibration_device() -> str:
    """Where quant_post_static runs its sampling passes: "gpu:0" when this Paddle is built with CUDA
    and sees a GPU (the pod holds its GPU for the whole run, and the seed calibrated on
    paddle.CUDAPlace(0)), else "cpu" (the job-cpu image, or a GPU build on a node without one)."""
    return "gpu:0" if (visible_gpus() or 0) > 0 else "cpu"


def check_shapes(model_dir: str, samples: data.TensorFile, field: str) -> None:
    """Run the fp32 model once on the first sample: a shape the model refuses (a dynamic dimension
    the data fills with a size the network cannot take) is the data's fault, said before any algo
    runs rather than as every candidate failing."""
    feeds, _ = next(samples.batches(1))
    try:
        open_model(model_dir, CPU_ONEDNN, "fp32", 1, samples.shapes)(feeds)
    except Exception as exc:
        shapes = ", ".join(f"{n} {s}" for n, s in samples.shapes.items())
        raise BadInput("ShapeMismatch", f"{field}.uri: the model refuses samples of shape {shapes} ({last_line(exc)}); "
                                        "give data of a shape it takes (spec.model.inputs lists what it declares)") from None


def quantize(algo: str, q: QuantizationSpec, calib: data.TensorFile, facts: ExportFacts, work: WorkDir,
             batch_nums: int, out: str | None = None, fp32_layers: tuple[str, ...] = ()) -> CalibratedCandidate:
    """One quant_post_static run into `out` (default work/int8/<algo>); `fp32_layers`: weight names
    of layers to leave unquantized besides spec.quantization.skipTensors (the fallback's steps)."""
    from paddleslim.quant import quant_post_static

    from . import fast_thresholds
    fast_thresholds.install()   # KL/hist: Paddle's thresholds without its Python loops (see fast_thresholds.py)

    out = out or work.int8(algo)
    for name in (MODEL_FILE, PARAMS_FILE):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    t0 = time.perf_counter()
    paddle.enable_static()
    try:
        # one feed per model input, at the shapes the calibration data has (a dynamic dimension is
        # calibrated at the data's size, never resized to fit); in the feed_list's order: the model's inputs
        loader = calibration_loader(calib.n, lambda i: tuple(calib.sample(i).values()),
                                    [(i.name, list(i.shape), i.dtype) for i in calib.inputs], q.batch_size,
                                    count_progress=True)
        exe = paddle.static.Executor(paddle.CUDAPlace(0) if calibration_device() == "gpu:0" else paddle.CPUPlace())
        scope = paddle.static.Scope()   # a fresh scope per algo: no state leaks between candidates
        with paddle.static.scope_guard(scope):
            quant_post_static(
                executor=exe, model_dir=work.fp32, quantize_model_path=out, data_loader=loader,
                model_filename=MODEL_FILE, params_filename=PARAMS_FILE,
                save_model_filename=MODEL_FILE, save_params_filename=PARAMS_FILE,
                batch_size=q.batch_size, batch_nums=batch_nums, scope=scope, algo=algo,
                round_type=q.round_type, hist_percent=q.hist_percent, bias_correction=q.bias_correction,
                quantizable_op_type=list(q.quantizable_op_types), is_full_quantize=False,
                weight_bits=q.weight_bits, activation_bits=q.activation_bits,
                activation_quantize_type=q.activation_quantize_type, weight_quantize_type=q.weight_quantize_type,
                onnx_format=q.onnx_format, skip_tensor_list=[*q.skip_tensors, *fp32_layers] or None,
            )
        quant_ops = _count_quant_ops(out)
        if quant_ops == 0:
            raise RuntimeError("the output has no quantize ops (nothing was quantized); check quantizableOpTypes")
    except Exception as exc:  # one failed algo does not sink the sweep
        return CalibratedCandidate(algo=algo, error=last_line(exc), calibration_seconds=round(time.perf_counter() - t0, 3))
    finally:
        paddle.disable_static()
    size = sum(os.path.getsize(os.path.join(out, n)) for n in (MODEL_FILE, PARAMS_FILE))
    return CalibratedCandidate(algo=algo, calibration_seconds=round(time.perf_counter() - t0, 3), size_bytes=size,
                               quant_ops=quant_ops, dir=os.path.relpath(out, work.root))


def _count_quant_ops(model_dir: str) -> int:
    path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.exists(path):
        raise RuntimeError(f"quant_post_static wrote no {MODEL_FILE}")
    with open(path, "rb") as fh:
        program = paddle.static.Program.parse_from_string(fh.read())
    return sum(1 for b in program.blocks for op in b.ops if op.type in QUANT_OP_TYPES)


class _CountingLoader(paddle.io.DataLoader):
    """The DataLoader quant_post_static requires (it checks the type), counting for the progress
    line each batch it hands to PaddleSlim's sampling loop. Counted where the loop takes a batch,
    not where the dataset is read: the loader's reader thread runs up to a whole pass ahead."""

    def __iter__(self):
        for batch in super().__iter__():
            progress.advance("batches")
            yield batch


class _Samples(paddle.io.Dataset):
    """A map-style dataset of `n` samples read one by one by `sample(i)` (a few hundred samples)."""

    def __init__(self, n: int, sample: Callable[[int], tuple[np.ndarray, ...]]):
        super().__init__()
        self.n, self.sample = n, sample

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.sample(i)


Feed = tuple[str, list[int], str]      # an input's name, its shape without the batch axis, its dtype


def calibration_loader(n: int, sample: Callable[[int], tuple[np.ndarray, ...]], feeds: list[Feed], batch_size: int,
                       *, count_progress: bool = False) -> paddle.io.DataLoader:
    """The calibration input paddle 2.6.2's quant_post_static and PostTrainingQuantization accept:
    a paddle.io.DataLoader with a feed_list of static variables and return_list=False (a plain
    generator fails inside them). `sample(i)` gives sample i's arrays in `feeds`' order. Call in
    static mode; `count_progress`: each batch taken counts on the stage's progress line."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        feed_list = [paddle.static.data(name, [None, *shape], dtype) for name, shape, dtype in feeds]
        loader = _CountingLoader if count_progress else paddle.io.DataLoader
        return loader(_Samples(n, sample), feed_list=feed_list, places=paddle.CPUPlace(), batch_size=batch_size,
                      shuffle=False, drop_last=False, return_list=False)


def array_loader(x: np.ndarray, feed: str, batch_size: int) -> paddle.io.DataLoader:
    """calibration_loader over the float32 samples of one array (N, ...) fed to the input `feed`
    (the benchmarks' and tests' in-memory calibration sets)."""
    return calibration_loader(len(x), lambda i: (x[i],), [(feed, list(x.shape[1:]), "float32")], batch_size)
