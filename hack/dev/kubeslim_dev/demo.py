"""The demo's data in S3 and its manifest: the wide CNN of examples/digits.yaml trained on
scikit-learn's digits at SIZE x SIZE, its code and weights, a calibration set (npz) and a held-out
evaluation set (PNG files + val_list.txt). Used by hack/demo/seed.py (make demo), bench/bench_e2e.py
and the e2e tests."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle: libpaddle's bundled zlib clashes otherwise

import tempfile
import time

import yaml

from . import digits
from .devenv import REPO

SIZE = digits.SIZE  # examples/digits.yaml's inputShape and preprocess: the digits upscaled to this
EPOCHS = 3          # the held-out top-1 the wide CNN reaches in these; more only costs the demo's wall time


def exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False


def example_manifest(name: str, bucket: str, endpoint: str) -> dict:
    """examples/digits.yaml as a user would apply it, pointed at `bucket` and `endpoint`, writing
    its output under s3://bucket/out/<name>/."""
    doc = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text().replace("s3://kubeslim-demo/", f"s3://{bucket}/"))
    doc["metadata"]["name"] = name
    doc["spec"]["storage"]["endpoint"] = endpoint
    doc["spec"]["output"]["uri"] = f"s3://{bucket}/out/{name}/"
    return doc


def seed(s3, b: str, p: str) -> None:
    """Upload the digits CNN (code + weights) and its data under s3://b/p/, keeping what exists
    (the keys name the model and the size, so objects a different demo model left are not reused)."""
    if b not in {x["Name"] for x in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=b)
    data = digits.load(SIZE)
    code_key, weights_key = f"{p}/model/wide_cnn.py", f"{p}/model/wide_cnn-{SIZE}.pdparams"
    if exists(s3, b, weights_key) and exists(s3, b, code_key):
        print(f"  model: s3://{b}/{weights_key} already there")
    else:

        import paddle

        t0 = time.perf_counter()
        model = digits.train(digits.wide_cnn(), data, epochs=EPOCHS)
        seconds = time.perf_counter() - t0
        acc = float((digits.predict(model, data["test_x"]) == data["test_y"]).mean())
        with tempfile.TemporaryDirectory() as tmp:
            paddle.save(model.state_dict(), f"{tmp}/w.pdparams")
            s3.upload_file(f"{tmp}/w.pdparams", b, weights_key)
        s3.put_object(Bucket=b, Key=code_key, Body=digits.WIDE_CNN_SOURCE.encode())
        print(f"  model: trained the wide CNN ({SIZE}x{SIZE} input) in {seconds:.0f} s, fp32 top-1 {acc:.4f} on "
              f"{len(data['test_y'])} held-out digits (in-process check)")

    calib_key = f"{p}/calibration-{SIZE}.npz"
    if not exists(s3, b, calib_key):
        s3.put_object(Bucket=b, Key=calib_key, Body=digits.npz_bytes(data["train_x"], data["train_y"]))
    print(f"  calibration: s3://{b}/{calib_key} ({len(data['train_y'])} images, npz)")
    val = f"{p}/val-{SIZE}"
    if not exists(s3, b, f"{val}/val_list.txt"):
        digits.upload_image_list(s3, b, val, data["test_x"], data["test_y"], list_file="val_list.txt")
    print(f"  evaluation: s3://{b}/{val}/ ({len(data['test_y'])} PNG images + val_list.txt)")
