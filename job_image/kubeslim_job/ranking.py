"""The fallback's layer ranking from one pass of recorded activations, whatever the layer count.

fallback.py's first ranking quantized each layer alone (one quant_post_static per layer: on
resnet50's 54 layers, 54 calibrations, past any maxSeconds). This one uses the calibration that
already ran: the plain int8 candidate holds every activation's threshold (the Scale of its
quantize_linear op, the clipping threshold itself). The fp32 program runs once over the ranking
samples with every quantizable layer's activation input and output fetched; then each layer alone
(the one op, pruned out of the program) runs on its recorded input fake-quantized with that
threshold, with its weight fake-quantized as quant_post_static quantizes it (per output channel,
or per tensor), and its error is the energy of the difference from its recorded fp32 output,
relative to that output's energy. Cost: one fp32 forward pass plus each layer's own op once: less
than one calibration, which also runs the network over its samples (twice for hist and KL).

What it ranks is each layer's own int8 error, not the end-to-end effect on the answers the
per-layer quantization measured; the fallback's steps still verify every choice on the real int8
backend over the whole evaluation set. On the outlier digits CNN (tests/job/test_fallback.py)
the layer whose input carries the massive channel loses every other channel to rounding: its
relative error is orders of magnitude above the others'.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import data
from .workdir import MODEL_FILE, PARAMS_FILE

# Each quantizable op type's (weight input, output) slots and the axis of its weight's output
# channels (paddle.static.quantization.utils._channelwise_quant_axis1_ops are the axis-1 ones).
LAYER_SLOTS = {"conv2d": ("Filter", "Output", 0), "depthwise_conv2d": ("Filter", "Output", 0),
               "conv2d_transpose": ("Filter", "Output", 1), "mul": ("Y", "Out", 1), "matmul": ("Y", "Out", 1),
               "matmul_v2": ("Y", "Out", 1)}


# The per-layer ranking (one calibration per layer) is kept where it costs at most this share of
# accuracyControl.maxSeconds: it measures each layer on the real int8 backend, which is better
# when affordable; the rest of the budget goes to the fallback's steps.
PER_LAYER_BUDGET_SHARE = 0.25


def per_layer_ranking_fits(layers: int, calibration_seconds: float | None, max_seconds: float) -> bool:
    """Whether quantizing each of `layers` alone (about one calibration of `calibration_seconds`
    each) fits PER_LAYER_BUDGET_SHARE of the budget; unknown calibration time: it does not."""
    return calibration_seconds is not None and layers * calibration_seconds <= PER_LAYER_BUDGET_SHARE * max_seconds


@dataclass
class LayerError:
    layer: str                 # the weight's name, as skip_tensor_list takes it
    relative_error: float      # sum (int8 - fp32)^2 / sum fp32^2 of the layer's own output
    seconds: float


def fake_quant(x: np.ndarray, threshold: np.ndarray | float, bits: int) -> np.ndarray:
    """x rounded to the int grid of `bits` over [-threshold, threshold] and back (a threshold of 0
    leaves zeros: the tensor was all zeros in calibration)."""
    levels = 2 ** (bits - 1) - 1
    t = np.asarray(threshold, np.float64)
    scale = np.where(t > 0, t / levels, 1.0)
    return (np.clip(np.round(x / scale), -levels, levels) * scale).astype(x.dtype)


def quantized_weight(w: np.ndarray, axis: int, per_channel: bool, bits: int) -> np.ndarray:
    if not per_channel:
        return fake_quant(w, np.abs(w).max(), bits)
    other = tuple(a for a in range(w.ndim) if a != axis)
    return fake_quant(w, np.abs(w).max(axis=other, keepdims=True), bits)


@contextmanager
def _static_mode():
    """Paddle's static mode for the block (load_inference_model needs it), as it was after."""
    import paddle

    was_dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        yield
    finally:
        if was_dynamic:
            paddle.disable_static()


def activation_thresholds(int8_dir: str) -> dict[str, float]:
    """{activation tensor: clipping threshold} from the quantize_linear ops of a calibrated model."""
    import paddle

    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with _static_mode(), paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(int8_dir, exe,
                                                           model_filename=MODEL_FILE, params_filename=PARAMS_FILE)
    out = {}
    for op in program.global_block().ops:
        if op.type == "quantize_linear" and op.attr("quant_axis") in (-1, None):
            value = np.asarray(scope.find_var(op.input("Scale")[0]).get_tensor())
            out[op.input("X")[0]] = float(value.reshape(-1)[0])
    return out


def rank_layers(fp32_dir: str, int8_dir: str, layers: list[str], op_types: list[str], samples: data.TensorFile,
                batch_size: int, weight_bits: int = 8, activation_bits: int = 8,
                weight_quantize_type: str = "channel_wise_abs_max") -> list[LayerError]:
    """Each of `layers` (weight names) with its int8 error, most sensitive first. int8_dir: the
    plain candidate calibrated with every layer quantized (its thresholds are the ones used)."""
    import paddle

    with _static_mode():
        thresholds = activation_thresholds(int8_dir)
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            program, feeds, _ = paddle.static.load_inference_model(fp32_dir, exe,
                                                                   model_filename=MODEL_FILE, params_filename=PARAMS_FILE)
        block = program.global_block()
        wanted = set(layers)
        found: dict[str, tuple] = {}     # weight -> (activation input, output, one-op program)
        for op in block.ops:
            slots = LAYER_SLOTS.get(op.type)
            if op.type not in op_types or slots is None:
                continue
            weight_slot, out_slot, axis = slots
            for weight in op.input(weight_slot):
                if weight in wanted and weight not in found:
                    act = next(n for s in op.input_names if s != weight_slot for n in op.input(s))
                    out = op.output(out_slot)[0]
                    one_op = program._prune_with_input([act], [block.var(out)])
                    found[weight] = (act, out, one_op, axis)
                    # the layer runs with its int8 weight from here on (this scope is ours alone)
                    tensor = scope.find_var(weight).get_tensor()
                    tensor.set(quantized_weight(np.asarray(tensor), axis, weight_quantize_type == "channel_wise_abs_max",
                                                weight_bits), paddle.CPUPlace())
        missing = [w for w in layers if w not in found]
        if missing:
            raise ValueError(f"no {'/'.join(op_types)} op reads the weights {missing}")
        # the recording pass needs fp32 weights: a second scope holds them
        rec_scope = paddle.static.Scope()
        with paddle.static.scope_guard(rec_scope):
            program, feeds, _ = paddle.static.load_inference_model(fp32_dir, exe,
                                                                   model_filename=MODEL_FILE, params_filename=PARAMS_FILE)
        names = [n for w in layers for n in found[w][:2]]
        err = dict.fromkeys(layers, 0.0)
        energy = dict.fromkeys(layers, 0.0)
        seconds = dict.fromkeys(layers, 0.0)
        for batch, _ in samples.batches(batch_size):
            feed = {n: np.ascontiguousarray(batch[n]) for n in feeds}
            with paddle.static.scope_guard(rec_scope):
                recorded = dict(zip(names, exe.run(program, feed=feed, fetch_list=names, return_numpy=True)))
            for w in layers:
                t0 = time.perf_counter()
                act, out, one_op, _ = found[w]
                x = recorded[act]
                q = fake_quant(x, thresholds[act], activation_bits) if act in thresholds else x
                with paddle.static.scope_guard(scope):
                    (y,) = exe.run(one_op, feed={act: q}, fetch_list=[out], return_numpy=True)
                ref = recorded[out].astype(np.float64)
                err[w] += float(((y - ref) ** 2).sum())
                energy[w] += float((ref ** 2).sum())
                seconds[w] += time.perf_counter() - t0
        ranked = [LayerError(w, round(err[w] / energy[w], 9) if energy[w] > 0 else 0.0, round(seconds[w], 3))
                  for w in layers]
        return sorted(ranked, key=lambda e: -e.relative_error)
