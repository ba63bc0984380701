"""speed_aware's pure parts: which layers are timed together, the keep/drop decision from paired
timings, and the interleaving of those timings (a fake clock: no real time is measured here)."""
from __future__ import annotations

import itertools

import pytest

from kubeslim_job.speed_aware import LayerShape, decide, group_key, group_layers, paired_ratios, rounds_for


def conv(name, cin, cout, k=1, groups=1, spatial=(56, 56), op="conv2d"):
    return LayerShape(name, op, (k, k), cin, cout, groups, spatial)


@pytest.mark.parametrize("layer, key", [
    (conv("dw", 72, 72, 3, groups=72, op="depthwise_conv2d"), "depthwise 3x3"),
    (conv("dw-as-conv2d", 32, 32, 5, groups=32), "depthwise 5x5"),          # groups == channels in a plain conv2d
    (conv("se", 96, 24, spatial=(1, 1)), "conv 1x1 on 1x1 maps"),
    (conv("stem", 3, 16, 3), "conv 3x3, 1-16 in-channels"),
    (conv("pw-thin", 24, 72), "pointwise, 17-64 in-channels"),
    (conv("pw", 128, 256), "pointwise, 65-256 in-channels"),
    (conv("pw-wide", 576, 96), "pointwise, >256 in-channels"),
    (conv("grouped", 32, 32, 3, groups=4), "grouped conv 3x3, 17-64 in-channels"),
    (conv("unknown-spatial", 64, 64, 3, spatial=None), "conv 3x3, 17-64 in-channels"),
    (LayerShape("fc", "matmul_v2", in_channels=576, out_channels=1000), "fc matmul_v2"),
])
def test_group_key_separates_the_kinds_int8_treats_differently(layer, key):
    assert group_key(layer) == key


def test_group_layers_keeps_program_order_within_and_across_groups():
    layers = [conv("a", 3, 16, 3), conv("b", 16, 16, 3, groups=16), conv("c", 16, 64),
              conv("d", 64, 64, 3, groups=64), conv("e", 16, 64)]
    assert group_layers(layers) == {"conv 3x3, 1-16 in-channels": ["a"], "depthwise 3x3": ["b", "d"],
                                    "pointwise, 1-16 in-channels": ["c", "e"]}


def test_decide_keeps_only_groups_faster_in_fp32_by_the_margin_in_most_rounds():
    ratios = {
        "slow in int8": [0.80, 0.85, 0.90, 0.82, 1.05],      # fp32 variant 18 % faster, won 4 of 5
        "fast in int8": [1.30, 1.25, 1.40, 1.20, 1.33],
        "noise": [0.99, 1.01, 0.98, 1.02, 0.99],              # median gain 1 %: below the margin
        "one lucky round": [0.50, 1.10, 1.08, 1.12, 0.90],  # median says slower in fp32
        "lucky median": [0.80, 0.85, 1.10, 1.20, 0.90],     # median gain 10 % but won only 3 of 5
    }
    got = {d.group: d for d in decide(ratios, min_gain=0.03, min_share=0.7)}
    assert [g for g, d in got.items() if d.keep_fp32] == ["slow in int8"]
    assert got["slow in int8"].gain == pytest.approx(0.15) and got["slow in int8"].faster_share == pytest.approx(0.8)
    assert got["fast in int8"].gain == pytest.approx(-0.30) and got["fast in int8"].faster_share == 0.0
    assert got["noise"].gain == pytest.approx(0.01) and not got["noise"].keep_fp32
    assert got["lucky median"].gain == pytest.approx(0.10) and got["lucky median"].faster_share == pytest.approx(0.6)


def test_decide_refuses_a_group_that_was_never_timed():
    with pytest.raises(ValueError, match="'dw' has no timed rounds"):
        decide({"dw": []})


class FakeClock:
    """Each runner advances the clock by its own cost, times the machine's load at that moment."""

    def __init__(self, loads):
        self.now = 0.0
        self.loads = itertools.cycle(loads)
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def runner(self, name: str, cost: float):
        def run():
            self.calls.append(name)
            self.now += cost * next(self.loads)
        return run


def test_paired_ratios_pair_each_variant_with_the_baseline_back_to_back_and_alternate_who_goes_first():
    clock = FakeClock([1.0])
    base = clock.runner("base", 10.0)
    ratios = paired_ratios(base, {"a": clock.runner("a", 5.0), "b": clock.runner("b", 20.0)}, rounds=3, clock=clock)
    assert ratios == {"a": [0.5, 0.5, 0.5], "b": [2.0, 2.0, 2.0]}
    warmup, timed = clock.calls[:3], clock.calls[3:]
    assert warmup == ["base", "a", "b"]
    # round 0: base first, a then b; round 1: the variant first, order rotated (b then a); round 2: base first again
    assert timed == ["base", "a", "base", "b", "b", "base", "a", "base", "base", "a", "base", "b"]


def test_paired_ratios_cancel_a_load_that_changes_between_pairs():
    # the load doubles every other pair (another engineer's test run): each pair shares its moment
    clock = FakeClock([1.0] * 2 + [1.0, 1.0, 3.0, 3.0, 1.0, 1.0, 3.0, 3.0])
    ratios = paired_ratios(clock.runner("base", 10.0), {"v": clock.runner("v", 8.0)}, rounds=4, clock=clock)
    assert ratios["v"] == pytest.approx([0.8] * 4)


@pytest.mark.parametrize("batch_seconds, variants, rounds", [
    (0.001, 8, 21),      # a small model: as many pairs as the cap allows
    (0.05, 8, 21),       # 30 s / (2 x 0.05 s x 8) = 37 pairs fit: capped
    (0.1, 8, 17),        # 30 / 1.6 = 18.75 -> 18 -> odd 17
    (0.7, 8, 7),         # resnet50-sized on 2 cores: the minimum, whatever the budget
])
def test_rounds_fit_the_budget_odd_and_bounded(batch_seconds, variants, rounds):
    assert rounds_for(batch_seconds, variants, budget=30.0) == rounds
