"""The chart's alerting rules (files/prometheus/alerts.yaml, a PrometheusRule when
prometheusRule.enabled) are judged by Prometheus's own code: promtool checks and unit-tests them,
and the devenv's Prometheus loads the rendered PrometheusRule's groups and evaluates them."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from kubeslim_dev import prometheus

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "helm/kubeslim/files/prometheus/alerts.yaml"
RULE_TESTS = Path(__file__).resolve().parent / "prometheus/alerts_test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool (Debian's prometheus package) is missing: hack/host-packages.sh node installs it"
    return path


@pytest.fixture(scope="module")
def rendered_rule(devenv) -> dict:
    out = subprocess.run([devenv.helm, "template", "r", str(REPO / "helm/kubeslim"), "--set", "prometheusRule.enabled=true",
                          "--show-only", "templates/prometheusrule.yaml"], check=True, capture_output=True, text=True).stdout
    return yaml.safe_load(out)


def test_the_chart_ships_the_rules_file_unchanged(rendered_rule):
    assert rendered_rule["kind"] == "PrometheusRule"
    assert rendered_rule["spec"] == yaml.safe_load(RULES.read_text())


def test_promtool_checks_and_unit_tests_the_rules(promtool):
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_the_devenv_prometheus_loads_and_evaluates_the_rendered_rules(rendered_rule, wait_for):
    name = f"kubeslim-alerts-{uuid.uuid4().hex[:6]}"
    try:
        groups = prometheus.load_rules(name, rendered_rule["spec"])
        assert {r["name"] for g in groups for r in g["rules"]} == {
            "KubeslimQuantizationJobsFailing", "KubeslimQuantizationJobsPendingTooLong", "KubeslimApiErrors"}

        def evaluated_cleanly():
            rules = [r for g in prometheus.api("rules")["groups"] if g["file"].endswith(f"/{name}.yaml") for r in g["rules"]]
            bad = [r for r in rules if r["health"] != "ok"]
            if any(r["health"] == "err" for r in rules):
                pytest.fail(f"Prometheus could not evaluate: {bad}")
            return len(rules) == 3 and not bad
        wait_for(evaluated_cleanly, timeout=30, what="every rule evaluated once (evaluation_interval 2 s)")
    finally:
        prometheus.unload_rules(name)
