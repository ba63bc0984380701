"""actionlint (built from the Go module proxy at ACTIONLINT_VERSION) passes both GitHub workflows,
and reports a broken one, so a pass means it really read them."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cluster.built_tools import built_tool

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yaml"))

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def actionlint() -> str:
    return built_tool("actionlint")


def lint(actionlint: str, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint, "-no-color", *map(str, paths)], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_both_workflows_are_there():
    assert {p.name for p in WORKFLOWS} == {"ci.yaml", "release.yaml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_passes_actionlint(actionlint, path):
    proc = lint(actionlint, path)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_actionlint_reports_a_broken_workflow(actionlint, tmp_path):
    broken = (REPO / ".github" / "workflows" / "release.yaml").read_text().replace(
        "needs: version\n", "needs: no-such-job\n", 1)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "release.yaml"
    path.write_text(broken)
    proc = lint(actionlint, path)
    assert proc.returncode != 0 and "no-such-job" in proc.stdout, proc.stdout + proc.stderr
