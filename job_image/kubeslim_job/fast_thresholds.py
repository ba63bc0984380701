"""Faster, result-identical replacements for the two slow steps of Paddle's KL and hist calibration.

PaddleSlim's `quant_post_static` runs Paddle's `PostTrainingQuantization`. Profiled on
mobilenet_v3_small (cProfile, 32 images), two of its steps made KL and hist calibration several
times slower than avg, and neither is inherent to the algorithms:

- `PostTrainingQuantization._sample_histogram` bins every activation with
  `np.histogram(x, bins=edges)`. Given an array of edges numpy sorts the data (blocks of 65536)
  and searches the edges: 14.7 s of hist's 40 s. The edges are always uniform (they come from
  `np.histogram([], bins=2048, range=(min, max))`), and for uniform edges numpy has an O(n) path
  with the same bin semantics (`edges[k] <= x < edges[k + 1]`, the last bin closed), which
  `sample_histogram` takes: same counts, no sort.
- `cal_kl_threshold` (paddle/static/quantization/cal_kl_threshold.py) tries ~1024 candidate
  thresholds per tensor, each with Python loops over up to 2048 bins (seconds per tensor, minutes
  per network). `cal_kl_threshold` below evaluates every candidate at once from prefix sums (the
  KL divergence of candidate i needs only per-group sums, see `_kl_of_every_candidate`), then
  re-evaluates, with Paddle's own helpers in Paddle's own arithmetic, the few candidates whose
  divergence is within rounding error of the smallest, so a near tie falls the way Paddle's loop
  lets it fall and the threshold is Paddle's exactly.

`install()` rebinds the two names in Paddle's post_training_quantization module (the only caller
of both) and only when the Paddle functions are the ones these replacements were checked against
(their code, docstrings aside, hashed below: Paddle 2.6.2 and 3.3.1 have the same code); on any
other Paddle it leaves them alone and says so in the log. tests/unit/test_fast_thresholds.py runs
both versions on real activations and edge cases and asserts equal thresholds and histograms.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import inspect
import logging
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_PTQ_MODULE = "paddle.static.quantization.post_training_quantization"
_KL_MODULE = "paddle.static.quantization.cal_kl_threshold"
_UTILS_MODULE = "paddle.static.quantization.utils"

# sha256 of `_code_digest` for each Paddle function a replacement stands in for or relies on;
# the same in paddlepaddle 2.6.2 and 3.3.1 (read from both wheels' sources).
VERIFIED_CODE = {
    "cal_kl_threshold": "0782557fdba56ff064fe432e59f631e1a7ede53248e2a4822c22a24d3175a0f6",
    "expand_quantized_bins": "0adfe5345d0ffc2b8b8128e1213b71ffc792d00bbdaf136edc1fdcab3460b9e6",
    "safe_entropy": "01899cdb859896b79a4e72131cc76c6f2299bc994becefec02dd67dfa8aaabbc",
    "_sample_histogram": "d80f3d59f845670b92e02c06dee1118ae429a69e6c8062809719ddd94151d390",
}

# Above this many (candidate x group) cells the vectorised KL search would need more memory than
# the loop it replaces (only activation_bits > 12 gets there); Paddle's loop runs instead.
_MAX_KL_CELLS = 1 << 22
# Candidates whose vectorised divergence is within this many units of rounding (relative to the
# magnitude of the sums involved) of the smallest are re-evaluated in Paddle's arithmetic.
# Recursive summation of n terms errs by at most n*eps*sum|terms|; 64x that covers both sides.
_TIE_ULPS_PER_BIN = 64.0


def cal_kl_threshold(hist: Any, bin_width: float, bits: int) -> float:
    """Paddle's `cal_kl_threshold(hist, bin_width, bits)`, the same threshold, without the loop.

    hist: a 1-D histogram of absolute activation values (counts, as PostTrainingQuantization
    accumulates them); bin_width: its bins' width; bits: the activation bits (8 -> 127 levels).
    Inputs the vectorised search does not cover (negative or non-finite counts, fewer than 3
    bins, very wide bit widths) go to Paddle's function itself."""
    paddle_kl = importlib.import_module(_KL_MODULE)
    h = np.asarray(hist)
    quant_range = 2 ** (bits - 1) - 1
    n = h.shape[0] if h.ndim == 1 else 0
    if (h.ndim != 1 or n < 3 or quant_range < 1 or not np.issubdtype(h.dtype, np.number)
            or not np.isfinite(h).all() or (h < 0).any()):
        return paddle_kl.cal_kl_threshold(hist, bin_width, bits)
    starting_iter = int((n - 1) * 0.5)
    # Paddle skips a candidate i whose last kept bin is empty
    candidates = np.arange(starting_iter, n)
    candidates = candidates[h[candidates - 1] != 0]
    if candidates.size * quant_range > _MAX_KL_CELLS:
        return paddle_kl.cal_kl_threshold(hist, bin_width, bits)
    if candidates.size == 0:
        # Paddle's fallback: the last non-empty bin at or below starting_iter (bin 0 if none)
        nonempty = np.flatnonzero(h[1:starting_iter + 1])
        return ((nonempty[-1] + 1 if nonempty.size else 0) + 0.5) * bin_width
    kl, tolerance = _kl_of_every_candidate(h.astype(np.float64), candidates, quant_range)
    best = int(np.argmin(kl))
    near = np.flatnonzero(kl - kl[best] <= tolerance + tolerance[best])
    if near.size > 1:
        # A near tie: Paddle's loop keeps the first candidate with the strictly smallest value as
        # its own rounding computes it, so compute those candidates exactly as it does.
        p_sum = np.sum(np.array(hist).ravel())
        exact = [_paddle_kl_at(paddle_kl, hist, int(candidates[k]), p_sum, quant_range) for k in near]
        best = int(near[int(np.argmin(exact))])   # argmin keeps the first of equal values, as Paddle's `<` does
    return (int(candidates[best]) + 0.5) * bin_width


def _kl_of_every_candidate(h: np.ndarray, candidates: np.ndarray, quant_range: int) -> tuple[np.ndarray, np.ndarray]:
    """KL(P_i || Q_i) for every candidate threshold bin i, and a bound on its rounding error.

    Paddle's definition, for candidate i: P = h[:i] with the outliers sum(h[i:]) added to P[i-1];
    the bins [0, i) fall into quant_range groups of m = i // quant_range bins (the last group runs
    to i); Q gives each bin with P != 0 its group's mean over such bins of sum(h[group]) (without
    the outliers). KL = sum_{P_j != 0} P_j * (log(Q_sum * P_j) - log(P_sum * Q_j)) / P_sum.
    Expanded, every term is a prefix sum or a per-group sum:
      sum P_j log P_j              = L[i-1] + P_last log P_last   (L: prefix sums of h log h)
      sum P_j log(Q_sum)           = P_sum log Q_sum              (sum P_j = P_sum)
      sum P_j log(P_sum Q_j)       = P_sum log P_sum + sum_groups Pgroup_g log(Qmean_g)
    so a (candidates x groups) array does what Paddle's loops do per bin."""
    n = h.shape[0]
    total = float(h.sum())
    prefix = np.concatenate(([0.0], np.cumsum(h)))
    nonzero_prefix = np.concatenate(([0], np.cumsum(h != 0)))
    h_log_h = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    plogp_prefix = np.concatenate(([0.0], np.cumsum(h_log_h)))
    abs_plogp_prefix = np.concatenate(([0.0], np.cumsum(np.abs(h_log_h))))

    i = candidates[:, None]
    merged = i // quant_range                                 # bins per group; 0 puts all in the last
    group = np.arange(quant_range)[None, :]
    starts = group * merged
    ends = np.where(group == quant_range - 1, i, (group + 1) * merged)
    group_sum = prefix[ends] - prefix[starts]
    group_nonzero = nonzero_prefix[ends] - nonzero_prefix[starts]
    occupied = group_nonzero > 0
    q_mean = np.where(occupied, group_sum / np.where(occupied, group_nonzero, 1), 0.0)
    outliers = total - prefix[candidates]
    p_group = group_sum.copy()
    p_group[:, -1] += outliers                                 # the outliers join P's last bin
    log_q = np.log(np.where(occupied, q_mean, 1.0))
    q_sum = (q_mean * group_nonzero).sum(axis=1)

    p_last = h[candidates - 1] + outliers
    log_p_last = np.log(p_last)
    plogp = plogp_prefix[candidates - 1] + p_last * log_p_last
    log_q_sum, log_total = np.log(q_sum), np.log(total)
    cross = (p_group * log_q).sum(axis=1)
    kl = ((plogp + total * log_q_sum) - (total * log_total + cross)) / total

    magnitude = (abs_plogp_prefix[candidates - 1] + p_last * np.abs(log_p_last) + total * np.abs(log_q_sum)
                 + total * abs(log_total) + (p_group * np.abs(log_q)).sum(axis=1))
    tolerance = _TIE_ULPS_PER_BIN * n * np.finfo(np.float64).eps * magnitude / total
    return kl, tolerance


def _paddle_kl_at(paddle_kl: Any, hist: Any, i: int, p_sum: Any, quant_range: int) -> float:
    """The divergence Paddle's loop computes for candidate i, in its arithmetic and order: the body
    of its loop (cal_kl_threshold.py) with its own expand_quantized_bins and safe_entropy."""
    reference = hist[0:i].tolist()
    reference[i - 1] += sum(hist[i:])
    candidate = hist[0:i].tolist()
    merged = int(i / quant_range)
    quantized = [0] * quant_range
    start, end = 0, merged
    for idx in range(quant_range):
        quantized[idx] = sum(candidate[start:end])
        start += merged
        end += merged
        if idx + 1 == quant_range - 1:
            end = i
    expanded = paddle_kl.expand_quantized_bins(quantized, reference[:])
    return paddle_kl.safe_entropy(reference, p_sum, expanded, sum(expanded))


def abs_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(np.abs(values), bins=edges)[0]` for uniform `edges`, without sorting.

    numpy takes its O(n) path only for `bins=<count>, range=(lo, hi)`, and builds the edges then as
    linspace(lo, hi, count + 1) in the data's dtype; float64 data makes them exactly the float64
    `edges` PostTrainingQuantization made (checked, else the sorting path runs). float32 -> float64
    is exact, so every value is compared with the same edges as before."""
    count = edges.shape[0] - 1
    data = np.abs(values).astype(np.float64, copy=False)
    lo, hi = float(edges[0]), float(edges[-1])
    if count < 1 or not np.array_equal(np.linspace(lo, hi, count + 1), edges):
        return np.histogram(data, bins=edges)[0]
    return np.histogram(data, bins=count, range=(lo, hi))[0]


def sample_histogram(self: Any) -> None:
    """PostTrainingQuantization._sample_histogram with `abs_histogram` for np.histogram: add each
    quantized activation's |x| histogram of this batch to its running one."""
    utils = importlib.import_module(_UTILS_MODULE)
    for var_name in self._quantized_act_var_name:
        var_tensor = utils.load_variable_data(self._scope, var_name)
        if var_tensor.size == 0 or var_name not in self._sampling_act_histogram:
            self._zero_size_var_names.add(var_name)
            continue
        running = self._sampling_act_histogram[var_name]
        running[0] += abs_histogram(var_tensor, running[1])


def _code_digest(fn: Any) -> str:
    """sha256 of a function's code without its docstring (ast.unparse: layout-independent)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        del body[0]
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()


_paddle_sample_histogram: list[Any] = []   # Paddle's own method, kept when first seen (install replaces it)


def _paddle_originals() -> dict[str, Any]:
    ptq = importlib.import_module(_PTQ_MODULE)
    kl = importlib.import_module(_KL_MODULE)
    current = ptq.PostTrainingQuantization.__dict__["_sample_histogram"]
    if not _paddle_sample_histogram and current is not sample_histogram:
        _paddle_sample_histogram.append(current)
    return {"cal_kl_threshold": kl.cal_kl_threshold, "expand_quantized_bins": kl.expand_quantized_bins,
            "safe_entropy": kl.safe_entropy, "_sample_histogram": _paddle_sample_histogram[0]}


def unverified() -> list[str]:
    """The Paddle functions whose code differs from the versions checked here (empty: install works)."""
    try:
        originals = _paddle_originals()
    except (ImportError, AttributeError, KeyError) as exc:
        return [f"paddle.static.quantization: {exc}"]
    out = []
    for name, fn in originals.items():
        try:
            same = _code_digest(fn) == VERIFIED_CODE[name]
        except (OSError, TypeError, SyntaxError):    # no source shipped
            same = False
        if not same:
            out.append(name)
    return out


def install() -> bool:
    """Use the fast versions in Paddle's PostTrainingQuantization; True if installed. Idempotent."""
    changed = unverified()
    if changed:
        log.warning("fast KL/hist calibration not installed: Paddle's %s differ from the verified code",
                    ", ".join(changed))
        return False
    ptq = importlib.import_module(_PTQ_MODULE)
    ptq.cal_kl_threshold = cal_kl_threshold
    ptq.PostTrainingQuantization._sample_histogram = sample_histogram
    return True


def uninstall() -> None:
    """Paddle's own functions again (the comparison in tests and benchmarks)."""
    ptq = importlib.import_module(_PTQ_MODULE)
    kl = importlib.import_module(_KL_MODULE)
    ptq.cal_kl_threshold = kl.cal_kl_threshold
    ptq.PostTrainingQuantization._sample_histogram = _paddle_originals()["_sample_histogram"]


@contextlib.contextmanager
def paddle_originals() -> Iterator[None]:
    """Run a block with Paddle's own functions, whatever was installed before (restored after)."""
    ptq = importlib.import_module(_PTQ_MODULE)
    saved = ptq.cal_kl_threshold, ptq.PostTrainingQuantization.__dict__["_sample_histogram"]
    uninstall()
    try:
        yield
    finally:
        ptq.cal_kl_threshold = saved[0]
        ptq.PostTrainingQuantization._sample_histogram = saved[1]
