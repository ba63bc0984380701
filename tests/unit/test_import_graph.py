"""The packages' dependency direction: kubeslim_api is the shared API and imports neither side;
the operator and the job import kubeslim_api and never each other (the operator image does not
even contain Paddle, and the job image need not contain kopf). Nothing outside tests/ imports
tests (the shared helpers live in kubeslim_dev, hack/dev), and no product package imports
kubeslim_dev (no image has it). Checked on the source, so a lazy import inside a function counts too."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def imported_top_levels(package: str, root: Path | None = None) -> dict[str, set[str]]:
    """{module file: the top-level package names it imports (relative imports resolve to `package`)}."""
    out: dict[str, set[str]] = {}
    for path in sorted((root or REPO / PACKAGE_DIRS[package]).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(package if node.level else (node.module or "").split(".")[0])
        out[str(path.relative_to(REPO))] = names
    return out


@pytest.mark.parametrize("package, forbidden", [
    ("kubeslim_operator", {"kubeslim_job", "kubeslim_dev", "tests", "paddle", "paddleslim", "numpy", "boto3"}),
    ("kubeslim_job", {"kubeslim_operator", "kubeslim_dev", "tests", "kopf"}),
    ("kubeslim_api", {"kubeslim_operator", "kubeslim_job", "kubeslim_dev", "tests", "kopf", "paddle", "numpy", "boto3"}),
])
def test_dependency_direction(package, forbidden):
    bad = {f: sorted(names & forbidden) for f, names in imported_top_levels(package).items() if names & forbidden}
    assert not bad, f"{package} imports what it must not: {bad}"


@pytest.mark.parametrize("package", ["kubeslim_operator", "kubeslim_job"])
def test_both_sides_use_the_shared_api(package):
    assert any("kubeslim_api" in names for names in imported_top_levels(package).values())


def test_the_walk_sees_imports():
    # A walk that found nothing would pass the direction test vacuously.
    graph = imported_top_levels("kubeslim_operator")
    assert "kopf" in graph["operator/kubeslim_operator/main.py"]
    assert "kubeslim_operator" in graph["operator/kubeslim_operator/main.py"]


@pytest.mark.parametrize("folder", ["bench", "devenv", "hack"])
def test_benchmarks_demo_devenv_and_dev_helpers_do_not_import_tests(folder):
    graph = imported_top_levels("", REPO / folder)
    assert graph, f"no Python files under {folder}/"
    bad = sorted(f for f, names in graph.items() if "tests" in names)
    assert not bad, f"import tests.*; use kubeslim_dev (hack/dev) instead: {bad}"
