"""The whole path as a user walks it: kubectl apply → the operator installed by Helm (a pod on the
real node, from the image our Dockerfile builds, with the chart's ServiceAccount token) → Job →
scheduler → kubelet → real export, calibration and verification in job-image containers against
the devenv S3.

One Helm release per session, watching only the namespace of this session, so it never competes
with operators of other tiers or a `make demo` release."""
from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from kubeslim_dev import demo
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
    subprocess.run([*helm, "install", release, str(REPO / "helm" / "kubeslim"), "-n", ns, "--create-namespace",
                    "-f", str(REPO / "hack" / "demo" / "values-devenv.yaml"), "-f", str(node_images.values_file),
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
def digits_manifest(s3_env, seeded):
    """examples/digits.yaml as a user would apply it, pointed at the e2e bucket and the devenv S3."""
    def make(name: str, **spec_overrides) -> dict:
        doc = demo.example_manifest(name, BUCKET, s3_env["AWS_ENDPOINT_URL"])
        for path, value in spec_overrides.items():
            set_path(doc["spec"], path, value)
        return doc
    return make
