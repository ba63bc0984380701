"""calibrate.check_shapes: a model with dynamic dimensions that refuses the size the data gives
them fails once, naming the data field and the shape, before any algo runs."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import numpy as np
import paddle
import pytest
from paddle import nn

from kubeslim_job import calibrate, data
from kubeslim_job.errors import BadInput

pytestmark = pytest.mark.unit


class FlattenHead(nn.Layer):
    """Declares [N, 3, -1, -1] but its Linear takes only 8 x 8 images."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(paddle.flatten(x, 1))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("flatten")
    paddle.jit.save(FlattenHead(), str(d / "model"), input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
    return str(d)


def _samples(tmp_path, h: int, w: int) -> data.TensorFile:
    samples = (({"x": np.zeros((3, h, w), np.float32)}, data.NO_LABEL) for _ in range(2))
    return data._write(str(tmp_path / f"c{h}x{w}"), samples, data.LoadStats(source="mem"), "k")


def test_a_shape_the_model_refuses_is_bad_input_naming_the_data(model_dir, tmp_path):
    with pytest.raises(BadInput) as ei:
        calibrate.check_shapes(model_dir, _samples(tmp_path, 12, 20), "spec.data.calibration")
    assert ei.value.reason == "ShapeMismatch"
    assert "spec.data.calibration.uri: the model refuses samples of shape x [3, 12, 20]" in ei.value.message


def test_a_shape_the_model_takes_passes(model_dir, tmp_path):
    calibrate.check_shapes(model_dir, _samples(tmp_path, 8, 8), "spec.data.calibration")
