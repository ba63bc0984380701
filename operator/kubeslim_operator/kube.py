"""A small asyncio client for the few requests the reconciler makes (kopf does the watching).

It reuses kopf's login result (a kopf.ConnectionInfo), speaks plain JSON (no model classes: the
kubernetes client's deserialisation would cost more CPU than the reconciler itself) and counts
every request by verb and resource for the metrics endpoint and the benchmark.

Kept rather than lightkube (issue 21 item 4: adopt if `make bench-operator` shows at most 10 % fewer
Jobs/s and at most 10 % more RSS). Measured 2026-12-05 07:42-08:00 UTC on the shared devenv (2-core
Intel Xeon, AVX512-VNNI/AMX; load average 6-8.5 from other engineers' tests), lightkube 1.0.1 as a
drop-in variant of this class (typed models for Jobs, ConfigMaps and Events, generic resources for
QuantizationJobs and Workloads, the same request counter and ApiError), `bench/bench_operator.py
-n 1000 --timeout 150` alternating back to back (the runs `make bench-operator N=1000` makes, cut at
150 s: the controller manager's 20 QPS needs minutes to conclude 1000 Jobs; the clients differ in
the creation phase):

| client | Jobs/s | peak RSS MB | writes/Job | operator CPU s | creation -> Job p50 s |
| --- | --- | --- | --- | --- | --- |
| this one (aiohttp) | 14.7, 17.7 (mean 16.2) | 147.7, 148.7 | 3.0, 3.0 | 12.3, 15.1 | 20.9, 15.6 |
| lightkube (httpx2) | 12.6, 13.4 (mean 13.0) | 164.1, 146.2 | 3.24, 3.0 | 25.2, 18.4 | 26.1, 22.1 |

lightkube: 20 % fewer Jobs/s (the rule allows 10), peak RSS +4.7 %. No status lag to compare: in
the 150 s only lightkube's first run saw Jobs conclude (57, p99 37.5 s). A full-length run of this
client just before (same command without --timeout): 21.3 Jobs/s, peak RSS 173.0 MB, 5.06 writes
per Job, status lag p99 8.2 s over all 1000. Why: on a loopback stub the same three requests per
Job (create Job, patch status, post Event) cost 0.63 ms of client CPU here and 2.54-2.77 ms with
lightkube (httpx2 speaks HTTP/1.1 through h11, pure Python; aiohttp parses in C, and kopf loads it anyway),
and importing it adds 8.4 MB (httpx2, msgspec, lightkube-models). Its public API also lacks two of
the eight requests (a Job delete with a uid precondition, a log tail with limitBytes). kr8s was not
measured: it sends through httpx, the part that cost lightkube its CPU.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

from . import constants as c
from .constants import Obj
from .times import format_time

log = logging.getLogger(__name__)


def in_cluster_server(env: dict[str, str]) -> str | None:
    """The apiserver URL client-go's rest.InClusterConfig uses: the kubernetes Service address the
    kubelet puts into every pod's environment. (kopf's service-account login names
    kubernetes.default.svc instead, which works only where cluster DNS does.)"""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class ApiError(Exception):
    def __init__(self, status: int, body: Obj | str, method: str, path: str):
        reason = body.get("message") if isinstance(body, dict) else str(body)[:c.API_ERROR_EXCERPT_CHARS]
        super().__init__(f"{method} {path}: HTTP {status}: {reason}")
        self.status = status
        self.body = body


async def get_or_none(kube: Kube, path: str, *, resource: str) -> Obj | None:
    """GET one object; None where it does not exist (404), which callers treat as an answer, not an error.
    A function over `kube.request` rather than a method, so anything with that one method can stand in."""
    try:
        return await kube.request("GET", path, resource=resource)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def delete_options(uid: str | None) -> Obj:
    """A Job's DeleteOptions: its pods go too; with `uid`, only that Job (not one made since under its name)."""
    body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
    if uid:
        body["preconditions"] = {"uid": uid}
    return body


def event_manifest(involved: Obj, type_: str, reason: str, message: str, instance: str) -> Obj:
    """A core/v1 Event about a QuantizationJob, its fields cut to the lengths the API server validates."""
    meta = involved.get("metadata") or {}
    now = format_time()
    ns = meta.get("namespace") or "default"
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'qj')[:c.EVENT_NAME_PREFIX_MAX_CHARS]}.{secrets.token_hex(8)}", "namespace": ns},
        "involvedObject": {"apiVersion": c.API_VERSION, "kind": c.KIND, "name": meta.get("name"),
                           "namespace": ns, "uid": meta.get("uid")},
        "reason": reason[:c.EVENT_REASON_MAX_CHARS], "message": message[:c.EVENT_MESSAGE_MAX_CHARS], "type": type_,
        "source": {"component": c.EVENT_SOURCE},
        "reportingComponent": f"{c.GROUP}/operator", "reportingInstance": instance[:c.EVENT_REPORTING_INSTANCE_MAX_CHARS],
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


class Kube:
    def __init__(self, info: kopf.ConnectionInfo, *, concurrency: int = 32,
                 relogin: Callable[[], kopf.ConnectionInfo | None] | None = None,
                 on_request: Callable[[str, str, int], None] | None = None):
        self._info = info
        self._relogin = relogin
        self._on_request = on_request or (lambda verb, resource, code: None)
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self.instance = os.environ.get("HOSTNAME") or "kubeslim-operator"

    def _new_session(self) -> aiohttp.ClientSession:
        info = self._info
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            auth = info.as_aiohttp_basic_auth()
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency, ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "User-Agent": "kubeslim-operator"},
            auth=auth, timeout=aiohttp.ClientTimeout(total=c.API_REQUEST_TIMEOUT_SECONDS), json_serialize=lambda o: json.dumps(o, separators=(",", ":")))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, resource: str, body: Any = None,
                      params: dict[str, str] | None = None, content_type: str = "application/json",
                      raw: bool = False, timeout: float | None = None) -> Any:
        """The answer's JSON; with `raw`, its text as is (a pod log: decoded leniently, since a
        program may print any bytes). `timeout`: seconds, instead of the session's c.API_REQUEST_TIMEOUT_SECONDS."""
        if self._session is None:
            async with self._lock:
                if self._session is None:
                    self._session = self._new_session()
        for attempt in (1, 2):
            data = None if body is None else json.dumps(body, separators=(",", ":"))
            extra = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout is not None else {}
            async with self._session.request(method, self._info.server.rstrip("/") + path, data=data, params=params, **extra,
                                             headers={"Content-Type": content_type, "Accept": "*/*" if raw else "application/json"}) as resp:
                text = (await resp.read()).decode("utf-8", "replace") if raw else await resp.text()
                self._on_request(method, resource, resp.status)
                if resp.status == 401 and attempt == 1 and self._relogin is not None:
                    # A rotated ServiceAccount token: log in again once.
                    fresh = self._relogin()
                    if fresh is not None:
                        self._info = fresh
                        old, self._session = self._session, self._new_session()
                        await old.close()
                        continue
                if raw and resp.status < 400:
                    return text
                try:
                    doc = json.loads(text) if text else {}
                except json.JSONDecodeError:
                    doc = {"message": text[:c.API_ERROR_EXCERPT_CHARS]}
                if resp.status >= 400:
                    raise ApiError(resp.status, doc, method, path)
                return doc
        raise AssertionError("unreachable")

    # -- the requests the reconciler makes --------------------------------------------------------

    async def create_job(self, namespace: str, manifest: Obj) -> Obj:
        return await self.request("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", resource="jobs", body=manifest)

    async def get_job(self, namespace: str, name: str) -> Obj:
        return await self.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", resource="jobs")

    async def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        try:
            await self.request("DELETE", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", resource="jobs",
                               body=delete_options(uid))
        except ApiError as exc:
            if exc.status not in (404, 409):     # already gone, or a different Job by now
                raise

    async def get_configmap(self, namespace: str, name: str) -> Obj | None:
        return await get_or_none(self, f"/api/v1/namespaces/{namespace}/configmaps/{name}", resource="configmaps")

    async def list_workloads(self, namespace: str, job_uid: str) -> list[Obj]:
        """Kueue's Workloads for a Job. ApiError 404: the cluster serves no Workload API (no Kueue)."""
        doc = await self.request("GET", c.KUEUE_WORKLOADS_PATH.format(namespace=namespace), resource="workloads",
                                 params={"labelSelector": f"{c.LABEL_KUEUE_JOB_UID}={job_uid}"})
        return doc.get("items") or []

    async def read_log(self, namespace: str, pod: str, container: str, *, tail_lines: int, since_seconds: int,
                       limit_bytes: int, timeout: float | None = None) -> str:
        """The tail of a container's log (the API server fetches it from the node's kubelet)."""
        return await self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", resource="pods/log", raw=True,
                                  timeout=timeout,
                                  params={"container": container, "tailLines": str(tail_lines),
                                          "sinceSeconds": str(since_seconds), "limitBytes": str(limit_bytes)})

    async def patch_status(self, namespace: str, name: str, status: Obj) -> Obj | None:
        try:
            return await self.request(
                "PATCH", f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}/{name}/status",
                resource=f"{c.PLURAL}/status", body={"status": status}, content_type="application/merge-patch+json")
        except ApiError as exc:
            if exc.status == 404:       # deleted meanwhile: nothing to report on
                return None
            raise

    async def post_event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        event = event_manifest(involved, type_, reason, message, self.instance)
        ns = event["metadata"]["namespace"]
        try:
            await self.request("POST", f"/api/v1/namespaces/{ns}/events", resource="events", body=event)
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # Events are a courtesy: the status already says the same thing.
            log.warning("could not post event %s for %s/%s: %s", reason, ns, event["involvedObject"]["name"], exc)
