"""spec.verification.custom: the user's own metric, a Python file from S3 run in the job pod.

`function(outputs, data)` is called once per model with `outputs` = {output name: the model's
output over the evaluation set} (batches joined along the first axis) and `data` = every array of
the evaluation npz ({name: array}; an array with one row per sample, as many rows as the model's
input arrays, is cut to the evaluated samples), and must return a real number, higher is better. What goes wrong in the user's code is
BadInput MetricError naming the file and the line (from the traceback's last frame in that
file); the traceback itself goes to the pod log.
"""
from __future__ import annotations

import importlib.util
import math
import numbers
import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from kubeslim_api import reasons
from kubeslim_api.spec import QuantizationJobSpec

from .errors import BadInput, last_line
from .storage import Storage, parse_uri
from .workdir import WorkDir

FIELD = "spec.verification.custom"


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., Any]
    path: str                 # the local file, as tracebacks name it
    uri: str                  # the file in S3, as messages name it
    data: dict[str, np.ndarray]

    def __call__(self, outputs: dict[str, np.ndarray], model: str) -> float:
        """The metric of one model's outputs (`model` names it in messages: fp32, int8 hist...)."""
        try:
            value = self.fn(outputs, self.data)
        except Exception as exc:
            traceback.print_exc()
            raise BadInput(reasons.METRIC_ERROR, f"{FIELD}.code {self.uri}{self._line(exc)}: {self.fn.__name__} raised "
                                                 f"{last_line(exc)} on the {model} outputs; fix the function") from None
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise BadInput(reasons.METRIC_ERROR, f"{FIELD}.code {self.uri}: {self.fn.__name__} returned {value!r:.80} "
                                                 f"({type(value).__name__}) for the {model} outputs; it must return a "
                                                 "finite number, higher is better")
        return round(float(value), 6)

    def _line(self, exc: BaseException) -> str:
        """' line N' of the deepest frame in the user's file (nothing when the error is not in it)."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == self.path]
        return f" line {frames[-1].lineno}" if frames else ""


def load(spec: QuantizationJobSpec, storage: Storage, work: WorkDir, samples: int, inputs: list[str]) -> Metric:
    """Fetch and import the metric's file and the evaluation npz: the arrays with one row per sample
    (as many as the arrays of the model `inputs`, or `images`) cut to the first `samples`."""
    cfg = spec.verification.custom
    assert cfg is not None
    path = os.path.abspath(os.path.join(work.src, "metric_" + (os.path.basename(parse_uri(cfg.code)[1]) or "metric.py")))
    storage.download(cfg.code, path, f"{FIELD}.code")
    try:
        modspec = importlib.util.spec_from_file_location("kubeslim_user_metric", path)
        module = importlib.util.module_from_spec(modspec)
        modspec.loader.exec_module(module)
    except Exception as exc:
        traceback.print_exc()
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == path]
        lineno = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else (lines[-1] if lines else None)
        raise BadInput(reasons.METRIC_ERROR, f"{FIELD}.code {cfg.code}{f' line {lineno}' if lineno else ''}: importing it "
                                             f"failed ({last_line(exc)})") from None
    fn = getattr(module, cfg.function, None)
    if not callable(fn):
        raise BadInput(reasons.METRIC_ERROR, f"{FIELD}.code {cfg.code}: has no function '{cfg.function}' "
                                             f"({FIELD}.function)")
    npz = os.path.join(work.src, "evaluation.npz")
    storage.download(spec.data.evaluation.uri, npz, "spec.data.evaluation.uri")
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    fed = [arrays[k] for k in (*inputs, "images") if k in arrays and arrays[k].ndim]
    total = fed[0].shape[0] if fed else None
    data = {k: a[:samples] if a.ndim and a.shape[0] == total else a for k, a in arrays.items()}
    return Metric(fn, path, cfg.code, data)
