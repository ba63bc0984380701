"""kubeslim_job.fast_thresholds against Paddle's own functions, run side by side on the same input.

The KL threshold search must pick Paddle's threshold (within 1e-6 relative: any other candidate is
at least one bin of 2048 away), and the histogram must count exactly what np.histogram over the
edge array counts. Real network activations run through both in tests/job/test_fast_calibration.py;
here the edge cases: empty, a single spike, heavy tails, ties, tiny and odd-sized histograms.
Paddle's loop costs ~2 ms per candidate at 2048 bins, so most cases use 256-512 bins."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import importlib

import numpy as np
import pytest

from kubeslim_job import fast_thresholds

pytestmark = pytest.mark.unit

paddle_kl = importlib.import_module("paddle.static.quantization.cal_kl_threshold")
ptq = importlib.import_module("paddle.static.quantization.post_training_quantization")


def _abs_hist(samples: np.ndarray, bins: int) -> np.ndarray:
    """A histogram as PostTrainingQuantization accumulates it: int64 counts of |x| over [min, max]."""
    a = np.abs(samples)
    return np.histogram(a, bins=bins, range=(a.min(), a.max()))[0]


def _spike(n: int, at: int, count: int = 1000) -> np.ndarray:
    h = np.zeros(n, np.int64)
    h[at] = count
    return h


rng = np.random.default_rng(7)
HISTOGRAMS = {
    "all zeros": np.zeros(2048, np.int64),
    "spike at bin 0": _spike(2048, 0),
    "spike below the first candidate": _spike(2048, 700),
    "spike among the candidates": _spike(2048, 1500),
    "spike in the last bin": _spike(2048, 2047),
    "two spikes": _spike(512, 40) + _spike(512, 400, 3),
    "half-normal": _abs_hist(rng.normal(size=200_000), 512),
    "relu output (mass at 0)": _abs_hist(np.maximum(rng.normal(size=200_000), 0), 512),
    "heavy tail (cauchy)": _abs_hist(rng.standard_cauchy(200_000), 2048),
    "heavy tail (pareto)": _abs_hist(rng.pareto(1.5, 200_000), 2048),
    "one outlier far out": np.concatenate([_abs_hist(rng.normal(size=50_000), 511), [1]]),
    "sparse comb": np.tile([5, 0, 0, 0], 128).astype(np.int64),
    "flat": np.full(512, 5, np.int64),
    "fractional counts": _abs_hist(rng.normal(size=50_000), 400) / 7.0,
    "odd size": _abs_hist(rng.normal(size=50_000), 301),
    "fewer bins than levels": _abs_hist(rng.normal(size=1_000), 40),
    "three bins": np.array([3, 1, 2], np.int64),
}


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("name", HISTOGRAMS)
def test_kl_threshold_is_paddles(name, bits):
    hist = HISTOGRAMS[name]
    assert fast_thresholds.cal_kl_threshold(hist, 0.013, bits) == pytest.approx(
        paddle_kl.cal_kl_threshold(hist, 0.013, bits), rel=1e-6)


@pytest.mark.parametrize("name", ["half-normal", "heavy tail (pareto)", "fractional counts", "fewer bins than levels"])
def test_the_vectorised_divergences_are_paddles_within_the_tie_tolerance(name):
    """The tie rule is sound only if every vectorised divergence is within its tolerance of the
    value Paddle's loop computes: check that on every candidate."""
    hist = HISTOGRAMS[name]
    n = hist.shape[0]
    candidates = np.arange(int((n - 1) * 0.5), n)
    candidates = candidates[hist[candidates - 1] != 0]
    kl, tolerance = fast_thresholds._kl_of_every_candidate(hist.astype(np.float64), candidates, 127)
    p_sum = np.sum(hist)
    exact = np.array([fast_thresholds._paddle_kl_at(paddle_kl, hist, int(i), p_sum, 127) for i in candidates])
    assert np.all(np.abs(kl - exact) <= tolerance)
    assert np.all(tolerance < 1e-6 * np.maximum(np.abs(exact), 1e-3))   # and is no blanket that hides real gaps


@pytest.mark.parametrize("name", ["half-normal", "relu output (mass at 0)", "fractional counts", "flat", "odd size"])
def test_ties_resolved_in_paddles_arithmetic_keep_paddles_first_minimum(name, monkeypatch):
    """With a tolerance so wide that every candidate counts as tied, the answer comes from Paddle's
    arithmetic alone (`_paddle_kl_at` + first minimum) and must still be Paddle's."""
    hist = HISTOGRAMS[name]
    evaluated = []
    paddle_kl_at = fast_thresholds._paddle_kl_at
    monkeypatch.setattr(fast_thresholds, "_TIE_ULPS_PER_BIN", 1e30)
    monkeypatch.setattr(fast_thresholds, "_paddle_kl_at", lambda *a: evaluated.append(a[2]) or paddle_kl_at(*a))
    got = fast_thresholds.cal_kl_threshold(hist, 0.5, 8)
    assert got == pytest.approx(paddle_kl.cal_kl_threshold(hist, 0.5, 8), rel=1e-6)
    assert len(evaluated) > 1


@pytest.mark.parametrize("hist", [np.array([[1, 2], [3, 4]]), np.array([1, -2, 3, 4, 5]), np.array([1.0, np.nan, 3, 4])],
                         ids=["2-D", "negative count", "nan"])
def test_inputs_outside_the_vectorised_domain_get_paddles_own_answer_or_error(hist):
    try:
        expected = paddle_kl.cal_kl_threshold(hist, 1.0, 8)
    except Exception as exc:       # Paddle's own error (the 2-D assert): the fast version raises the same
        with pytest.raises(type(exc)):
            fast_thresholds.cal_kl_threshold(hist, 1.0, 8)
        return
    got = fast_thresholds.cal_kl_threshold(hist, 1.0, 8)
    assert got == expected or (np.isnan(got) and np.isnan(expected))


def _paddle_edges(data: np.ndarray, bins: int = 2048) -> np.ndarray:
    """The edges PostTrainingQuantization builds from the |x| range of its first pass."""
    a = np.abs(data)
    return np.histogram([], bins=bins, range=(float(a.min()), float(a.max())))[1]


ACTIVATIONS = {
    "normal": (rng.normal(size=(4, 8, 16, 16)).astype(np.float32), None),
    "relu, half zeros": (np.maximum(rng.normal(size=(4, 8, 16, 16)), 0).astype(np.float32), None),
    "constant (degenerate range)": (np.zeros((2, 3, 4, 4), np.float32), None),
    # integer edges 0..2048: every value below sits exactly on an edge or halfway
    "values on every edge": (np.concatenate([np.arange(2049), np.arange(2048) + 0.5]).astype(np.float32),
                             np.histogram([], bins=2048, range=(0.0, 2048.0))[1]),
    "values outside the range": (np.array([-5.0, -1.0, 0.5, 1.0, 3.0, 7.0], np.float32),
                                 np.histogram([], bins=2048, range=(0.5, 3.0))[1]),
    "non-finite values": (np.array([np.inf, -np.inf, np.nan, 0.25, 1.0], np.float32),
                          np.histogram([], bins=2048, range=(0.0, 1.0))[1]),
    "non-uniform edges": (rng.normal(size=1000).astype(np.float32), np.array([0.0, 0.1, 0.5, 2.0, 4.0])),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_abs_histogram_counts_what_np_histogram_over_the_edges_counts(name):
    data, edges = ACTIVATIONS[name]
    edges = _paddle_edges(data) if edges is None else edges
    expected = np.histogram(np.abs(data), bins=edges)[0]
    got = fast_thresholds.abs_histogram(data, edges)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert got.sum() > 0


@pytest.fixture
def paddle_functions_after():
    """Leave Paddle's functions in place after the test, whatever it installed."""
    yield
    fast_thresholds.uninstall()
    assert ptq.cal_kl_threshold is paddle_kl.cal_kl_threshold


def test_install_replaces_both_and_uninstall_restores_paddles(paddle_functions_after):
    paddle_sample = ptq.PostTrainingQuantization.__dict__["_sample_histogram"]
    assert fast_thresholds.unverified() == []
    assert fast_thresholds.install() and fast_thresholds.install()        # idempotent
    assert ptq.cal_kl_threshold is fast_thresholds.cal_kl_threshold
    assert ptq.PostTrainingQuantization._sample_histogram is fast_thresholds.sample_histogram
    with fast_thresholds.paddle_originals():
        assert ptq.cal_kl_threshold is paddle_kl.cal_kl_threshold
        assert ptq.PostTrainingQuantization.__dict__["_sample_histogram"] is paddle_sample
    assert ptq.cal_kl_threshold is fast_thresholds.cal_kl_threshold
    fast_thresholds.uninstall()
    assert ptq.PostTrainingQuantization.__dict__["_sample_histogram"] is paddle_sample


def test_a_paddle_whose_code_changed_keeps_its_own_functions(monkeypatch, caplog, paddle_functions_after):
    monkeypatch.setitem(fast_thresholds.VERIFIED_CODE, "safe_entropy", "0" * 64)
    assert fast_thresholds.unverified() == ["safe_entropy"]
    assert not fast_thresholds.install()
    assert ptq.cal_kl_threshold is paddle_kl.cal_kl_threshold
    assert ptq.PostTrainingQuantization._sample_histogram is not fast_thresholds.sample_histogram
    assert "safe_entropy" in caplog.text
