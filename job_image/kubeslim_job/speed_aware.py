"""Speed-aware quantization (spec.quantization.speedAware, default auto): keep in fp32 the kinds of
layers that run slower in int8 than in fp32 on the backend that serves the model.

int8 is not faster everywhere: per layer oneDNN adds quantize/dequantize (reorder) steps whose cost
grows with the activation, while what int8 saves grows with input x output channels, so depthwise
convolutions, the squeeze-excite convolutions on 1x1 maps and thin pointwise convolutions often
run slower quantized, and each reorder between an int8 and an fp32 region costs again. Timing
each layer alone (54 predictors for resnet50) is neither affordable on 2 cores nor faithful (the
cost is in the reorders between neighbours), so:

1. Group the quantized layers by kind and shape (`group_key`): depthwise kxk, 1x1 convolutions on
   1x1 maps (squeeze-excite), pointwise and kxk convolutions by input-channel band, fully connected.
2. Build one variant of the chosen int8 model per group, that group kept in fp32 by the accuracy
   fallback's mechanism (fallback.keep_fp32: the quantize/dequantize pairs on the group's inputs,
   back to the previous quantized layer, are stripped, so no oneDNN pass has a scale for them; the
   weights stay int8-rounded, dequantized once when the predictor is built). No re-calibration:
   the variant that is timed is the model that ships.
3. Time the whole model: each variant against the all-int8 model in back-to-back pairs on the
   serving backend, batch and threads (on a shared machine the load moves single timings by tens of
   percent within seconds; a pair shares its moment), as many pairs as TIMING_SECONDS allow, and
   keep a group only when the median ratio is MIN_GAIN below 1 and the variant won MIN_SHARE of
   the pairs (`decide`).
4. The model with all kept groups in fp32 is timed again in fresh pairs and must be faster in the
   median; then it is verified on the whole evaluation set like any candidate and replaces the
   chosen model only when it passes the same gate.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from kubeslim_api.contract import SpeedAware, SpeedGroup, metric_value

from . import fallback, gate, progress
from .errors import last_line
from .handoff import MeasuredCandidate
from .workdir import MODEL_FILE, PARAMS_FILE

# A group is kept in fp32 only when its variant is this much faster than all-int8 in the median
# round: below it the difference is within what a shared machine's drift leaves after interleaving.
MIN_GAIN = 0.03
MIN_SHARE = 0.7            # ... and faster in at least this share of the rounds
# Back-to-back pairs per group: as many as fit TIMING_SECONDS, within [MIN_ROUNDS, MAX_ROUNDS]
# (odd: the median is one pair's ratio). On the shared 2-core machine single ratios ran from 0.25
# to 6.7 for two identical models; the median of 7+ pairs is what stays put.
TIMING_SECONDS = 30.0
MIN_ROUNDS, MAX_ROUNDS = 7, 21
POINTWISE_BANDS = (16, 64, 256)  # input-channel bands of 1x1 and kxk convolutions: <=16 (image stems), <=64, <=256, more

CONV_TYPES = ("conv2d", "depthwise_conv2d", "conv2d_transpose")


@dataclass(frozen=True)
class LayerShape:
    """What grouping needs of one quantized layer (from the program's variable shapes)."""
    name: str                 # the weight's name (skip_tensor_list's key)
    op_type: str
    kernel: tuple[int, int] | None = None     # convolutions: kh, kw
    in_channels: int | None = None
    out_channels: int | None = None
    groups: int = 1
    spatial: tuple[int, int] | None = None    # the input's H, W where the program knows them


def _band(channels: int | None) -> str:
    if channels is None:
        return "?"
    lo = 0
    for hi in POINTWISE_BANDS:
        if channels <= hi:
            return f"{lo + 1}-{hi}"
        lo = hi
    return f">{lo}"


def group_key(layer: LayerShape) -> str:
    """The group a layer is timed with: layers of one key cost alike in int8 versus fp32."""
    if layer.op_type not in CONV_TYPES:
        return f"fc {layer.op_type}"
    kh, kw = layer.kernel or (0, 0)
    k = f"{kh}x{kw}"
    if layer.op_type == "depthwise_conv2d" or (layer.groups > 1 and layer.groups == layer.in_channels):
        return f"depthwise {k}"
    if layer.spatial == (1, 1):
        return f"conv {k} on 1x1 maps"
    if layer.op_type == "conv2d_transpose":
        return f"transposed conv {k}, {_band(layer.in_channels)} in-channels"
    kind = "pointwise" if (kh, kw) == (1, 1) else f"conv {k}"
    if layer.groups > 1:
        kind = f"grouped {kind}"
    return f"{kind}, {_band(layer.in_channels)} in-channels"


def group_layers(layers: list[LayerShape]) -> dict[str, list[str]]:
    """Layer names by group key, groups and layers in program order."""
    groups: dict[str, list[str]] = {}
    for layer in layers:
        groups.setdefault(group_key(layer), []).append(layer.name)
    return groups


@dataclass(frozen=True)
class Decision:
    group: str
    gain: float               # 1 - the median over rounds of variant / all-int8: 0.1 = 10 % faster with the group in fp32
    faster_share: float       # the share of rounds in which the variant was the faster of the pair
    keep_fp32: bool


def decide(ratios: dict[str, list[float]], min_gain: float = MIN_GAIN, min_share: float = MIN_SHARE) -> list[Decision]:
    """Per group, from its per-round latency ratios (variant / all-int8, each pair timed back to
    back): keep it in fp32 when the median ratio is at least min_gain below 1 and the variant won
    at least min_share of the rounds (a sign test: one lucky round cannot carry a group)."""
    out = []
    for group, rs in ratios.items():
        if not rs:
            raise ValueError(f"group {group!r} has no timed rounds")
        gain = round(1.0 - statistics.median(rs), 4)
        share = round(sum(r < 1.0 for r in rs) / len(rs), 4)
        out.append(Decision(group, gain, share, gain >= min_gain and share >= min_share))
    return out


def layer_shapes(program, op_types: list[str]) -> list[LayerShape]:
    """The layers of an int8 `program` that run quantized (their weight reaches them through a
    dequantize op), in program order, with their shapes."""
    block = program.global_block()
    found: dict[str, LayerShape] = {}
    for op in block.ops:
        slot = fallback.WEIGHT_INPUT.get(op.type)
        if slot is None or op.type not in op_types:
            continue
        for quantized in op.input(slot):
            weight = fallback._base(quantized)
            if quantized == weight or weight in found or not block.has_var(weight):
                continue        # a weight read as is: the layer was not quantized (skipTensors, the fallback)
            shape = list(block.var(weight).shape)
            if op.type in CONV_TYPES:
                act = fallback._base(op.input("Input")[0])
                act_shape = list(block.var(act).shape) if block.has_var(act) else []
                spatial = tuple(act_shape[-2:]) if len(act_shape) == 4 and min(act_shape[-2:]) > 0 else None
                groups = int(op.attr("groups") or 1) if op.has_attr("groups") else 1
                cin = shape[1] * groups if op.type != "conv2d_transpose" else shape[0]
                cout = shape[0] if op.type != "conv2d_transpose" else shape[1] * groups
                found[weight] = LayerShape(weight, op.type, (shape[2], shape[3]), cin, cout, groups, spatial)
            else:
                found[weight] = LayerShape(weight, op.type, in_channels=shape[0] if shape else None,
                                           out_channels=shape[-1] if shape else None)
    return list(found.values())


def make_variant(int8_dir: str, out: str, layers: list[str], op_types: list[str]) -> int:
    """A copy of the int8 model in `out` with `layers` kept in fp32; returns the pairs stripped."""
    os.makedirs(out, exist_ok=True)
    for name in (MODEL_FILE, PARAMS_FILE):
        shutil.copyfile(os.path.join(int8_dir, name), os.path.join(out, name))
    return fallback.keep_fp32(out, layers, op_types)


Infer = Callable[[], object]


def rounds_for(batch_seconds: float, variants: int, budget: float = TIMING_SECONDS) -> int:
    """Pairs per variant: what `budget` seconds allow at two batches a pair, odd, within
    [MIN_ROUNDS, MAX_ROUNDS] (a large model on 2 cores gets the minimum, whatever the budget)."""
    fit = int(budget / max(2.0 * batch_seconds * max(variants, 1), 1e-9))
    n = max(MIN_ROUNDS, min(MAX_ROUNDS, fit))
    return n if n % 2 else n - 1


def paired_ratios(baseline: Infer, variants: dict[str, Infer], rounds: int = MIN_ROUNDS,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Per variant, `rounds` latency ratios variant / baseline, each from one run of both back to
    back (which goes first alternates by round; the variants' order rotates per round). On a
    shared machine the load moves single timings by tens of percent within seconds; a pair run
    back to back shares the moment, so its ratio is what the load leaves comparable."""
    def ms(fn: Infer) -> float:
        t = clock()
        fn()
        return clock() - t

    for fn in (baseline, *variants.values()):    # warm-up: a predictor's first run builds its kernels
        fn()
    keys = list(variants)
    out: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            if r % 2:
                v, b = ms(variants[k]), ms(baseline)
            else:
                b, v = ms(baseline), ms(variants[k])
            out[k].append(v / b)
    return out


@dataclass
class Outcome:
    summary: SpeedAware
    model_dir: str | None                 # the speed-aware model; None: the chosen model stays as it is
    kept_layers: list[str] = field(default_factory=list)


def run(int8_dir: str, work_dir: str, op_types: list[str], backend: str, batch: dict[str, np.ndarray],
        batch_size: int, shapes: dict[str, list[int]]) -> Outcome:
    """Time every group's fp32 variant of the model in `int8_dir` against it on `batch` and build
    the model with the slow groups in fp32 under work_dir (not yet verified: the caller measures it
    and checks the gate)."""
    from .inference import open_model

    t0 = time.perf_counter()
    with fallback._program(os.path.join(int8_dir, MODEL_FILE)) as program:
        groups = group_layers(layer_shapes(program, op_types))

    progress.plan(len(groups) + 1, "steps", step="speed")

    def timer(model_dir: str) -> Infer:
        infer = open_model(model_dir, backend, "int8", batch_size, shapes)
        return lambda: infer(batch)

    variant_dirs = {}
    for i, (key, layers) in enumerate(groups.items()):
        d = os.path.join(work_dir, f"group-{i}")
        if make_variant(int8_dir, d, layers, op_types) > 0:
            variant_dirs[key] = d
    base = timer(int8_dir)
    base()                                  # the first run builds the kernels: not timed
    t = time.perf_counter()
    base()
    rounds = rounds_for(time.perf_counter() - t, len(variant_dirs))
    decisions = decide(paired_ratios(base, {k: timer(d) for k, d in variant_dirs.items()}, rounds))
    progress.advance("steps", len(groups))
    keep = [d for d in decisions if d.keep_fp32]
    rows = [SpeedGroup(group=d.group, layers=len(groups[d.group]), gain=d.gain, faster_share=d.faster_share,
                       kept_fp32=d.keep_fp32) for d in decisions]
    kept_layers = [n for d in keep for n in groups[d.group]]
    if not kept_layers:
        return Outcome(SpeedAware(mode="auto", groups=rows, applied=False, reason="NoSlowerGroup",
                                  seconds=round(time.perf_counter() - t0, 3)), None)
    # The model with every slow group in fp32 is timed again, in fresh pairs: the groups' gains need
    # not add up (each fp32 region has reorders at its edges), and a second, independent
    # measurement must confirm the first (on the loaded machine one set of 7 pairs once showed a
    # 25 % gain for a group that the next set did not).
    combined = os.path.join(work_dir, "combined")
    make_variant(int8_dir, combined, kept_layers, op_types)
    [together] = decide(paired_ratios(base, {"combined": timer(combined)}, rounds), min_gain=0.0, min_share=0.5)
    progress.advance("steps")
    summary = SpeedAware(mode="auto", groups=rows, fp32_layers=kept_layers, gain=together.gain,
                         applied=together.keep_fp32, reason="Faster" if together.keep_fp32 else "CombinedNotFaster",
                         seconds=round(time.perf_counter() - t0, 3))
    return Outcome(summary, combined if together.keep_fp32 else None, kept_layers if together.keep_fp32 else [])


def apply(r) -> None:
    """The verify pipeline's step (after the choice and the accuracy fallback; `r` is
    verify.Verifying): with speedAware auto, the chosen model with its slow groups in fp32 is
    measured on the whole evaluation set like any candidate and replaces it when it passes the
    same gate (or, where the chosen model misses the gate too, scores no worse). A failure here is
    reported in status and leaves the chosen model as it was: speed is an optimisation.
    """
    if r.spec.quantization.speed_aware == "off":
        return
    t0 = time.perf_counter()
    best, batch_size = r.best, min(r.v.batch_size, r.evalset.n)
    try:
        feeds, _ = next(r.evalset.batches(batch_size))
        feeds = {k: np.array(v) for k, v in feeds.items()}      # batches() reuses its buffers
        out = run(r.best_dir, r.work.path("speed"), list(r.spec.quantization.quantizable_op_types), r.backend, feeds,
                  batch_size, r.evalset.shapes)
    except Exception as exc:
        r.speed_outcome = SpeedAware(mode="auto", applied=False, reason="Failed", message=last_line(exc)[:300],
                                     seconds=round(time.perf_counter() - t0, 3))
        return
    summary = out.summary
    if out.model_dir is not None:
        row = MeasuredCandidate(algo=best.algo, fp32_layers=best.fp32_layers, speed_fp32_layers=len(out.kept_layers),
                                calibration_seconds=best.calibration_seconds, dir=os.path.relpath(out.model_dir, r.work.root))
        row = r.measure_int8(row, out.model_dir)
        r.rows.append(row)
        # it replaces the chosen model when it passes the gate or, where the chosen one misses it too
        # (nothing is published then), when it scores no worse: fp32 layers only remove int8 error
        if row.error is None and (gate.passes(r.fp32, row, r.v) or (
                not r.gate.passed and (metric_value(row, r.v.metric) or 0.0) >= (metric_value(best, r.v.metric) or 0.0))):
            r.best = row
            r.drop, r.gate = gate.judge(r.fp32, row, r.v)
        else:
            summary = summary.model_copy(update={
                "applied": False, "reason": "GateFailed",
                "message": row.error or f"with the slow groups in fp32 the model misses the gate (drop {row.accuracy_drop})"})
    r.speed_outcome = summary.model_copy(update={"seconds": round(time.perf_counter() - t0, 3)})
