"""The CPU job image runs Paddle 3.3 (Dockerfile job-cpu) while the dev venv and the GPU image stay
on Paddle 2.6.2. What must hold on the real node: the image's Paddle is 3.3.x with PIR off before
paddle loads, so paddle.jit.save writes a legacy .pdmodel (never PIR JSON); and the int8 model
that image quantizes and publishes runs on Paddle 2.6 Inference (this session's .venv) with oneDNN
int8, giving the answers the job's own Paddle 3 verification reported."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from kubeslim_dev import digits
from tests.conftest import wait_until
from tests.e2e.conftest import split_s3_uri
from tests.e2e.test_quantizationjob_e2e import apply, get_qj

pytestmark = pytest.mark.timeout(900)

MARK = "KUBESLIM-PROBE "
# Run as the image's python. The image's own ENV is read first, then the CLI module is imported the
# way the entrypoint does, then a layer with no user source (a Sequential) is saved by jit.save.
PROBE = f"""
import os, json, importlib.metadata as md
env_flag = os.environ.get("FLAGS_enable_pir_api")
import kubeslim_job.cli
import paddle
net = paddle.nn.Sequential(paddle.nn.Conv2D(1, 4, 3), paddle.nn.ReLU(), paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 10))
net.eval()
paddle.jit.save(net, "/tmp/probe/model", input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")])
files = sorted(os.listdir("/tmp/probe"))
head = open("/tmp/probe/model.pdmodel", "rb").read(64) if "model.pdmodel" in files else b""
print({MARK!r} + json.dumps({{"paddle": paddle.__version__, "paddleslim": md.version("paddleslim"),
      "numpy": md.version("numpy"), "image_env_flag": env_flag,
      "flag": paddle.get_flags(["FLAGS_enable_pir_api"])["FLAGS_enable_pir_api"],
      "files": files, "head": head.hex()}}))
"""


def _probe_pod(name: str, image: str, scheduling: dict) -> dict:
    """A pod shaped like the operator's job containers (numeric non-root user, read-only root, /tmp an
    emptyDir, the node's images only) whose one container runs PROBE with the image's python."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never", **scheduling,
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "-c", PROBE],
                "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def test_job_cpu_image_runs_paddle_3_3_and_writes_legacy_programs(node_images, real_node, e2e_namespace, kubectl):
    name = f"paddle-probe-{uuid.uuid4().hex[:6]}"
    apply(kubectl, e2e_namespace, _probe_pod(name, node_images.job, real_node.scheduling))

    def finished():
        pod = json.loads(kubectl("-n", e2e_namespace, "get", "pod", name, "-o", "json").stdout)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = wait_until(finished, timeout=300, interval=1, what=f"pod {name} to finish")
    logs = kubectl("-n", e2e_namespace, "logs", name).stdout
    kubectl("-n", e2e_namespace, "delete", "pod", name, "--wait=false", check=False)
    assert pod["status"]["phase"] == "Succeeded", logs[-3000:]
    report = json.loads(next(line[len(MARK):] for line in logs.splitlines() if line.startswith(MARK)))
    assert report["paddle"].startswith("3.3."), report
    assert report["paddleslim"] == "2.6.0"
    assert int(report["numpy"].split(".")[0]) == 1, report      # what every job image shares
    assert report["image_env_flag"] == "0" and report["flag"] is False, report
    # legacy protobuf program + params; no PIR model.json
    assert "model.pdmodel" in report["files"] and "model.pdiparams" in report["files"], report
    assert not any(f.endswith(".json") for f in report["files"]), report
    assert not bytes.fromhex(report["head"]).lstrip().startswith(b"{"), report


def _paddle_2_6_int8_predictions(model_path: str, params_path: str, images: np.ndarray) -> np.ndarray:
    """Class predictions of the int8 model under this session's Paddle (2.6) Inference, oneDNN int8."""
    import paddle
    from paddle.inference import Config, create_predictor

    assert paddle.__version__.startswith("2.6."), f"the dev venv must run paddle 2.6, found {paddle.__version__}"
    config = Config(model_path, params_path)
    config.disable_gpu()
    config.enable_mkldnn()
    config.enable_mkldnn_int8()
    config.set_cpu_math_library_num_threads(1)
    config.disable_glog_info()
    predictor = create_predictor(config)
    preds = []
    for start in range(0, len(images), 64):
        batch = np.ascontiguousarray(images[start:start + 64])
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(batch)
        predictor.run()
        preds.append(predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu().argmax(1))
    return np.concatenate(preds)


def test_int8_model_made_by_paddle_3_runs_on_paddle_2_6(operator_release, e2e_namespace, digits_manifest, kubectl,
                                                         seeded, tmp_path):
    doc = digits_manifest("paddle3-int8", **{"quantization.algos": ["avg"]})
    apply(kubectl, e2e_namespace, doc)
    kubectl("-n", e2e_namespace, "wait", "--for=condition=Ready", "qj/paddle3-int8", "--timeout=600s", timeout=620)
    st = get_qj(kubectl, e2e_namespace, "paddle3-int8")["status"]
    assert st["phase"] == "Succeeded", st
    assert st["results"]["backend"] == "cpu-onednn-int8"

    paths = {}
    for ext in ("pdmodel", "pdiparams"):
        bucket, key = split_s3_uri(st["artifacts"]["model"].rsplit(".", 1)[0] + f".{ext}")
        paths[ext] = str(tmp_path / f"model.{ext}")
        seeded.download_file(bucket, key, paths[ext])
    # The example's evaluation set is digits' held-out split as PNGs, preprocessed to exactly this.
    data = digits.load(digits.SIZE)
    images, labels = digits.to_tensor(data["test_x"]), data["test_y"]
    preds = _paddle_2_6_int8_predictions(paths["pdmodel"], paths["pdiparams"], images)
    n = len(labels)
    correct_here, correct_in_job = int((preds == labels).sum()), round(st["results"]["int8"]["top1"] * n)
    # Different oneDNN builds round a few borderline samples differently; anything more is a broken model.
    assert abs(correct_here - correct_in_job) <= max(2, n // 100), (correct_here, correct_in_job, n)


# A model whose forward calls sigmoid: Paddle 3.3 cannot trace it with PIR off (measured), Paddle 2.6 can.
SIGMOID_CNN_SOURCE = '''
import paddle
from paddle import nn


class GatedCNN(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2D(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 28 * 28, num_classes)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(paddle.flatten(y * paddle.nn.functional.sigmoid(y), 1))


def build_model(num_classes=10):
    return GatedCNN(num_classes=num_classes)
'''


def test_a_model_paddle_3_cannot_write_as_legacy_fails_clearly(operator_release, e2e_namespace, digits_manifest,
                                                               kubectl, seeded):
    from tests.e2e.conftest import BUCKET

    key = f"code/{e2e_namespace}/sigmoid_cnn.py"
    seeded.put_object(Bucket=BUCKET, Key=key, Body=SIGMOID_CNN_SOURCE.encode())
    doc = digits_manifest("paddle3-sigmoid", **{"quantization.algos": ["avg"]})
    doc["spec"]["model"]["custom"] = {"code": f"s3://{BUCKET}/{key}", "factory": "build_model", "kwargs": {"num_classes": 10}}
    apply(kubectl, e2e_namespace, doc)

    def final():
        st = get_qj(kubectl, e2e_namespace, "paddle3-sigmoid").get("status", {})
        return st if st.get("phase") in ("Failed", "Succeeded") else None

    st = wait_until(final, timeout=600, interval=1, what="paddle3-sigmoid to finish")
    assert st["phase"] == "Failed" and st["reason"] == "LegacyExportUnsupported", st
    assert st["stage"] == "Exporting", st
    for words in ("spec.model.custom", "Paddle 3.3.", "sigmoid()", "Paddle 2.6", "spec.model.inference"):
        assert words in st["message"], (words, st["message"])
