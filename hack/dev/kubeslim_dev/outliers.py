"""A digits CNN whose inner activations carry one massive outlier channel: the model on which plain
per-tensor int8 PTQ really fails its gate and the accuracy-aware fallback has to find the layer.

Why such a model is real, not rigged: large language models and vision transformers develop a few
hidden channels whose activations are 10-1000x larger than the rest ("massive activations",
LLM.int8()'s outlier features). A per-tensor int8 scale is set by the largest value, so every
normal channel of that tensor is rounded to a handful of levels (or to zero) and accuracy collapses,
whatever the calibration algorithm: the outlier channel is a whole channel, far more than the
0.01 % a histogram percentile clips. SmoothQuant fixes it by migrating the scale from the
activations into the next layer's weights; `plant_outlier_channel` applies the same exact
identity in the opposite direction to a network trained normally on scikit-learn's digits:

    conv2(pool(relu(conv1(x))))  ==  conv2'(pool(relu(conv1'(x))))
    conv1' = conv1 with output channel c scaled by a > 0      (relu and max-pool commute with it)
    conv2' = conv2 with the weights reading channel c divided by a

The fp32 function is the same (the caller can check the predictions), the weights and data are
real, and nothing tells kubeslim which layer carries the outlier. Only conv2 sees the outlier
tensor, so keeping that one layer in fp32 recovers the accuracy.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import numpy as np
import paddle
from paddle import nn

from . import digits

# The outlier channel's peak, as a multiple of the largest peak of the other channels: within the
# 10-1000x reported for real LLM activations (at 100x this easy task still survived int8 at 0.976).
OUTLIER_RATIO = 300.0
SEED = 0


class OutlierCNN(nn.Layer):
    """The small CNN of digits.SMALL_CNN_SOURCE with its layers named (conv1, conv2, fc)."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2D(1, width, 3, padding=1)
        self.conv2 = nn.Conv2D(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2D(2)
        self.fc = nn.Linear(2 * width * 7 * 7, num_classes)

    def forward(self, x):
        x = self.pool(nn.functional.relu(self.conv1(x)))
        x = self.pool(nn.functional.relu(self.conv2(x)))
        return self.fc(paddle.flatten(x, 1))


def conv1_peaks(model, images: np.ndarray) -> np.ndarray:
    """Per channel, the largest value of the tensor conv2 reads (pool(relu(conv1(x))))."""
    with paddle.no_grad():
        act = model.pool(nn.functional.relu(model.conv1(paddle.to_tensor(digits.to_tensor(images))))).numpy()
    return act.max(axis=(0, 2, 3))


def plant_outlier_channel(model, images: np.ndarray, ratio: float = OUTLIER_RATIO) -> tuple[int, float]:
    """The function-preserving rescale described above, in place, on the busiest channel (the
    largest peak on `images`), so that its peak is `ratio` times the largest other peak; returns
    (channel, gain)."""
    peaks = conv1_peaks(model, images)
    channel = int(np.argmax(peaks))
    alpha = float(ratio * np.max(np.delete(peaks, channel)) / peaks[channel])
    with paddle.no_grad():
        w1, b1, w2 = model.conv1.weight.numpy(), model.conv1.bias.numpy(), model.conv2.weight.numpy()
        w1[channel] *= alpha
        b1[channel] *= alpha
        w2[:, channel] /= alpha
        model.conv1.weight.set_value(w1)
        model.conv1.bias.set_value(b1)
        model.conv2.weight.set_value(w2)
    return channel, alpha


def trained(data: dict[str, np.ndarray], epochs: int = 6):
    """(the trained CNN, a copy with the outlier channel planted, (channel, gain)): the same
    initialisation and training every time (seeded)."""
    paddle.seed(SEED)
    plain = digits.train(OutlierCNN(), data, epochs=epochs, seed=SEED)
    outlier = OutlierCNN()
    outlier.set_state_dict(plain.state_dict())
    outlier.eval()
    planted = plant_outlier_channel(outlier, data["train_x"])
    return plain, outlier, planted


def save_inference(model, path_prefix: str) -> None:
    """paddle.jit.save as an `inference` model: <prefix>.pdmodel + <prefix>.pdiparams."""
    paddle.jit.save(model, path_prefix,
                    input_spec=[paddle.static.InputSpec([None, *digits.INPUT_SHAPE], "float32", "image")])


def conv2_weight(model_file: str) -> str:
    """The weight name of conv2 (the one layer that reads the outlier tensor) in an exported model."""
    paddle.enable_static()
    try:
        with open(model_file, "rb") as fh:
            program = paddle.static.Program.parse_from_string(fh.read())
    finally:
        paddle.disable_static()
    convs = [op.input("Filter")[0] for op in program.global_block().ops if op.type == "conv2d"]
    return convs[1]


def seed(s3, bucket: str, prefix: str, calib_samples: int = 256) -> dict:
    """Train the CNN, plant the outlier, upload it as an `inference` model with a calibration npz
    (the first `calib_samples` training digits) and the held-out npz under s3://bucket/prefix/.
    Returns the URIs, the fp32 top-1 of both models computed here, and conv2's weight name."""
    import tempfile

    d = digits.load()
    plain, outlier, (channel, gain) = trained(d)
    pred_plain, pred_outlier = digits.predict(plain, d["test_x"]), digits.predict(outlier, d["test_x"])
    with tempfile.TemporaryDirectory() as tmp:
        save_inference(outlier, f"{tmp}/model")
        for ext in ("pdmodel", "pdiparams"):
            s3.upload_file(f"{tmp}/model.{ext}", bucket, f"{prefix}/model/model.{ext}")
        layer = conv2_weight(f"{tmp}/model.pdmodel")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/calibration.npz",
                  Body=digits.npz_bytes(d["train_x"][:calib_samples], d["train_y"][:calib_samples]))
    s3.put_object(Bucket=bucket, Key=f"{prefix}/evaluation.npz", Body=digits.npz_bytes(d["test_x"], d["test_y"]))
    b = f"s3://{bucket}/{prefix}"
    return {
        "model": {"inference": {"uri": f"{b}/model/"}},
        "calibration": {"uri": f"{b}/calibration.npz", "format": "npz"},
        "evaluation": {"uri": f"{b}/evaluation.npz", "format": "npz"},
        "fp32_top1": float((pred_outlier == d["test_y"]).mean()),
        "same_predictions": float((pred_plain == pred_outlier).mean()),
        "outlier_layer": layer, "channel": channel, "gain": gain, "eval_samples": len(d["test_y"]),
    }
