"""Paddle Inference the way Paddle's docs show it, for checking what kubeslim reports: Config(model,
params), enable_mkldnn(), the thread count, and for an int8 model enable_mkldnn_int8(); everything
else left at Paddle's defaults. Independent of kubeslim_job on purpose (it must not share a mistake
with the code it checks); used by bench/plain_inference.py (the speedup reference of
bench-pipeline), kubeslim_dev.zoo's checks and the job tests."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle: libpaddle bundles a clashing zlib

import os
from typing import Any, Callable

import numpy as np


def predictor(model_dir: str | os.PathLike, int8: bool = False, threads: int = 2,
              int8_ops: frozenset[str] | None = None) -> Any:
    """A predictor on model_dir/model.pdmodel + model.pdiparams: oneDNN, int8 kernels with `int8`
    (on the op types `int8_ops` only when given, as a server that copies kubeslim's set runs them)."""
    from paddle.inference import Config, create_predictor

    config = Config(os.path.join(model_dir, "model.pdmodel"), os.path.join(model_dir, "model.pdiparams"))
    config.disable_glog_info()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    if int8:
        config.enable_mkldnn_int8(set(int8_ops)) if int8_ops else config.enable_mkldnn_int8()
    return create_predictor(config)


def feeder(pred: Any) -> Callable[[dict[str, np.ndarray]], None]:
    """A function that copies {input name: batch} into the predictor's inputs (handles looked up
    once, so a timing loop times Paddle and not the lookup)."""
    handles = {n: pred.get_input_handle(n) for n in pred.get_input_names()}

    def feed(arrays: dict[str, np.ndarray]) -> None:
        for name, handle in handles.items():
            x = np.ascontiguousarray(arrays[name])
            handle.reshape(list(x.shape))
            handle.copy_from_cpu(x)
    return feed


def predictor_outputs(model_dir: str | os.PathLike, arrays: dict[str, np.ndarray], batch: int = 4, int8: bool = False,
                      threads: int = 2, int8_ops: frozenset[str] | None = None) -> tuple[list[str], list[list[np.ndarray]]]:
    """The model on `arrays` (every input by name, first axis = samples), `batch` samples a run:
    the output names and, per run, every output."""
    pred = predictor(model_dir, int8, threads, int8_ops)
    feed = feeder(pred)
    inputs, names = pred.get_input_names(), pred.get_output_names()
    n = len(next(iter(arrays.values())))
    runs = []
    for start in range(0, n, batch):
        feed({k: arrays[k][start:start + batch] for k in inputs})
        pred.run()
        runs.append([pred.get_output_handle(o).copy_to_cpu() for o in names])
    return names, runs
