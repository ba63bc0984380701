"""The devenv's registry (devenv/devenv.sh: CNCF distribution on the node's address, plain http):
`make images` pushed the operator and job-cpu images there under the chart's appVersion,
`<version>-<git sha>` and their input hash, and the chart as oci://<registry>/charts/kubeslim; the
real node's containerd pulls from it through a hosts.toml of the node's own, so a pod with
imagePullPolicy IfNotPresent gets an image the node has never had; the supervisor watches it."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

# The node_images fixture rebuilds and pushes the images first when the code changed (minutes).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

CHART_YAML = yaml.safe_load((REPO / "helm" / "kubeslim" / "Chart.yaml").read_text())
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"])


@pytest.fixture(scope="module")
def images_env(node_images, devenv) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (devenv.dir / "images.env").read_text().splitlines() if "=" in line)


@pytest.fixture(scope="module")
def registry(devenv) -> str:
    return devenv.info["registry"]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    """(status, headers, body) of one request; an HTTP error status is returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def manifest_digest(registry: str, repository: str, reference: str) -> str | None:
    status, headers, _ = http("HEAD", f"http://{registry}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
    return headers["Docker-Content-Digest"] if status == 200 else None


def node_image_refs(devenv) -> set[str]:
    out = subprocess.run(["ctr", "--address", devenv.info["node"]["containerd"], "--namespace", "k8s.io", "images", "ls", "-q"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_registry_answers_the_distribution_api_on_the_node_address(registry, real_node):
    assert registry.split(":")[0] == real_node.ip
    status, headers, _ = http("GET", f"http://{registry}/v2/")
    assert status == 200
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("name, env_key", [("kubeslim-operator", "KUBESLIM_OPERATOR_IMAGE"), ("kubeslim-job-cpu", "KUBESLIM_JOB_IMAGE")])
def test_make_images_pushed_each_image_under_its_three_tags(registry, images_env, name, env_key):
    repository, digest = images_env[env_key].split("@")
    assert repository == f"{registry}/kubeslim/{name}"
    app_version, version_sha, input_hash = images_env["KUBESLIM_IMAGE_TAGS"].split(",")
    assert app_version == CHART_YAML["appVersion"]
    assert version_sha.startswith(f"{CHART_YAML['version']}-") and len(version_sha.split("-", 1)[1]) == 12
    status, _, body = http("GET", f"http://{registry}/v2/kubeslim/{name}/tags/list")
    assert status == 200
    assert {app_version, version_sha, input_hash} <= set(json.loads(body)["tags"])
    # The input-hash tag names exactly this content; the values pin the same digest.
    assert manifest_digest(registry, f"kubeslim/{name}", input_hash) == digest


def test_helm_values_pin_the_pushed_digests_with_the_charts_pull_policy(devenv, images_env):
    values = yaml.safe_load((devenv.dir / "values-images.yaml").read_text())
    for key, env_key in (("operator", "KUBESLIM_OPERATOR_IMAGE"), ("job", "KUBESLIM_JOB_IMAGE")):
        image = values[key]["image"]
        assert f"{image['repository']}@{image['digest']}" == images_env[env_key]
        assert "pullPolicy" not in image, "the chart's own pullPolicy (IfNotPresent) applies"


def test_the_chart_is_an_oci_artifact_helm_shows(devenv, registry, images_env):
    assert images_env["KUBESLIM_CHART"] == f"oci://{registry}/charts/kubeslim"
    proc = subprocess.run([devenv.helm, "show", "chart", images_env["KUBESLIM_CHART"], "--version", images_env["KUBESLIM_CHART_VERSION"],
                           "--plain-http"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    chart = yaml.safe_load(proc.stdout)
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("kubeslim", CHART_YAML["version"], CHART_YAML["appVersion"])
    assert manifest_digest(registry, "charts/kubeslim", CHART_YAML["version"]) == images_env["KUBESLIM_CHART_DIGEST"]


def test_the_nodes_containerd_reads_registry_hosts_from_the_nodes_own_directory(devenv, registry):
    node_dir = Path(devenv.info["node"]["dir"])
    hosts = (node_dir / "certs.d" / registry / "hosts.toml").read_text()
    assert f'server = "http://{registry}"' in hosts
    assert f'config_path = "{node_dir / "certs.d"}"' in (node_dir / "containerd.toml").read_text()
    assert not Path("/etc/containerd/certs.d", registry).exists()


@pytest.fixture
def fresh_operator_tag(registry, images_env, devenv):
    """The operator image's manifest under a tag of this test alone: a reference the node has never
    pulled, whose layers come from the registry. The tag and the node's copy go afterwards."""
    digest = images_env["KUBESLIM_OPERATOR_IMAGE"].split("@")[1]
    status, headers, manifest = http("GET", f"http://{registry}/v2/kubeslim/kubeslim-operator/manifests/{digest}", headers={"Accept": MANIFEST_TYPES})
    assert status == 200
    tag = f"pull-test-{uuid.uuid4().hex[:8]}"
    status, _, body = http("PUT", f"http://{registry}/v2/kubeslim/kubeslim-operator/manifests/{tag}", manifest,
                           {"Content-Type": headers["Content-Type"]})
    assert status == 201, body
    ref = f"{registry}/kubeslim/kubeslim-operator:{tag}"
    yield ref
    subprocess.run(["ctr", "--address", devenv.info["node"]["containerd"], "--namespace", "k8s.io", "images", "rm", ref], capture_output=True)
    # distribution v3 deletes a tag alone (the digest stays for the other tags).
    http("DELETE", f"http://{registry}/v2/kubeslim/kubeslim-operator/manifests/{tag}")


def test_a_pod_on_the_real_node_pulls_the_operator_image_from_the_registry(devenv, kubectl, namespace, real_node, fresh_operator_tag, wait_for):
    ref = fresh_operator_tag
    assert ref not in node_image_refs(devenv), "the reference must be new to the node for the pull to prove anything"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pulled", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "nodeSelector": real_node.scheduling["nodeSelector"], "tolerations": real_node.scheduling["tolerations"],
            "containers": [{
                "name": "main", "image": ref, "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", "import kubeslim_operator; print('operator package', kubeslim_operator.__name__)"],
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            }],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))

    def finished():
        st = json.loads(kubectl("-n", namespace, "get", "pod", "pulled", "-o", "json").stdout)["status"]
        return st if st.get("phase") in ("Succeeded", "Failed") else None
    st = wait_for(finished, timeout=180, what="the pod to pull its image and finish")
    assert st["phase"] == "Succeeded", st
    assert kubectl("-n", namespace, "logs", "pulled").stdout.strip() == "operator package kubeslim_operator"
    events = json.loads(kubectl("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=pulled", "-o", "json").stdout)["items"]
    pulled = [e["message"] for e in events if e["reason"] == "Pulled"]
    assert any(m.startswith(f'Successfully pulled image "{ref}"') for m in pulled), pulled
    assert ref in node_image_refs(devenv)


def test_the_supervisor_watches_the_registry(devenv):
    # Not killed here: other sessions push and pull through it. supervise.py's restart itself is
    # tested in test_devenv_supervise.py; this checks the registry is one of the processes it watches.
    pid = int((devenv.dir / "supervise" / "pid").read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert f"registry={devenv.dir / 'registry' / 'pid'}" in argv
    registry_pid = int((devenv.dir / "registry" / "pid").read_text())
    assert os.readlink(f"/proc/{registry_pid}/exe").endswith(f"/registry-{devenv.info['versions']['registry']}/bin/registry")
