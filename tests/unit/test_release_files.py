"""What a platform team reads before adopting kubeslim, checked as files: one version number, one
name per image, the LICENSE pyproject declares, the README's build commands tagging what the chart
pulls, the CRD kept on deletion, a Keep-a-Changelog CHANGELOG, and release/CI workflows shaped as
RELEASING.md describes (actionlint checks their syntax: tests/cluster/test_workflows.py)."""
from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from kubeslim_operator import config as operator_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubeslim"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
WORKFLOWS = REPO / ".github" / "workflows"


def workflow(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def test_chart_version_app_version_and_package_version_are_one_number():
    assert CHART_META["version"] == CHART_META["appVersion"] == PYPROJECT["version"], \
        "Chart.yaml version, appVersion and pyproject.toml version are bumped together (RELEASING.md)"


def test_each_image_has_one_name_the_charts_default():
    assert VALUES["operator"]["image"]["repository"] == "ghcr.io/kubeslim/kubeslim-operator"
    assert VALUES["job"]["image"]["repository"] == operator_config.JOB_IMAGE_REPOSITORY
    # The operator outside the chart falls back to the image the chart would have given it.
    assert operator_config.OperatorConfig().job_image == f"{VALUES['job']['image']['repository']}:{CHART_META['appVersion']}"
    assert VALUES["operator"]["image"]["tag"] == VALUES["job"]["image"]["tag"] == "", "tags default to the appVersion"


def test_docs_name_the_charts_images():
    names = {Path(VALUES[k]["image"]["repository"]).name for k in ("operator", "job")} | {"kubeslim-job-cpu"}
    for doc in (REPO / "README.md", CHART / "README.md", *sorted((REPO / "examples" / "gitops").glob("*.yaml"))):
        used = set(re.findall(r"[\w.<>/-]*/(kubeslim-[\w-]+)(?=[:\s}`])", doc.read_text()))
        assert used <= names, f"{doc.relative_to(REPO)} names images the release does not push: {sorted(used - names)}"


def test_readme_builds_images_with_the_tag_the_chart_pulls():
    text = (REPO / "README.md").read_text()
    (assign,) = re.findall(r"^VERSION=\$\(.*\)", text, re.M)
    version = subprocess.run(["bash", "-c", f"{assign.split('#')[0]}; echo $VERSION"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == CHART_META["appVersion"]
    builds = re.findall(r"^docker build --target (\S+) -t (\S+) \.", text, re.M)
    assert {t for t, _ in builds} == {"operator", "job", "job-cpu"}
    for target, ref in builds:
        assert ref.endswith(":$VERSION"), f"docker build --target {target} tags {ref}: the chart pulls <repository>:<appVersion>"
        assert ref.split("/")[-1].split(":")[0] == f"kubeslim-{target}"


def test_license_is_the_apache_2_0_text_pyproject_declares():
    assert PYPROJECT["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("path", ["crds/kubeslim.io_quantizationjobs.yaml", "helm/kubeslim/crds/kubeslim.io_quantizationjobs.yaml"])
def test_crd_survives_helm_and_argocd_deletion(path):
    annotations = yaml.safe_load((REPO / path).read_text())["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    assert annotations["argocd.argoproj.io/sync-options"] == "Delete=false"


def test_changelog_keeps_a_changelog_with_an_unreleased_section_first():
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com" in text
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert versions[0] == "Unreleased" and CHART_META["version"] in versions
    for section in re.findall(r"^### (.+)$", text, re.M):
        assert section in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, section
    for version in versions:   # every heading has its link reference
        assert re.search(rf"^\[{re.escape(version)}\]: https://", text, re.M), version


def test_release_workflow_runs_on_version_tags_and_reads_names_from_the_chart():
    release = workflow("release.yaml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    text = (WORKFLOWS / "release.yaml").read_text()
    assert "yq '.operator.image.repository' helm/kubeslim/values.yaml" in text
    assert "yq '.job.image.repository' helm/kubeslim/values.yaml" in text
    assert "ghcr.io/kubeslim" not in text, "image names are read from values.yaml, not repeated"


def test_release_builds_three_images_with_sbom_and_provenance_operator_for_arm64():
    images = workflow("release.yaml")["jobs"]["images"]
    matrix = {m["target"]: m for m in images["strategy"]["matrix"]["include"]}
    assert set(matrix) == {"operator", "job", "job-cpu"}
    assert set(matrix["operator"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    (build,) = [s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push-action@")]
    assert build["with"]["push"] is True and build["with"]["sbom"] is True and build["with"]["provenance"] == "mode=max"
    assert build["with"]["target"] == "${{ matrix.target }}"
    assert any(s.get("uses", "").startswith("actions/attest-build-provenance@") for s in images["steps"])


def test_release_pushes_the_chart_to_an_oci_registry():
    chart = workflow("release.yaml")["jobs"]["chart"]
    run = "\n".join(s.get("run", "") for s in chart["steps"])
    assert "helm package helm/kubeslim" in run and 'helm push "dist/kubeslim-$VERSION.tgz" "$CHARTS"' in run
    assert "oci://" in (WORKFLOWS / "release.yaml").read_text()


def test_ci_runs_the_static_tiers_on_pull_requests():
    ci = workflow("ci.yaml")
    assert "pull_request" in ci["on"]
    runs = {name: "\n".join(s.get("run", "") for s in job["steps"]) for name, job in ci["jobs"].items()}
    assert "make test-unit" in runs["unit"]
    assert "hack/build-tools.sh helm actionlint" in runs["static"]
    for path in re.findall(r"tests/\S+\.py", runs["static"]):
        assert (REPO / path).is_file(), f"ci.yaml runs {path}, which does not exist"


def test_releasing_md_names_every_step():
    text = (REPO / "RELEASING.md").read_text()
    for step in ("CHANGELOG.md", "Chart.yaml", "pyproject.toml", "git tag", "release.yaml", "oci://"):
        assert step in text, step
