"""Prometheus metrics. Gauges of runs by phase are computed from the watched objects at scrape
time (so they are right after a restart); counters and histograms count what this process saw.

The run metrics carry the QuantizationJob's namespace (label `namespace`), so alerts and dashboards
can be per tenant; nothing finer (no name or uid): a label per object would grow without bound.
Scraped with honor_labels (the chart's ServiceMonitor sets honorLabels), so the scrape target's own
namespace label does not replace it; metrics without it (API requests, leader) get the target's."""
from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import constants as c

_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf"))
_DROP_BUCKETS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, float("inf"))
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))

RUNS_FINISHED = Counter("kubeslim_runs_finished_total", "Runs that reached a final phase.", ["namespace", "phase", "reason"])
RUN_DURATION = Histogram("kubeslim_run_duration_seconds", "Job start to final phase.", ["namespace", "phase"],
                         buckets=_DURATION_BUCKETS)
ACCURACY_DROP = Histogram("kubeslim_accuracy_drop", "fp32 - int8 metric of finished runs (absolute fraction).",
                          ["namespace"], buckets=_DROP_BUCKETS)
JOB_CREATE_LATENCY = Histogram("kubeslim_job_creation_latency_seconds",
                               "QuantizationJob creation (or spec change seen) to its Job created.", buckets=_LATENCY_BUCKETS)
RECONCILE_SECONDS = Histogram("kubeslim_reconcile_seconds", "Duration of one reconcile pass.", buckets=_LATENCY_BUCKETS)
API_REQUESTS = Counter("kubeslim_api_requests_total", "API requests made by the reconciler (kopf's watches excluded).",
                       ["verb", "resource", "code"])
TRANSITIONS = Counter("kubeslim_transitions_total", "Status transitions written.", ["namespace", "phase", "reason"])
LEADER = Gauge("kubeslim_leader", "1 while this replica holds the leader Lease and reconciles, 0 while it stands by "
               "(leader election on; sum over replicas should be 1).")


class PhaseCollector(Collector):
    """kubeslim_quantizationjobs{namespace, phase}: how many QuantizationJobs of each namespace are in
    each phase now. Every namespace with a QuantizationJob shows every known phase (0 included), so a
    rate or an absence alert sees a series before the first run of that phase."""

    def __init__(self, phases: Callable[[], Iterable[tuple[str, str]]]):
        self._phases = phases

    def collect(self):
        fam = GaugeMetricFamily("kubeslim_quantizationjobs", "QuantizationJobs by namespace and status.phase.",
                                labels=["namespace", "phase"])
        tally = _Tally(self._phases())
        for namespace in sorted({ns for ns, _ in tally}):
            for phase in (c.PENDING, c.RUNNING, c.SUCCEEDED, c.FAILED, ""):
                fam.add_metric([namespace, phase or "Unknown"], tally.pop((namespace, phase), 0))
        for (namespace, phase), n in sorted(tally.items()):
            fam.add_metric([namespace, phase], n)
        yield fam


def count_request(verb: str, resource: str, code: int) -> None:
    API_REQUESTS.labels(verb, resource, str(code)).inc()


def start(port: int, phases: Callable[[], Iterable[tuple[str, str]]], registry: CollectorRegistry = REGISTRY) -> None:
    registry.register(PhaseCollector(phases))
    serve(port, registry)


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    if port:
        start_http_server(port, registry=registry)
