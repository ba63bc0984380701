"""Real data and real models for the job tests, the demo and the pipeline benchmark.

scikit-learn's bundled digits (1797 8x8 images, 10 classes) upscaled to 28x28 uint8 (or another
size), split into a fixed train / held-out set; a small CNN (also the `custom` model's code,
uploaded verbatim) and paddle.vision's LeNet, trained for a few seconds (about 0.95-0.99 top-1 on
the held-out images: tests compare with their own evaluation of the same model, never with a
fixed figure); and the demo's wider CNN (WIDE_CNN_SOURCE), big enough that oneDNN's int8
convolutions beat fp32 on a 2-core CPU, which the 20k-parameter small CNN never did.

Training is deterministic: the same seed gives the same weights in every run on one machine (a
different CPU may still round differently, and its oneDNN kernels differ).
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle (and sklearn after paddle would segfault otherwise)

import io
import os
from typing import Any

import numpy as np

from .manifests import set_path

SIZE = 28
MEAN, STD = [0.5], [0.5]
INPUT_SHAPE = [1, SIZE, SIZE]

# The `custom` model source: uploaded to S3 as a file and exec'd here to train the same network.
SMALL_CNN_SOURCE = '''
import paddle
from paddle import nn


class SmallCNN(nn.Layer):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2D(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
            nn.Conv2D(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
        )
        self.fc = nn.Linear(2 * width * 7 * 7, num_classes)

    def forward(self, x):
        return self.fc(paddle.flatten(self.features(x), 1))


def build_model(num_classes=10, width=16):
    return SmallCNN(num_classes=num_classes, width=width)
'''

# The demo's model. Width is what int8 needs here, not input size: per convolution oneDNN adds a
# quantize and a dequantize step whose cost grows with the channels C per pixel, while the
# arithmetic int8 speeds up grows with C_in x C_out (and on a CPU without VNNI, AVX2 only, int8
# arithmetic is at most about 1.3x fp32's). In the small CNN (one 16->32 convolution that matters)
# the steps cost more than int8 saves; here 64->128 and 128->128 convolutions at 7x7 carry most of
# the work, cheaply enough to train in seconds. (Upscaling the 8x8 digits further would add pixels,
# not information.)
WIDE_CNN_SOURCE = '''
import paddle
from paddle import nn


class WideCNN(nn.Layer):
    def __init__(self, num_classes=10, width=32, size=28):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2D(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
            nn.Conv2D(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
            nn.Conv2D(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2D(4 * w, 4 * w, 3, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(4 * w * (size // 4) ** 2, num_classes)

    def forward(self, x):
        return self.fc(paddle.flatten(self.features(x), 1))


def build_model(num_classes=10, width=32, size=28):
    return WideCNN(num_classes=num_classes, width=width, size=size)
'''


def load(size: int = SIZE) -> dict[str, np.ndarray]:
    """uint8 images (N, size, size) and int64 labels, split 70/30 with a fixed seed."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.stack([np.asarray(Image.fromarray((im * (255 / 16)).astype(np.uint8)).resize((size, size), Image.BILINEAR))
                     for im in d.images])
    labels = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    n_train = int(0.7 * len(labels))
    tr, te = order[:n_train], order[n_train:]
    return {"train_x": imgs[tr], "train_y": labels[tr], "test_x": imgs[te], "test_y": labels[te]}


def to_tensor(imgs: np.ndarray) -> np.ndarray:
    """The spec's preprocessing for these images (no resize: they are already 28x28), done by hand."""
    x = imgs.astype(np.float32)[:, None, :, :] / 255.0
    return (x - MEAN[0]) / STD[0]


def from_source(source: str, name: str, seed: int = 0):
    """build_model() of a model source, imported from a real file (paddle.jit.save reads the source),
    its weights initialised from `seed`."""
    import importlib.util
    import tempfile

    import paddle

    path = os.path.join(tempfile.mkdtemp(prefix="kubeslim-cnn-"), f"{name}.py")
    with open(path, "w") as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location(f"kubeslim_test_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The initial weights decide the trained model's accuracy as much as the training does: seeded
    # right before they are drawn, so the same seed gives the same model in every process.
    paddle.seed(seed)
    return module.build_model(num_classes=10)


def small_cnn(seed: int = 0):
    return from_source(SMALL_CNN_SOURCE, "small_cnn", seed)


def wide_cnn(seed: int = 0):
    return from_source(WIDE_CNN_SOURCE, "wide_cnn", seed)


def lenet(seed: int = 0):
    import paddle

    paddle.seed(seed)
    return paddle.vision.models.LeNet(num_classes=10)


def train(model, data: dict[str, np.ndarray], epochs: int = 8, seed: int = 0):
    """Adam on the training split in shuffled batches of 64. Deterministic: the shuffle comes from
    `seed`, and Paddle's CPU kernels run on one thread (a multi-threaded reduction sums the
    gradients in an order that changes with the thread count, and so would the trained weights).
    Build the model with the same kind of seed (small_cnn(seed), ...) for a model that is the same
    in every run: identical weights, identical accuracy."""
    import paddle

    paddle.seed(seed)
    paddle.base.core.set_num_threads(1)
    x, y = to_tensor(data["train_x"]), data["train_y"]
    opt = paddle.optimizer.Adam(learning_rate=2e-3, parameters=model.parameters())
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        idx = rng.permutation(len(y))
        for i in range(0, len(y), 64):
            b = idx[i:i + 64]
            loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(x[b])), paddle.to_tensor(y[b]))
            loss.backward()
            opt.step()
            opt.clear_grad()
    model.eval()
    return model


def predict(model, imgs: np.ndarray) -> np.ndarray:
    import paddle

    with paddle.no_grad():
        return np.concatenate([model(paddle.to_tensor(to_tensor(imgs[i:i + 256]))).numpy().argmax(1)
                               for i in range(0, len(imgs), 256)])


def npz_bytes(imgs: np.ndarray, labels: np.ndarray, layout: str = "NHW", compressed: bool = False) -> bytes:
    arr = {"NHW": imgs, "NCHW": imgs[:, None], "NHWC": imgs[:, :, :, None]}[layout]
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, images=arr, labels=labels)
    return buf.getvalue()


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def upload_image_list(s3, bucket: str, prefix: str, imgs: np.ndarray, labels: np.ndarray, list_file: str = "list.txt",
                      workers: int = 8) -> int:
    """PNG files under prefix/img/ and a list file of "img/NNNNN.png label"; returns bytes uploaded."""
    from concurrent.futures import ThreadPoolExecutor

    lines = [f"img/{i:05d}.png {int(y)}" for i, y in enumerate(labels)]
    blobs = [png_bytes(im) for im in imgs]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"{prefix}/img/{i:05d}.png", Body=blobs[i]),
                      range(len(blobs))))
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{list_file}", Body=("\n".join(lines) + "\n").encode())
    return sum(map(len, blobs))


def manifest(name: str, model: dict[str, Any], calib: dict[str, Any], evaluation: dict[str, Any], output: str,
             algos: list[str], endpoint: str | None = None, batch_size: int = 32, batch_nums: int = 2,
             max_drop: float = 0.02, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {**model, **({} if "inference" in model else {"inputShape": INPUT_SHAPE})},
        "data": {"calibration": calib, "evaluation": evaluation,
                 "preprocess": {"resizeShort": SIZE, "crop": SIZE, "mean": MEAN, "std": STD}},
        "quantization": {"algos": algos, "batchSize": batch_size, "batchNums": batch_nums},
        "verification": {"metric": "top1", "maxAccuracyDrop": max_drop, "batchSize": 64, "backend": "auto"},
        "output": {"uri": output},
        "storage": {"addressingStyle": "path", **({"endpoint": endpoint} if endpoint else {})},
    }
    for path, value in extra.items():
        set_path(spec, path, value)
    return {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": name}, "spec": spec}
