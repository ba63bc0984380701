"""Fixtures shared by every test tier.

Tiers are marked by directory (tests/unit -> ``unit``, tests/cluster -> ``cluster``,
tests/e2e -> ``e2e``); tests elsewhere must set ``pytestmark`` to one tier, or collection stops.
tests/devenv holds the dev environment's own tests (devenv/README.md), apart from the product's;
the product's tests reach the devenv only through that contract.
``pytest -m unit`` runs without any process outside pytest.

Cluster and e2e tests talk only to the local devenv (``make devenv``): the ``devenv`` session
fixture uses a running one or starts it, and refuses any kubeconfig that devenv did not write,
so a test can never touch a real cluster through a stray KUBECONFIG or ~/.kube/config.

    kubeconfig  path (str) of .devenv/kubeconfig
    k8s         kubernetes.client.ApiClient for the devenv admin (system:masters)
    namespace   a fresh namespace (str) per test, its default ServiceAccount present; deleted after
    kubectl     kubectl(*args, input=None, check=True, timeout=120) -> CompletedProcess (text)
                running our pinned kubectl with the devenv kubeconfig
    s3_env      {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    s3          boto3 S3 client for the devenv's S3 server (path-style addressing)
    bucket      a fresh, empty bucket name (str) per test; emptied and deleted after
    wait_for    wait_for(predicate, timeout=60, what="...") -> the predicate's first truthy value

Tier-specific fixtures belong in tests/<tier>/conftest.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from kubeslim_dev.devenv import (DEVENV_DIR, DevenvCommandFailed, check_devenv_kubeconfig, is_up, push_images, remove_bucket,
                                 s3_client)
from kubeslim_dev.devenv import info as devenv_info
from kubeslim_dev.devenv import s3_env as devenv_s3_env

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "cluster", "e2e")
TEST_NAMESPACE_LABEL = "kubeslim.io/test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = []
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except (ValueError, IndexError):
            tier = None
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        elif not any(item.get_closest_marker(t) for t in TIERS):
            unmarked.append(item.nodeid)
    # A test without a tier would silently drop out of `pytest -m unit` and friends.
    if unmarked:
        raise pytest.UsageError(f"tests without a tier marker ({', '.join(TIERS)}); put them in tests/<tier>/ "
                                f"or set pytestmark: {', '.join(unmarked[:5])}{' ...' if len(unmarked) > 5 else ''}")


@dataclass(frozen=True)
class Devenv:
    dir: Path
    id: str
    kubeconfig: Path
    kubectl: str
    helm: str
    s3_env: dict[str, str]
    info: dict[str, Any]


@pytest.fixture(scope="session")
def devenv() -> Devenv:
    """The running devenv, started with `make devenv` if it is not up (set
    KUBESLIM_NO_DEVENV_START=1 to fail instead)."""
    if not is_up():
        if os.environ.get("KUBESLIM_NO_DEVENV_START"):
            pytest.fail("the devenv is not running (KUBESLIM_NO_DEVENV_START is set): run `make devenv`")
        # Output goes to the terminal (not captured): a cold start may build tools for many minutes.
        proc = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "devenv"])
        if proc.returncode != 0:
            pytest.fail(f"`make devenv` failed (exit {proc.returncode}); see its output above")
    kubeconfig = DEVENV_DIR / "kubeconfig"
    devenv_id = check_devenv_kubeconfig(kubeconfig)
    info = devenv_info(DEVENV_DIR)
    s3_env = devenv_s3_env(DEVENV_DIR)
    # Anything in-process that loads "the" kubeconfig (kopf, kubernetes.config) gets the devenv's.
    os.environ["KUBECONFIG"] = str(kubeconfig)
    return Devenv(DEVENV_DIR, devenv_id, kubeconfig, info["bin"]["kubectl"], info["bin"]["helm"], s3_env, info)


@pytest.fixture(scope="session")
def kubeconfig(devenv: Devenv) -> str:
    return str(devenv.kubeconfig)


@pytest.fixture(scope="session")
def k8s(devenv: Devenv):
    from kubernetes import config

    check_devenv_kubeconfig(devenv.kubeconfig)
    client = config.new_client_from_config(config_file=str(devenv.kubeconfig))
    yield client
    client.close()


@dataclass(frozen=True)
class NodeImages:
    """The images the devenv built from this checkout and pushed to the devenv registry, as
    repository@digest (the job image is on the node already: pulled ahead from the registry)."""
    operator: str
    job: str
    values_file: Path       # Helm values that select them by digest, with the chart's pullPolicy
    chart: str              # oci://<registry>/charts/kubeslim: this checkout's chart, pushed beside them
    chart_version: str

    def helm_chart_args(self) -> list[str]:
        """The chart arguments of `helm install|upgrade` as a user passes them for an OCI chart
        (plain http: the devenv registry has no TLS)."""
        return [self.chart, "--version", self.chart_version, "--plain-http"]


@pytest.fixture(scope="session")
def node_images(devenv: Devenv) -> NodeImages:
    """Current images: rebuilt first if the Dockerfile, packaging or code changed since the devenv
    built them (seconds when nothing did)."""
    try:
        push_images()
    except DevenvCommandFailed as err:
        pytest.fail(f"{err}; see its output above")
    env = dict(line.split("=", 1) for line in (devenv.dir / "images.env").read_text().splitlines() if "=" in line)
    return NodeImages(env["KUBESLIM_OPERATOR_IMAGE"], env["KUBESLIM_JOB_IMAGE"], devenv.dir / "values-images.yaml",
                      env["KUBESLIM_CHART"], env["KUBESLIM_CHART_VERSION"])


@dataclass(frozen=True)
class RealNode:
    name: str
    ip: str
    scheduling: dict[str, Any]   # spec.scheduling of a QuantizationJob that must run on this node


@pytest.fixture(scope="session")
def real_node(devenv: Devenv) -> RealNode:
    node = devenv.info["node"]
    return RealNode(node["name"], node["ip"], {
        "nodeSelector": {"kubernetes.io/hostname": node["name"]},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]})


@pytest.fixture(scope="session")
def kubectl(devenv: Devenv) -> Callable[..., subprocess.CompletedProcess]:
    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [devenv.kubectl, "--kubeconfig", str(devenv.kubeconfig), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    return run


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    return wait_until


def _dns_label(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "t"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s) -> str:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(k8s)
    name = f"t-{_dns_label(request.node.name, 40)}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={TEST_NAMESPACE_LABEL: "true"})))

    def default_sa() -> bool:
        try:
            return bool(core.read_namespaced_service_account("default", name))
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    # Pods are refused until the ServiceAccount controller has created "default".
    wait_until(default_sa, timeout=60, what=f"ServiceAccount default in {name}")
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as err:
        if err.status != 404:
            raise


@pytest.fixture(scope="session")
def s3_env(devenv: Devenv) -> dict[str, str]:
    return dict(devenv.s3_env)


@pytest.fixture(scope="session")
def s3(s3_env: dict[str, str]):
    return s3_client(s3_env)


@pytest.fixture
def bucket(request: pytest.FixtureRequest, s3) -> str:
    name = f"t-{_dns_label(request.node.name, 40)}-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=name)
    yield name
    remove_bucket(s3, name)
