"""The accuracy-aware fallback's pure parts: which layers are quantizable, which tensors must lose
their int8 scales for a layer to run in fp32, ranking, choosing a step."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from kubeslim_api.spec import AccuracyControl
from kubeslim_job import fallback
from kubeslim_job.fallback import Sensitivity
from kubeslim_job.handoff import MeasuredCandidate

OP_TYPES = ["conv2d", "matmul_v2"]


@dataclass
class Op:
    """The slice of paddle's Operator that fallback reads and edits."""
    type: str
    inputs: dict[str, list[str]]
    outputs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def input_names(self):
        return list(self.inputs)

    def input(self, slot):
        return self.inputs[slot]

    @property
    def input_arg_names(self):
        return [n for v in self.inputs.values() for n in v]

    @property
    def output_arg_names(self):
        return [n for v in self.outputs.values() for n in v]

    def _rename_input(self, old, new):
        self.inputs = {k: [new if n == old else n for n in v] for k, v in self.inputs.items()}


@dataclass
class Var:
    name: str
    persistable: bool


class Block:
    def __init__(self, ops):
        self.ops = ops

    def _remove_op(self, i):
        del self.ops[i]


class Program:
    def __init__(self, ops, params):
        self.block = Block(ops)
        self.params = params

    def global_block(self):
        return self.block

    def list_vars(self):
        names = {n for op in self.block.ops for n in op.input_arg_names + op.output_arg_names}
        return [Var(n, n in self.params) for n in names]


def qdq(t: str) -> list[Op]:
    return [Op("quantize_linear", {"X": [t], "Scale": [f"{t}@scale"]}, {"Y": [f"{t}.quantized"]}),
            Op("dequantize_linear", {"X": [f"{t}.quantized"], "Scale": [f"{t}@scale"]}, {"Y": [f"{t}.quantized.dequantized"]})]


def cnn() -> Program:
    """What quant_post_static (onnx_format) writes for conv1 -> relu -> pool -> conv2 -> fc: a
    quantize/dequantize pair on every op output, weights of the quantized layers dequantized."""
    dq = ".quantized.dequantized"
    ops = [
        Op("conv2d", {"Filter": ["c1.w"], "Input": ["image"]}, {"Output": ["c1.out"]}),
        *qdq("c1.out"),
        Op("relu", {"X": ["c1.out" + dq]}, {"Out": ["relu.out"]}),
        *qdq("relu.out"),
        Op("pool2d", {"X": ["relu.out" + dq]}, {"Out": ["pool.out"]}),
        *qdq("pool.out"),
        Op("conv2d", {"Filter": ["c2.w"], "Input": ["pool.out" + dq]}, {"Output": ["c2.out"]}),
        *qdq("c2.out"),
        Op("flatten", {"X": ["c2.out" + dq]}, {"Out": ["flat"]}),
        *qdq("flat"),
        Op("matmul_v2", {"X": ["flat" + dq], "Y": ["fc.w"]}, {"Out": ["logits"]}),
    ]
    return Program(ops, params={"c1.w", "c2.w", "fc.w"} | {f"{t}@scale" for t in ("c1.out", "relu.out", "pool.out", "c2.out", "flat")})


def test_quantizable_layers_in_program_order_without_skipped():
    assert fallback.quantizable_layers(cnn(), OP_TYPES, []) == ["c1.w", "c2.w", "fc.w"]
    assert fallback.quantizable_layers(cnn(), OP_TYPES, ["c2.w"]) == ["c1.w", "fc.w"]
    assert fallback.quantizable_layers(cnn(), ["conv2d"], []) == ["c1.w", "c2.w"]


@pytest.mark.parametrize("layers, region", [
    # conv2's input back to conv1's output, through pool and relu
    (["c2.w"], {"pool.out", "relu.out", "c1.out"}),
    # fc reads conv2's output through flatten; conv2's own output is the edge
    (["fc.w"], {"flat", "c2.out"}),
    # conv1 reads the feed: nothing carries a scale before it
    (["c1.w"], {"image"}),
    (["c2.w", "fc.w"], {"pool.out", "relu.out", "c1.out", "flat", "c2.out"}),
    ([], set()),
])
def test_fp32_region_walks_back_to_the_previous_quantizable_layer(layers, region):
    assert fallback.fp32_region(cnn(), layers, OP_TYPES) == region


def test_strip_scales_removes_the_pairs_and_rewires_the_readers():
    p = cnn()
    n = len(p.block.ops)
    removed = fallback.strip_scales(p, fallback.fp32_region(p, ["c2.w"], OP_TYPES))
    assert removed == 3 and len(p.block.ops) == n - 6
    by_type = {op.type: op for op in p.block.ops}
    assert by_type["relu"].input("X") == ["c1.out"] and by_type["pool2d"].input("X") == ["relu.out"]
    conv2 = [op for op in p.block.ops if op.type == "conv2d"][1]
    assert conv2.input("Input") == ["pool.out"]
    # the pairs outside the region stay: fc still reads a quantized tensor
    assert by_type["matmul_v2"].input("X") == ["flat.quantized.dequantized"]


@pytest.mark.parametrize("mode, gate_passed, runs", [
    ("onGateFailure", False, True), ("onGateFailure", True, False),
    ("always", True, True), ("always", False, True), ("off", False, False), ("off", True, False),
])
def test_wanted(mode, gate_passed, runs):
    assert fallback.wanted(AccuracyControl(mode=mode), gate_passed) is runs


def test_rank_most_sensitive_first_ties_by_logit_distance_failures_last():
    sens = [Sensitivity("a", 0.01, 0.2, 1.0), Sensitivity("b", 0.30, 0.1, 1.0), Sensitivity("c", None, None, 1.0, "boom"),
            Sensitivity("d", 0.01, 0.5, 1.0)]
    assert fallback.rank(sens) == ["b", "d", "a", "c"]


def _cand(k, top1, error=None):
    return MeasuredCandidate(algo="hist", fp32_layers=k, top1=top1, error=error)


@pytest.mark.parametrize("plain, steps, chosen", [
    (_cand(None, 0.96), [_cand(1, 0.97)], None),                          # plain passes: it is chosen
    (_cand(None, 0.80), [_cand(1, 0.90), _cand(2, 0.965), _cand(3, 0.97)], 2),   # fewest fp32 layers that pass
    (_cand(None, 0.80), [_cand(1, 0.99, error="x"), _cand(2, 0.90)], "none"),    # a failed step never counts
    (_cand(None, 0.80), [_cand(1, 0.90), _cand(4, 0.97), _cand(2, 0.965)], 2),   # steps in the order measured
])
def test_choose_step(plain, steps, chosen):
    got = fallback.choose_step(plain, steps, lambda c: 0.97 - c.top1 <= 0.02)
    if chosen == "none":
        assert got is None
    else:
        assert got is not None and got.fp32_layers == chosen


@pytest.mark.parametrize("verdicts, most, next_k", [
    ({}, 8, 1),                                     # the first step keeps one layer
    ({1: False}, 8, 2), ({1: False, 2: False}, 8, 4),            # doubling while the gate fails
    ({1: False, 2: False, 4: False}, 8, 8),
    ({1: False, 2: False, 4: False}, 6, 6),                      # capped at the most allowed
    ({1: False, 2: False, 4: False, 8: False}, 8, None),         # nothing up to the most passes: stop
    ({1: False, 2: False, 4: False, 8: True}, 8, 6),             # then bisection below the pass
    ({1: False, 2: False, 4: False, 8: True, 6: False}, 8, 7),
    ({1: False, 2: False, 4: False, 8: True, 6: True}, 8, 5),
    ({1: False, 2: False, 4: False, 8: True, 6: True, 5: False}, 8, None),   # 5 fails, 6 passes: done
    ({1: True}, 8, None),                           # one layer suffices (the plain model failed)
    ({1: False, 2: True}, 8, None),
    ({1: False, 2: False, 4: True}, 8, 3),
    ({}, 0, None),                                  # no layer can be kept in fp32
])
def test_next_fp32_layers(verdicts, most, next_k):
    assert fallback.next_fp32_layers(verdicts, most) == next_k


@pytest.mark.parametrize("most, mode, steps", [
    (8, "onGateFailure", 6),        # 1, 2, 4, 8 then 6 and 5 or 7: never the 8 steps of one by one
    (2, "onGateFailure", 2), (1, "onGateFailure", 1), (0, "onGateFailure", 0),
    (5, "onGateFailure", 4),        # 1, 2, 4 then 3; or 1, 2, 4, 5
    (8, "always", 8),               # the whole curve
])
def test_planned_steps(most, mode, steps):
    assert fallback.planned_steps(most, mode) == steps


def test_planned_steps_bounds_every_search():
    """Whatever k first passes, the search tries at most planned_steps numbers, never one twice, and
    finds that k (the gate taken as monotone in k)."""
    for most in range(1, 20):
        for first_passing in range(1, most + 2):
            verdicts: dict[int, bool] = {}
            while (k := fallback.next_fp32_layers(verdicts, most)) is not None:
                assert k not in verdicts and 1 <= k <= most
                verdicts[k] = k >= first_passing
            assert len(verdicts) <= fallback.planned_steps(most, "onGateFailure")
            assert min((k for k, ok in verdicts.items() if ok), default=most + 1) == first_passing


def test_compare_flips_and_cosine():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
    assert fallback.compare(ref, ref) == (0.0, 0.0)
    flips, dist = fallback.compare(ref, ref[:, ::-1])
    assert flips == 1.0 and dist > 0.5
    assert fallback.compare(ref, 3 * ref) == (0.0, 0.0)       # scale-free
