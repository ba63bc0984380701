"""A real Prometheus server (the devenv's, Debian's package) scrapes the operator pod the chart
installed, and its HTTP API shows what a QuantizationJob run did to the job counters and the
phase gauge: the metrics are judged by the tool that reads them, not by parsing /metrics here."""
from __future__ import annotations

import json

import pytest

from kubeslim_dev import prometheus

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def scraped_release(operator_release, k8s, wait_for):
    release = operator_release["release"]
    path = prometheus.scrape_release(k8s, operator_release["namespace"], release)
    listed = len(json.loads(path.read_text())[0]["targets"])
    wait_for(lambda: _all_targets_up(release, listed), timeout=60, what=f"Prometheus scraping all {listed} operator pods of {release}")
    yield release
    path.unlink(missing_ok=True)


def _value(promql: str) -> float:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else 0.0


def _all_targets_up(release: str, expected: int) -> bool:
    """Every listed pod (the leader and the standby) scraped and up: a counter read before the
    leader's first scrape would be the standby's zero alone."""
    active = [t for t in prometheus.api("targets", state="active")["activeTargets"] if t["labels"].get("release") == release]
    return len(active) == expected and all(t["health"] == "up" for t in active)


def test_prometheus_scrapes_the_operator_and_counts_a_finished_run(scraped_release, e2e_namespace, digits_manifest, kubectl, wait_for):
    release = scraped_release
    finished = f'sum(kubeslim_runs_finished_total{{release="{release}",phase="Succeeded"}})'
    created = f'sum(kubeslim_job_creation_latency_seconds_count{{release="{release}"}})'
    succeeded_now = f'max(kubeslim_quantizationjobs{{release="{release}",phase="Succeeded"}})'
    before = {q: _value(q) for q in (finished, created, succeeded_now)}

    kubectl("-n", e2e_namespace, "apply", "-f", "-", input=json.dumps(digits_manifest("prometheus-digits")))
    kubectl("-n", e2e_namespace, "wait", "--for=condition=Ready", "qj/prometheus-digits", "--timeout=600s", timeout=620)

    # Scrapes are 2 s apart: the run shows up within a few of them, and counts exactly once.
    wait_for(lambda: _value(finished) >= before[finished] + 1, timeout=30, what="kubeslim_runs_finished_total{phase=Succeeded} + 1")
    assert _value(finished) == before[finished] + 1
    assert _value(created) == before[created] + 1
    wait_for(lambda: _value(succeeded_now) >= before[succeeded_now] + 1, timeout=30,
             what="kubeslim_quantizationjobs{phase=Succeeded} + 1")
    series = prometheus.query(f'kubeslim_quantizationjobs{{release="{release}"}}')
    assert {s["metric"]["phase"] for s in series} >= {"Pending", "Running", "Succeeded", "Failed"}
    assert all(s["metric"]["namespace"] == f"{e2e_namespace}-system" for s in series)
