"""The operator's metrics carry the QuantizationJob's namespace (issue 19 item 5: alerts per tenant)
and nothing finer: the phase gauge by namespace and phase, and the counters of finished runs and
transitions the reconciler increments, labelled with the namespace of the run."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from kubeslim_operator import metrics
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.handlers.reconcile import Reconciler
from operator_fakes import KEY, NS, FakeApi, job, qj

pytestmark = pytest.mark.unit

KNOWN = ["Pending", "Running", "Succeeded", "Failed", "Unknown"]


def gauge(phases: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(metrics.PhaseCollector(lambda: phases))
    (family,) = [f for f in registry.collect() if f.name == "kubeslim_quantizationjobs"]
    assert all(set(s.labels) == {"namespace", "phase"} for s in family.samples)     # no name, no uid
    return {(s.labels["namespace"], s.labels["phase"]): s.value for s in family.samples}


def test_phase_gauge_counts_each_namespace_apart_with_every_known_phase():
    got = gauge([("team-a", "Running"), ("team-a", "Running"), ("team-a", "Succeeded"), ("team-b", "Failed"), ("team-b", "")])
    assert got == {
        **{("team-a", p): 0.0 for p in KNOWN}, ("team-a", "Running"): 2.0, ("team-a", "Succeeded"): 1.0,
        **{("team-b", p): 0.0 for p in KNOWN}, ("team-b", "Failed"): 1.0, ("team-b", "Unknown"): 1.0,
    }


def test_phase_gauge_keeps_an_unexpected_phase_and_is_empty_without_quantizationjobs():
    assert gauge([("t", "Weird")])[("t", "Weird")] == 1.0
    assert gauge([]) == {}


def _per_namespace(metric: str, namespace: str) -> float:
    return sum(s.value for f in REGISTRY.collect() for s in f.samples
               if s.name == metric and s.labels.get("namespace") == namespace)


def test_finished_runs_and_transitions_are_counted_under_the_runs_namespace():
    api = FakeApi()
    qjs, jobs = {KEY: [qj()]}, {}
    r = Reconciler(OperatorConfig(), api)
    r.bind(qjs, jobs, {})
    before = {m: _per_namespace(m, NS) for m in ("kubeslim_runs_finished_total", "kubeslim_transitions_total")}
    asyncio.run(r.reconcile(KEY))
    qjs[KEY] = [qj(status=r.known_status(qj()))]
    jobs[KEY] = [job(1, "Failed")]
    asyncio.run(r.reconcile(KEY))
    assert r.known_status(qj())["phase"] == "Failed"
    assert _per_namespace("kubeslim_runs_finished_total", NS) == before["kubeslim_runs_finished_total"] + 1
    assert _per_namespace("kubeslim_transitions_total", NS) > before["kubeslim_transitions_total"]
