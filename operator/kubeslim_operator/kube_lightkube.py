"""kube.Kube on lightkube (issue 21 item 4): the same methods, ApiError and request counter, so that
`make bench-operator` compares the two clients on the same reconciler (KUBESLIM_API_CLIENT=lightkube).

Jobs, ConfigMaps and Events go through lightkube's typed models, QuantizationJobs and Kueue
Workloads through its generic (dict) resources. Two requests have no lightkube call: deleting a Job
with a uid precondition (its delete takes no DeleteOptions body) and a log tail with limitBytes
and a timeout of its own (its log() has neither); they, the leader's Leases and the raw `request`
use an httpx2 client on the same connection pool. Every request is counted in the transport, where
lightkube's typed calls hide the answer's status code from the caller.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2
import kopf
from lightkube import AsyncClient
from lightkube.config.client_adapter import user_auth
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Event
from lightkube.types import PatchType

from . import constants as c
from .constants import Obj
from .kube import ApiError, delete_options, event_manifest

log = logging.getLogger(__name__)
T = TypeVar("T")

QuantizationJob = create_namespaced_resource(c.GROUP, c.VERSION, c.KIND, c.PLURAL)
# The Workload API's group and version, as the one path kube.py requests them by names them.
_KUEUE_GROUP, _KUEUE_VERSION = c.KUEUE_WORKLOADS_PATH.split("/")[2:4]
Workload = create_namespaced_resource(_KUEUE_GROUP, _KUEUE_VERSION, "Workload", "workloads")


def resource_of(path: str) -> str:
    """The request counter's resource label for an API path, as kube.Kube's callers name it:
    the plural, with a subresource after a slash (quantizationjobs/status, pods/log)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) > 2 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return parts[-1]
    return "/".join([rest[0], *rest[2:3]])


class _CountingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, on_request: Callable[[str, str, int], None]):
        self._inner = inner
        self._on_request = on_request

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        self._on_request(request.method, resource_of(request.url.path), response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def api_error(exc: httpx2.HTTPStatusError) -> ApiError:
    """lightkube's ApiError (or httpx2's, where the body is not JSON: a proxy's page) as kube.ApiError,
    whose body the callers read (the API server's Status, its causes naming the refused fields)."""
    response = exc.response
    try:
        body: Obj | str = response.json()
    except ValueError:
        body = response.text
    return ApiError(response.status_code, body, exc.request.method, exc.request.url.path)


class LightkubeKube:
    def __init__(self, info: kopf.ConnectionInfo, *, concurrency: int = 32,
                 relogin: Callable[[], kopf.ConnectionInfo | None] | None = None,
                 on_request: Callable[[str, str, int], None] | None = None,
                 transport: Callable[[kopf.ConnectionInfo], httpx2.AsyncBaseTransport] | None = None):
        """`transport`: what sends the requests for a login (tests answer them in process)."""
        self._relogin = relogin
        self._on_request = on_request or (lambda verb, resource, code: None)
        self._transport = transport or self._pool
        self._concurrency = concurrency
        self._connect(info)
        self.instance = os.environ.get("HOSTNAME") or "kubeslim-operator"

    def _pool(self, info: kopf.ConnectionInfo) -> httpx2.AsyncBaseTransport:
        # kopf's SSL context carries the CA and any client certificate, whichever login made it.
        limits = httpx2.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        return httpx2.AsyncHTTPTransport(verify=info.as_ssl_context(), limits=limits)

    def _connect(self, info: kopf.ConnectionInfo) -> None:
        transport = _CountingTransport(self._transport(info), self._on_request)
        user = User(token=info.token, username=info.username, password=info.password)
        config = KubeConfig.from_one(cluster=Cluster(server=info.server), user=user, namespace=info.default_namespace)
        timeout = httpx2.Timeout(c.API_REQUEST_TIMEOUT_SECONDS)
        self._client = AsyncClient(config, timeout=timeout, transport=transport, trust_env=False)
        self._http = httpx2.AsyncClient(base_url=info.server, auth=user_auth(user), transport=transport, timeout=timeout,
                                        headers={"User-Agent": "kubeslim-operator"}, trust_env=False)

    async def close(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            try:
                return await call()
            except httpx2.HTTPStatusError as exc:
                if exc.response.status_code == 401 and attempt == 1 and self._relogin is not None:
                    # A rotated ServiceAccount token: log in again once.
                    fresh = self._relogin()
                    if fresh is not None:
                        await self.close()
                        self._connect(fresh)
                        continue
                raise api_error(exc) from exc
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, *, resource: str, body: Any = None,
                      params: dict[str, str] | None = None, content_type: str = "application/json",
                      raw: bool = False, timeout: float | None = None) -> Any:
        """kube.Kube.request's contract; `resource` is ignored (the transport names it from the path)."""
        async def send() -> Any:
            response = await self._http.request(
                method, path, params=params,
                content=None if body is None else json.dumps(body, separators=(",", ":")),
                headers={"Content-Type": content_type, "Accept": "*/*" if raw else "application/json"},
                timeout=httpx2.USE_CLIENT_DEFAULT if timeout is None else timeout)
            response.raise_for_status()
            if raw:
                return response.content.decode("utf-8", "replace")
            return response.json() if response.content else {}
        return await self._call(send)

    # -- the requests the reconciler makes --------------------------------------------------------

    async def create_job(self, namespace: str, manifest: Obj) -> Obj:
        job = await self._call(lambda: self._client.create(Job.from_dict(manifest), namespace=namespace))
        return job.to_dict()

    async def get_job(self, namespace: str, name: str) -> Obj:
        return (await self._call(lambda: self._client.get(Job, name, namespace=namespace))).to_dict()

    async def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        try:
            await self.request("DELETE", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", resource="jobs",
                               body=delete_options(uid))
        except ApiError as exc:
            if exc.status not in (404, 409):     # already gone, or a different Job by now
                raise

    async def get_configmap(self, namespace: str, name: str) -> Obj | None:
        try:
            return (await self._call(lambda: self._client.get(ConfigMap, name, namespace=namespace))).to_dict()
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_workloads(self, namespace: str, job_uid: str) -> list[Obj]:
        """Kueue's Workloads for a Job. ApiError 404: the cluster serves no Workload API (no Kueue)."""
        async def listed() -> list[Obj]:
            return [dict(w) async for w in self._client.list(Workload, namespace=namespace,
                                                             labels={c.LABEL_KUEUE_JOB_UID: job_uid})]
        return await self._call(listed)

    async def read_log(self, namespace: str, pod: str, container: str, *, tail_lines: int, since_seconds: int,
                       limit_bytes: int, timeout: float | None = None) -> str:
        return await self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", resource="pods/log", raw=True,
                                  timeout=timeout,
                                  params={"container": container, "tailLines": str(tail_lines),
                                          "sinceSeconds": str(since_seconds), "limitBytes": str(limit_bytes)})

    async def patch_status(self, namespace: str, name: str, status: Obj) -> Obj | None:
        try:
            return dict(await self._call(lambda: self._client.patch(
                QuantizationJob.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE)))
        except ApiError as exc:
            if exc.status == 404:       # deleted meanwhile: nothing to report on
                return None
            raise

    async def post_event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        event = event_manifest(involved, type_, reason, message, self.instance)
        try:
            await self._call(lambda: self._client.create(Event.from_dict(event)))
        except (ApiError, httpx2.TransportError) as exc:
            # Events are a courtesy: the status already says the same thing.
            log.warning("could not post event %s for %s/%s: %s", reason, event["metadata"]["namespace"],
                        event["involvedObject"]["name"], exc)
