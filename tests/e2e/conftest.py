"""The whole path as a user walks it: kubectl apply → the operator installed by Helm (a pod on the
real node, from the image our Dockerfile builds, with the chart's ServiceAccount token) → Job →
scheduler → kubelet → real export, calibration and verification in job-image containers against
the devenv S3.

One Helm release per session, watching only the namespace of this session, so it never competes
with operators of other tiers or a `make demo` release."""
from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kubeslim_dev import demo, digits
from kubeslim_dev.manifests import set_path

REPO = Path(__file__).resolve().parents[2]

BUCKET = "kubeslim-e2e"


@pytest.fixture(scope="session")
def e2e_namespace(devenv, kubectl, s3_env):
    ns = f"kubeslim-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
              "stringData": {"AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"]}}
    kubectl("apply", "-f", "-", input=json.dumps(secret))
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator_release(devenv, node_images, e2e_namespace, kubectl):
    release, ns = f"e2e-{e2e_namespace[-6:]}", f"{e2e_namespace}-system"
    helm = [devenv.helm, "--kubeconfig", str(devenv.kubeconfig)]
    # From the devenv registry, as a user installs the published chart.
    subprocess.run([*helm, "install", release, *node_images.helm_chart_args(), "-n", ns, "--create-namespace",
                    "-f", str(REPO / "devenv" / "chart-values.yaml"), "-f", str(node_images.values_file),
                    "--set", f"operator.watchNamespaces={{{e2e_namespace}}}", "--wait", "--timeout", "180s"],
                   check=True, capture_output=True, text=True)
    yield {"release": release, "namespace": ns, "serviceAccount": f"{release}-kubeslim"}
    subprocess.run([*helm, "uninstall", release, "-n", ns, "--wait"], capture_output=True)
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="session")
def seeded(s3):
    """The demo's model and data, in a bucket of the e2e tier."""
    demo.seed(s3, BUCKET, "digits")
    return s3


@pytest.fixture
def digits_manifest(s3_env, seeded, e2e_namespace):
    """examples/digits.yaml as a user would apply it, pointed at the e2e bucket and the devenv S3.
    Its output goes under a prefix of this session: an artifact an earlier run (or session) left
    under the same name can never pass for this run's."""
    def make(name: str, **spec_overrides) -> dict:
        doc = demo.example_manifest(name, BUCKET, s3_env["AWS_ENDPOINT_URL"])
        doc["spec"]["output"]["uri"] = f"s3://{BUCKET}/out/{e2e_namespace}/{name}/"
        for path, value in spec_overrides.items():
            set_path(doc["spec"], path, value)
        return doc
    return make


def applied_until_final(kubectl, namespace: str, doc: dict, timeout: float) -> dict:
    """Apply a QuantizationJob; its status once final (Succeeded or Failed), or the last one seen
    when `timeout` seconds pass first (the caller's assertion on the phase then shows it)."""
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(doc))
    name = doc["metadata"]["name"]
    deadline = time.monotonic() + timeout
    while True:
        st = json.loads(kubectl("-n", namespace, "get", "qj", name, "-o", "json").stdout).get("status") or {}
        if st.get("phase") in ("Succeeded", "Failed") or time.monotonic() > deadline:
            return st
        time.sleep(2)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return bucket, key


@pytest.fixture(scope="session")
def fp32_evaluated_here(seeded, s3_env, tmp_path_factory) -> dict:
    """{"top1", "samples"} of the fp32 model examples/digits.yaml names, evaluated by this test
    session and not by the job: the model's code and weights from the e2e bucket run in dygraph
    Paddle, on the evaluation PNG files of the same bucket decoded with PIL and normalised by hand.
    Nothing of the job image's export, data readers or Paddle Inference is involved, so the job's
    fp32 top-1 must count the same correct images; whatever accuracy this training reached."""
    import paddle
    from PIL import Image

    spec = demo.example_manifest("fp32-evaluated-here", BUCKET, s3_env["AWS_ENDPOINT_URL"])["spec"]
    # digits.to_tensor is this preprocessing for images that are already SIZE x SIZE.
    assert spec["data"]["preprocess"] == {"resizeShort": digits.SIZE, "crop": digits.SIZE, "mean": digits.MEAN, "std": digits.STD}
    custom = spec["model"]["custom"]

    def get(uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        return seeded.get_object(Bucket=bucket, Key=key)["Body"].read()

    weights = tmp_path_factory.mktemp("fp32-evaluated-here") / "weights.pdparams"
    weights.write_bytes(get(custom["weights"]))
    model = digits.from_source(get(custom["code"]).decode(), "e2e_digits_model")
    model.set_state_dict(paddle.load(str(weights)))
    model.eval()

    evaluation = spec["data"]["evaluation"]
    root = evaluation["uri"].rstrip("/") + "/"
    entries = [line.split() for line in get(root + evaluation["listFile"]).decode().splitlines() if line.strip()]
    with ThreadPoolExecutor(8) as pool:
        pngs = list(pool.map(lambda entry: get(root + entry[0]), entries))
    images = np.stack([np.asarray(Image.open(io.BytesIO(png))) for png in pngs])
    labels = np.array([int(entry[1]) for entry in entries])
    correct = int((digits.predict(model, images) == labels).sum())
    return {"top1": correct / len(labels), "samples": len(labels)}
