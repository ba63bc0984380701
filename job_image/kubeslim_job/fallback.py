"""Accuracy-aware quantization (spec.quantization.accuracyControl): keep the most sensitive layers
in fp32 until the gate passes or the budget runs out. Runs inside the verify stage, which has the
fp32 model, the calibration samples and the evaluation set in the work dir.

1. Rank. Each quantizable layer (a conv/matmul with a weight; named by its weight, the name
   quant_post_static's skip_tensor_list takes) is quantized *alone*, everything else fp32, and run
   on the real int8 backend over the first rankingSamples evaluation samples. Its sensitivity is
   the share of samples whose top-1 class then differs from fp32's (no labels needed), ties broken
   by 1 - the mean cosine similarity of the logits; with metric fidelity (any model, not only
   classifiers) by 1 - the worst output's mean cosine with fp32's. This is the method of PaddleSlim 2.6's
   `paddleslim.quant.analysis.Analysis.metric_error_analyse` (one PTQ per layer, the others
   skipped). Analysis itself is not used: it scores a simulated program in the Paddle executor,
   not the int8 kernels that ship; with onnx_format and an eval function it fails on an undefined
   name (`post_training_quantization.save_quantized_model`), and `get_target_quant_model` reads
   an unbound `rank_list` unless the analysis ran before.
2. Fall back. Step k is the plain candidate with the k most sensitive layers back in fp32
   (derive_step: no new calibration), verified on the whole evaluation set like any candidate; a
   row per step goes into the candidates table. With onGateFailure the k tried are 1, 2, 4, ...
   up to maxFp32Layers, then a bisection between the largest k that failed and the smallest that
   passed (next_fp32_layers): for maxFp32Layers 8 at most 6 steps, 4 when none passes, where one
   by one cost 8 (resnet50: 8 steps, each a calibration and a verification, made most of the
   measured fallback's 951 s). It assumes a model that passes with k layers in fp32 also passes
   with more, which holds only roughly (resnet50's seeded stand-in: agreement 0.56, 0.59, 0.59,
   0.56 at k = 1..4): the k chosen is the smallest that passed of those tried, never an untried
   one. With always every k is measured (the whole curve).

Why skipping is not enough on oneDNN: with onnx_format quant_post_static also writes a
quantize/dequantize pair on the *output* of every op (pool, relu, elementwise_add, ...), and
Paddle Inference's oneDNN int8 passes quantize any op whose input and output scales are known.
A layer left out by skip_tensor_list still ran int8 (its input tensor had a scale), and so did the
ops feeding it: on the outlier model of the tests, skipping the sensitive conv recovered nothing
(top-1 0.58 against fp32 0.97). `keep_fp32` therefore also removes the pairs on every tensor from
the skipped layer's activation input back to the previous quantizable layer, so no int8 backend
has a scale for that region; then the same model measured 0.97.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from kubeslim_api.contract import Fallback, Gate
from kubeslim_api.spec import CLASSIFIER_METRICS, AccuracyControl, QuantizationJobSpec

from . import data, gate, inference, progress, ranking
from .errors import last_line
from .handoff import CalibrationFacts, ExportFacts, MeasuredCandidate, Measurement
from .workdir import MODEL_FILE, PARAMS_FILE, WorkDir

# The weight input of each op type quant_post_static quantizes (paddleslim.quant.analysis's table).
WEIGHT_INPUT = {"conv2d": "Filter", "depthwise_conv2d": "Filter", "conv2d_transpose": "Filter",
                "mul": "Y", "matmul": "Y", "matmul_v2": "Y"}
QDQ_OPS = ("quantize_linear", "dequantize_linear")
DEQUANTIZED = ".quantized.dequantized"
QUANTIZED = ".quantized"


def wanted(ctl: AccuracyControl, gate_passed: bool) -> bool:
    return ctl.mode == "always" or (ctl.mode == "onGateFailure" and not gate_passed)


def quantizable_layers(program, op_types: list[str], skip: list[str]) -> list[str]:
    """Weight names of the layers quant_post_static quantizes, in program order."""
    persistable = {v.name for v in program.list_vars() if v.persistable}
    out: list[str] = []
    for op in program.global_block().ops:
        slot = WEIGHT_INPUT.get(op.type)
        if op.type not in op_types or slot is None:
            continue
        for name in op.input(slot):
            if name in persistable and name not in skip and name not in out:
                out.append(name)
    return out


def _base(name: str) -> str:
    return name[: -len(DEQUANTIZED)] if name.endswith(DEQUANTIZED) else name


def fp32_region(program, layers: list[str], op_types: list[str]) -> set[str]:
    """The activation tensors that must carry no int8 scale for `layers` to run in fp32: each
    layer's activation inputs and, walking back through the ops that produce them (relu, pool,
    elementwise_add, reshape...), every tensor up to and including the output of the previous
    quantizable layer."""
    block = program.global_block()
    persistable = {v.name for v in program.list_vars() if v.persistable}
    producer = {}
    for op in block.ops:
        if op.type not in QDQ_OPS:
            for name in op.output_arg_names:
                producer[name] = op
    wanted_layers = set(layers)
    stack: list[str] = []
    for op in block.ops:
        slot = WEIGHT_INPUT.get(op.type)
        if op.type in op_types and slot is not None and wanted_layers & {_base(n) for n in op.input(slot)}:
            stack += [_base(n) for s in op.input_names if s != slot for n in op.input(s)]
    region: set[str] = set()
    while stack:
        name = stack.pop()
        if name in region or name in persistable:
            continue
        region.add(name)
        op = producer.get(name)
        if op is None or (op.type in op_types and op.type in WEIGHT_INPUT):
            continue            # a feed, or the previous quantizable layer: its output is the region's edge
        stack += [_base(n) for n in op.input_arg_names]
    return region


def strip_scales(program, tensors: set[str]) -> int:
    """Remove the quantize/dequantize pairs on `tensors`, wiring their readers to the fp32 tensor.
    The scale variables stay declared, so the params file still matches. Returns pairs removed."""
    block = program.global_block()
    doomed = {t + QUANTIZED for t in tensors} | {t + DEQUANTIZED for t in tensors}
    removed = 0
    for i in range(len(block.ops) - 1, -1, -1):
        op = block.ops[i]
        if op.type in QDQ_OPS and set(op.output_arg_names) & doomed:
            removed += op.type == "quantize_linear"     # before the removal frees the op's desc
            block._remove_op(i)
    for op in block.ops:
        for t in tensors:
            if t + DEQUANTIZED in op.input_arg_names:
                op._rename_input(t + DEQUANTIZED, t)
    return removed


@contextmanager
def _program(path: str, write: bool = False):
    """The static Program in `path` (Paddle builds its op wrappers only in static mode); with
    `write`, saved back on exit."""
    import paddle

    paddle.enable_static()
    try:
        with open(path, "rb") as fh:
            program = paddle.static.Program.parse_from_string(fh.read())
        yield program
        if write:
            with open(path + ".tmp", "wb") as fh:
                fh.write(program.desc.serialize_to_string())
            os.replace(path + ".tmp", path)
    finally:
        paddle.disable_static()


def keep_fp32(model_dir: str, layers: list[str], op_types: list[str]) -> int:
    """Rewrite model_dir/model.pdmodel so that `layers` (skipped by quant_post_static) and the
    tensors feeding them carry no int8 scale; returns the quantize/dequantize pairs removed."""
    with _program(os.path.join(model_dir, MODEL_FILE), write=True) as program:
        return strip_scales(program, fp32_region(program, layers, op_types))


def derive_step(plain_dir: str, fp32_dir: str, out: str, layers: list[str], op_types: list[str]) -> None:
    """Write to `out` the plain candidate of plain_dir with `layers` (weight names) in fp32: each
    weight back to its value in fp32_dir, read without its dequantize op, and keep_fp32's scales
    stripped. Every other threshold stays the plain candidate's, as a calibration with the layers
    skipped would compute it: PaddleSlim samples the fp32 model's activations whatever
    skip_tensor_list says (tests/job/test_ranking.py: the same outputs as the re-calibrated model;
    resnet50: 0.6-2.6 s against a calibration's 8-110 s). Written as keep_fp32 writes a model, not by
    save_inference_model, which appends a scale op to every output and renames them."""
    import paddle
    from paddle.static.io import _serialize_persistables

    paddle.enable_static()
    try:
        exe = paddle.static.Executor(paddle.CPUPlace())
        fp32_scope, scope = paddle.static.Scope(), paddle.static.Scope()
        with paddle.static.scope_guard(fp32_scope):
            paddle.static.load_inference_model(fp32_dir, exe, model_filename=MODEL_FILE, params_filename=PARAMS_FILE)
        with paddle.static.scope_guard(scope):
            program, _, _ = paddle.static.load_inference_model(plain_dir, exe, model_filename=MODEL_FILE,
                                                               params_filename=PARAMS_FILE)
            block = program.global_block()
            wanted_layers = set(layers)
            for i in range(len(block.ops) - 1, -1, -1):
                op = block.ops[i]
                if op.type != "dequantize_linear" or op.input("X")[0] not in wanted_layers:
                    continue
                weight, dequantized = op.input("X")[0], op.output("Y")[0]
                block._remove_op(i)
                for reader in block.ops:
                    if dequantized in reader.input_arg_names:
                        reader._rename_input(dequantized, weight)
                scope.find_var(weight).get_tensor().set(np.asarray(fp32_scope.find_var(weight).get_tensor()),
                                                        paddle.CPUPlace())
            strip_scales(program, fp32_region(program, layers, op_types))
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, MODEL_FILE), "wb") as fh:
                fh.write(program.desc.serialize_to_string())
            with open(os.path.join(out, PARAMS_FILE), "wb") as fh:     # every persistable, by name, as Paddle loads them
                fh.write(_serialize_persistables(program, exe))
    finally:
        paddle.disable_static()


@dataclass
class Sensitivity:
    layer: str
    flip_rate: float | None          # share of ranking samples whose top-1 differs from fp32's
    logit_distance: float | None     # 1 - mean cosine similarity of the logits with fp32's
    seconds: float
    error: str | None = None
    layer_error: float | None = None  # ranking.py's relative error of the layer's own output, when it ranked

    def key(self) -> tuple[float, float]:
        distance = self.logit_distance if self.logit_distance is not None else self.layer_error
        return (-(self.flip_rate if self.flip_rate is not None else -1.0), -(distance or 0.0))

    def dump(self) -> dict:
        return {"layer": self.layer, "flipRate": self.flip_rate, "logitDistance": self.logit_distance,
                "seconds": self.seconds, **({"error": self.error} if self.error else {}),
                **({"layerError": self.layer_error} if self.layer_error is not None else {})}


def rank(sens: list[Sensitivity]) -> list[str]:
    """Most sensitive first; a layer that could not be measured goes last."""
    ok = sorted((s for s in sens if s.error is None), key=Sensitivity.key)
    return [s.layer for s in ok] + [s.layer for s in sens if s.error is not None]


def next_fp32_layers(verdicts: dict[int, bool], most: int) -> int | None:
    """The next number of fp32 layers to try (onGateFailure), given the gate's verdict on each
    number tried so far (the plain model, 0, failed): 1, 2, 4, ... up to `most`, then the
    midpoint between the largest that failed and the smallest that passed; None when they are
    adjacent or `most` failed too."""
    failed = max([0, *(k for k, ok in verdicts.items() if not ok)])
    passed = min([k for k, ok in verdicts.items() if ok], default=None)
    if passed is None:
        return None if failed >= most else min(2 * failed or 1, most)
    return None if passed - failed <= 1 else (failed + passed) // 2


def planned_steps(most: int, mode: str) -> int:
    """The most steps the fallback can take up to `most` fp32 layers (the progress plan): every k
    with always, else the worst case of next_fp32_layers over where the gate starts passing."""
    if mode != "onGateFailure":
        return max(0, most)

    def tried(first_passing: int) -> int:
        verdicts: dict[int, bool] = {}
        while (k := next_fp32_layers(verdicts, most)) is not None:
            verdicts[k] = k >= first_passing
        return len(verdicts)
    return max((tried(t) for t in range(1, most + 2)), default=0)


def choose_step(plain: MeasuredCandidate, steps: list[MeasuredCandidate], passes) -> MeasuredCandidate | None:
    """The model with the fewest fp32 layers that passes the gate (the plain one counts as zero)."""
    for c in [plain, *sorted(steps, key=lambda s: s.fp32_layers or 0)]:
        if c.error is None and passes(c):
            return c
    return None


@dataclass
class Outcome:
    rows: list[MeasuredCandidate]           # the fallback steps, in order
    best: MeasuredCandidate | None          # the chosen step; None: no step passed the gate
    summary: Fallback
    sensitivity: list[Sensitivity] = field(default_factory=list)


def _outputs(model_dir: str, backend: str, precision: inference.Precision, subset: data.TensorFile,
             batch_size: int) -> list[list[np.ndarray]]:
    """Every output of the model on each batch of the ranking subset (a few hundred samples)."""
    infer = inference.open_model(model_dir, backend, precision, batch_size, subset.shapes)
    return [list(outs.values()) for _, _, _, outs in inference.run_batches(infer, subset, batch_size)]


def sensitivity(ref: list[list[np.ndarray]], got: list[list[np.ndarray]], metric: str) -> tuple[float | None, float]:
    """(flip rate, distance) of a model's outputs from fp32's on the ranking subset. Classifier
    metrics: the share of samples whose top-1 class changes, and 1 - the mean cosine of the logits
    (the first output). fidelity and custom: no flip rate; 1 - the worst output's mean cosine."""
    if metric in CLASSIFIER_METRICS:
        first = [np.concatenate([b[0].reshape(len(b[0]), -1) for b in bs]).astype(np.float64) for bs in (ref, got)]
        return compare(*first)
    meter = inference.FidelityMeter([str(k) for k in range(len(ref[0]))])
    for r, g in zip(ref, got):
        meter.add(r, g, len(r[0]) if r[0].ndim else 1)
    cosine = meter.result().cosine
    if cosine is None:
        raise ValueError("no output of this model can be compared with fp32's")
    return None, round(1.0 - cosine, 6)


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(share of rows whose argmax differs, 1 - mean cosine similarity of the rows)."""
    flips = float((ref.argmax(1) != got.argmax(1)).mean())
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    return round(flips, 6), round(float(1.0 - cos.mean()), 6)


def run(spec: QuantizationJobSpec, work: WorkDir, facts: ExportFacts, calib_facts: CalibrationFacts,
        evalset: data.TensorFile, backend: str, fp32: Measurement, plain: MeasuredCandidate, plain_gate: Gate,
        measure_step: Callable[[MeasuredCandidate, str], MeasuredCandidate]) -> Outcome:
    """Rank and fall back from the best plain candidate `plain`. `measure_step(row, dir)` is `row`
    with the model in dir measured on the whole evaluation set as verify measures candidates (or
    with the error that stopped it)."""
    from . import calibrate     # imports paddle and paddleslim: only when the fallback runs

    t0 = time.perf_counter()
    q, ctl, v = spec.quantization, spec.quantization.accuracy_control, spec.verification
    deadline = t0 + ctl.max_seconds
    metric = plain_gate.metric
    calib = data.TensorFile(work.calib)
    with _program(os.path.join(work.fp32, MODEL_FILE)) as program:
        layers = quantizable_layers(program, list(q.quantizable_op_types), list(q.skip_tensors))
    subset = evalset.head(ctl.ranking_samples)
    # every layer in fp32 would be the fp32 model itself: at most all but one
    most = min(ctl.max_fp32_layers, len(layers) - 1)
    progress.plan(len(layers) + planned_steps(most, ctl.mode), "steps", step="fallback")
    batch = min(v.batch_size, subset.n)

    def passes(c: MeasuredCandidate) -> bool:
        return gate.passes(fp32, c, v)

    def quantize(name: str, fp32_layers: list[str]):
        out = work.path("fallback", name)
        cand = calibrate.quantize(plain.algo, q, calib, facts, work, calib_facts.batch_nums, out=out,
                                  fp32_layers=tuple(fp32_layers))
        if cand.error is None:
            keep_fp32(out, fp32_layers, list(q.quantizable_op_types))
        return cand, out

    # 1. rank: each layer quantized alone where that fits a quarter of the budget; else each layer's own
    # int8 error from one recorded pass (ranking.py: about a calibration's time, whatever the layer count)
    per_layer = ranking.per_layer_ranking_fits(len(layers), plain.calibration_seconds, ctl.max_seconds)
    sens: list[Sensitivity] = []
    if not per_layer:
        try:
            sens = [Sensitivity(e.layer, None, None, e.seconds, layer_error=e.relative_error) for e in ranking.rank_layers(
                work.fp32, os.path.join(work.root, plain.dir), layers, list(q.quantizable_op_types), subset, batch,
                q.weight_bits, q.activation_bits, q.weight_quantize_type)]
        except Exception as exc:     # a model ranking.py cannot read: the per-layer ranking still can
            print(f"ranking from recorded activations failed ({last_line(exc)}); ranking layer by layer", flush=True)
            per_layer = True
    progress.advance("steps", len(sens))
    ref = _outputs(work.fp32, backend, "fp32", subset, batch) if per_layer else []
    stop = None
    for i, layer in enumerate(layers if per_layer else []):
        if time.perf_counter() > deadline:
            stop = "MaxSeconds"
            break
        t = time.perf_counter()
        cand, out = quantize(f"rank-{i}", [x for x in layers if x != layer])
        try:
            if cand.error is not None:
                raise RuntimeError(cand.error)
            flips, dist = sensitivity(ref, _outputs(out, backend, "int8", subset, batch), metric)
            sens.append(Sensitivity(layer, flips, dist, round(time.perf_counter() - t, 3)))
        except Exception as exc:     # a layer that cannot run alone is ranked last, not fatal
            sens.append(Sensitivity(layer, None, None, round(time.perf_counter() - t, 3), last_line(exc)))
        progress.advance("steps")
    ranked = rank(sens) if stop is None else []

    # 2. fall back: the k most sensitive layers in fp32 (k as next_fp32_layers picks, or every k)
    steps: list[MeasuredCandidate] = []
    verdicts: dict[int, bool] = {}
    most = min(most, len(ranked) - 1)
    while True:
        k = (next_fp32_layers(verdicts, most) if ctl.mode == "onGateFailure"
             else len(steps) + 1 if len(steps) < most else None)
        if k is None:
            break
        if time.perf_counter() > deadline:
            stop = "MaxSeconds"
            break
        out, t, error = work.path("fallback", f"fp32-{k}"), time.perf_counter(), None
        try:
            derive_step(os.path.join(work.root, plain.dir), work.fp32, out, ranked[:k], list(q.quantizable_op_types))
        except Exception as exc:     # a step that cannot be made is a row with its error, not the end
            error = last_line(exc)
        # calibrationSeconds: what making the step's model took (no calibration runs for it)
        row = MeasuredCandidate(algo=plain.algo, fp32_layers=k, calibration_seconds=round(time.perf_counter() - t, 3),
                                dir=os.path.relpath(out, work.root), error=error)
        if error is None:
            row = measure_step(row, out)
        steps.append(row)
        verdicts[k] = row.error is None and passes(row)
        progress.advance("steps")
    best = choose_step(plain, steps, passes)
    if stop is None:
        stop = ("GatePassed" if best is not None and ctl.mode == "onGateFailure" else
                "MaxFp32Layers" if most == ctl.max_fp32_layers else "NoMoreLayers")
    chosen = best or plain
    kept = ranked[:chosen.fp32_layers or 0]
    summary = Fallback(
        mode=ctl.mode, algo=plain.algo, plain_accuracy_drop=gate.drop_of(fp32, plain, metric),
        ranked_layers=len([s for s in sens if s.error is None]), steps=len(steps), passed=best is not None,
        stop_reason=stop, fp32_layers=kept,
        latency_cost=round(chosen.latency_ms / plain.latency_ms, 3) if chosen.latency_ms and plain.latency_ms else None,
        seconds=round(time.perf_counter() - t0, 3))
    return Outcome(rows=steps, best=best, summary=summary, sensitivity=sens)
