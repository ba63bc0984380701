"""Paddle's PostTrainingQuantization (what PaddleSlim's quant_post_static runs) on in-memory
samples, for the tests that need calibrated thresholds or a calibrated model without the CLI."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import numpy as np


def calibrate(model_dir: str, x: np.ndarray, algo: str, feed: str, batch: int = 16, save_to: str | None = None,
              skip: list[str] | None = None):
    """One calibration of model_dir (model.pdmodel + model.pdiparams) over the samples x (N, ...),
    leaving the tensors in `skip` unquantized; returns the PostTrainingQuantization (its
    _quantized_var_threshold, _sampling_act_histogram), and writes the int8 model to save_to when given."""
    import paddle
    from paddle.static.quantization import PostTrainingQuantization

    from kubeslim_job.calibrate import array_loader

    paddle.enable_static()
    try:
        loader = array_loader(x, feed, batch)
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            ptq = PostTrainingQuantization(executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=model_dir,
                                           model_filename="model.pdmodel", params_filename="model.pdiparams",
                                           data_loader=loader, batch_size=batch, batch_nums=-(-len(x) // batch),
                                           scope=scope, algo=algo, onnx_format=True, skip_tensor_list=skip)
            ptq.quantize()
            if save_to:
                ptq.save_quantized_model(save_to, model_filename="model.pdmodel", params_filename="model.pdiparams")
        return ptq
    finally:
        paddle.disable_static()
