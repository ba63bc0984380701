"""fast_thresholds on a real network: Paddle's PostTrainingQuantization (what PaddleSlim's
quant_post_static runs) calibrates the trained digits CNN with KL and with hist twice, once with
Paddle's own _sample_histogram and cal_kl_threshold and once with kubeslim's, on the same
calibration images. Every activation histogram must be the same count for count, and every
threshold the same within 1e-6 relative. Needs real Paddle but no devenv; the timing is in
bench/bench_calibration.py."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import importlib

import numpy as np
import pytest

from kubeslim_dev import digits
from kubeslim_job import fast_thresholds

from .ptq import calibrate

pytestmark = pytest.mark.cluster

CALIB_IMAGES = 64
BATCH = 16


@pytest.fixture
def paddle_functions_after():
    yield
    fast_thresholds.uninstall()


def _calibrate(model_dir: str, images: np.ndarray, algo: str) -> tuple[dict, dict]:
    """Thresholds per tensor and activation histograms of one calibration."""
    ptq = calibrate(model_dir, digits.to_tensor(images), algo, "image", BATCH)
    return dict(ptq._quantized_var_threshold), {k: v[0].copy() for k, v in ptq._sampling_act_histogram.items()}


@pytest.mark.parametrize("algo", ["KL", "hist"])
def test_fast_calibration_gives_paddles_histograms_and_thresholds(algo, trained, digits_data, paddle_functions_after):
    model_dir = str(trained["dir"] / "inference")
    images = digits_data["train_x"][:CALIB_IMAGES]
    with fast_thresholds.paddle_originals():
        paddle_thresholds, paddle_hists = _calibrate(model_dir, images, algo)
    assert fast_thresholds.install()
    ptq = importlib.import_module("paddle.static.quantization.post_training_quantization")
    assert ptq.cal_kl_threshold is fast_thresholds.cal_kl_threshold
    fast_thresholds_, fast_hists = _calibrate(model_dir, images, algo)

    assert paddle_hists and fast_hists.keys() == paddle_hists.keys()
    for name, hist in paddle_hists.items():
        assert hist.sum() > 0 and np.array_equal(fast_hists[name], hist), name
    activations = [n for n in paddle_thresholds if n in paddle_hists]
    assert activations and fast_thresholds_.keys() == paddle_thresholds.keys()
    for name, threshold in paddle_thresholds.items():
        assert np.asarray(fast_thresholds_[name]) == pytest.approx(np.asarray(threshold), rel=1e-6), name
