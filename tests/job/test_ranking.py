"""ranking.rank_layers on the outlier digits CNN of kubeslim_dev.outliers (plain per-tensor int8
fails on it because conv2 reads one massive channel; see tests/job/test_fallback.py): calibrated
once with hist, then ranked from one recorded pass. conv2 must come first, far ahead of the other
layers, and every layer must be scored. Needs real Paddle but no devenv."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import pytest

from kubeslim_dev import digits, outliers
from kubeslim_job import fallback, ranking

from .ptq import calibrate

pytestmark = pytest.mark.cluster

OP_TYPES = ["conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2"]


class _Samples:
    """The one method of data.TensorFile that rank_layers reads: ({input: batch}, labels) batches."""

    def __init__(self, x):
        self.x = x

    def batches(self, batch_size):
        for i in range(0, len(self.x), batch_size):
            yield {"image": self.x[i:i + batch_size]}, None


def test_the_layer_reading_the_outlier_channel_ranks_first(digits_data, tmp_path):
    _, model, _ = outliers.trained(digits_data)
    outliers.save_inference(model, str(tmp_path / "fp32" / "model"))
    calibrate(str(tmp_path / "fp32"), digits.to_tensor(digits_data["train_x"][:256]), "hist", "image", 32,
              save_to=str(tmp_path / "int8"))
    conv2 = outliers.conv2_weight(str(tmp_path / "fp32" / "model.pdmodel"))
    with fallback._program(str(tmp_path / "fp32" / "model.pdmodel")) as program:
        layers = fallback.quantizable_layers(program, OP_TYPES, [])
    assert conv2 in layers and len(layers) == 3

    ranked = ranking.rank_layers(str(tmp_path / "fp32"), str(tmp_path / "int8"), layers, OP_TYPES,
                                 _Samples(digits.to_tensor(digits_data["test_x"][:128])), 32)
    assert sorted(e.layer for e in ranked) == sorted(layers)
    assert ranked[0].layer == conv2
    assert ranked[0].relative_error > 100 * ranked[1].relative_error > 0
