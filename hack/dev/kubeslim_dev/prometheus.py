"""The devenv's Prometheus server (devenv/devenv.sh): list an operator release's pods as scrape
targets and query the HTTP API.

Debian's prometheus is built without Kubernetes service discovery, so targets go through file_sd
(.devenv/prometheus/targets/<name>.json, re-read every 2 s): the pods behind the chart's metrics
Service, which is what the chart's ServiceMonitor selects in a cluster with prometheus-operator.
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .devenv import DEVENV_DIR, info

METRICS_PORT_NAME = "metrics"


def url(devenv_dir: Path = DEVENV_DIR) -> str:
    return info(devenv_dir)["prometheus"]


def targets_file(name: str, devenv_dir: Path = DEVENV_DIR) -> Path:
    return devenv_dir / "prometheus" / "targets" / f"{name}.json"


def release_targets(k8s, namespace: str, release: str) -> list[str]:
    """host:port of every ready endpoint of the release's metrics Service, from its EndpointSlices."""
    from kubernetes import client

    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    services = client.CoreV1Api(k8s).list_namespaced_service(namespace, label_selector=selector).items
    found = []
    for svc in services:
        slices = client.DiscoveryV1Api(k8s).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={svc.metadata.name}").items
        for s in slices:
            port = next((p.port for p in s.ports or [] if p.name == METRICS_PORT_NAME), None)
            for ep in s.endpoints or []:
                if port and (ep.conditions is None or ep.conditions.ready is not False):
                    found.extend(f"{address}:{port}" for address in ep.addresses)
    return sorted(found)


def scrape_release(k8s, namespace: str, release: str, devenv_dir: Path = DEVENV_DIR) -> Path:
    """Write the release's pods as targets (labels namespace, release); returns the file to remove."""
    targets = release_targets(k8s, namespace, release)
    if not targets:
        raise RuntimeError(f"release {release} in {namespace} has no ready metrics endpoint to scrape")
    path = targets_file(release, devenv_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": targets, "labels": {"namespace": namespace, "release": release}}]))
    os.replace(tmp, path)     # Prometheus never reads a half-written file
    return path


def api(path: str, devenv_dir: Path = DEVENV_DIR, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url(devenv_dir)}/api/v1/{path}{query}", timeout=10) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus API {path}: {body}")
    return body["data"]


def query(promql: str, devenv_dir: Path = DEVENV_DIR) -> list[dict]:
    """Instant query: the result vector ([{"metric": {...}, "value": [ts, "v"]}, ...])."""
    return api("query", devenv_dir, query=promql, time=str(time.time()))["result"]


def load_rules(name: str, groups: dict, devenv_dir: Path = DEVENV_DIR, timeout: float = 30) -> list[dict]:
    """Load rule groups into the running Prometheus (a file in its rules dir, then SIGHUP) and
    return its /api/v1/rules answer for them once it shows them; remove with unload_rules."""
    import yaml

    path = devenv_dir / "prometheus" / "rules" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(groups))
    _reload(devenv_dir)
    wanted = {g["name"] for g in groups["groups"]}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loaded = [g for g in api("rules", devenv_dir)["groups"] if g["file"] == str(path) and g["name"] in wanted]
        if {g["name"] for g in loaded} == wanted:
            return loaded
        time.sleep(0.5)
    raise TimeoutError(f"Prometheus did not load {path} within {timeout}s (see .devenv/logs/prometheus.log)")


def unload_rules(name: str, devenv_dir: Path = DEVENV_DIR) -> None:
    (devenv_dir / "prometheus" / "rules" / f"{name}.yaml").unlink(missing_ok=True)
    _reload(devenv_dir)


def _reload(devenv_dir: Path) -> None:
    pid = int((devenv_dir / "prometheus" / "pid").read_text().strip())
    os.kill(pid, signal.SIGHUP)     # Prometheus re-reads its configuration and rule files
