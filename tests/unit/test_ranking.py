"""ranking.py's pure parts: the fake quantization it scores layers with (the grid of
quant_post_static's int8: 2^(bits-1)-1 levels each side of zero over [-threshold, threshold], the
weights per output channel). The ranking of a real network runs in tests/job/test_ranking.py."""
from __future__ import annotations

import numpy as np
import pytest

from kubeslim_job.ranking import fake_quant, per_layer_ranking_fits, quantized_weight

pytestmark = pytest.mark.unit


def test_values_land_on_the_int8_grid_and_clip_at_the_threshold():
    x = np.array([-3.0, -1.0, -0.003, 0.0, 0.003, 0.5, 1.0, 2.5], np.float32)
    q = fake_quant(x, 1.0, 8)
    step = 1.0 / 127
    assert q.dtype == np.float32
    assert np.allclose(q / step, np.round(q / step), atol=1e-4)          # on the grid
    assert q[0] == pytest.approx(-1.0) and q[-1] == pytest.approx(1.0)     # clipped to +-threshold
    assert q[2] == 0.0 and q[4] == 0.0                                     # below half a step: zero
    assert np.abs(q[1:-1] - np.clip(x[1:-1], -1, 1)).max() <= step / 2 + 1e-7


def test_fewer_bits_mean_coarser_steps():
    x = np.linspace(-1, 1, 1001).astype(np.float32)
    assert len(np.unique(fake_quant(x, 1.0, 4))) == 15 and len(np.unique(fake_quant(x, 1.0, 8))) == 255


def test_a_zero_threshold_leaves_a_zero_tensor_zero():
    assert np.array_equal(fake_quant(np.zeros(4, np.float32), 0.0, 8), np.zeros(4, np.float32))


def test_one_large_value_rounds_the_small_ones_of_its_tensor_to_zero():
    """The failure the ranking must see: a per-tensor threshold set by an outlier channel."""
    x = np.concatenate([np.full(10, 0.01, np.float32), [300.0]])
    q = fake_quant(x, 300.0, 8)
    assert np.all(q[:10] == 0.0) and q[10] == pytest.approx(300.0)


@pytest.mark.parametrize("axis", [0, 1])
def test_weights_per_output_channel_keep_each_channels_own_scale(axis):
    w = np.random.default_rng(0).normal(size=(4, 4, 3, 3)).astype(np.float32)
    w = np.moveaxis(np.moveaxis(w, axis, 0) * np.array([1e-3, 1, 10, 100], np.float32)[:, None, None, None], 0, axis)
    per_channel = quantized_weight(w, axis, True, 8)
    per_tensor = quantized_weight(w, axis, False, 8)
    small_channel = [slice(None)] * 4
    small_channel[axis] = 0
    small = tuple(small_channel)
    # the 1e-3 channel survives per channel (error below half its own step) and vanishes per tensor
    assert np.abs(per_channel[small] - w[small]).max() <= np.abs(w[small]).max() / 127 / 2 + 1e-9
    assert np.all(per_tensor[small] == 0.0)


@pytest.mark.parametrize("layers, calibration_seconds, max_seconds, fits", [
    (3, 4.0, 1800, True),            # the digits CNN: measured on the int8 backend, layer by layer
    (54, 54.0, 1800, False),         # resnet50: 54 calibrations would eat the whole budget
    (54, 54.0, 100_000, True),       # ...unless the budget is that large
    (10, 45.0, 1800, True), (11, 45.0, 1800, False),     # the edge: a quarter of the budget
    (3, None, 1800, False),          # no calibration time known: the ranking that scales
])
def test_the_per_layer_ranking_runs_only_where_it_fits_a_quarter_of_the_budget(layers, calibration_seconds,
                                                                                max_seconds, fits):
    assert per_layer_ranking_fits(layers, calibration_seconds, max_seconds) is fits
