"""A thin JSON client for the few API calls the dev node agent makes.

Objects stay plain dicts (what the apiserver sends), so the agent's pure functions work on the
same shapes as the API documentation. Only the kubeconfig loading comes from the `kubernetes`
package; requests go through urllib3 so watch streams and merge patches need no model classes.
"""
from __future__ import annotations

import json
import ssl
from typing import Any, Iterator
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config


class ApiError(Exception):
    def __init__(self, status: int, body: Any, method: str = "", path: str = ""):
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


class Kube:
    def __init__(self, kubeconfig: str | None, context: str | None = None, pool_size: int = 32):
        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        self.host = cfg.host.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": "kubeslim-devnode/0.1"}
        token = _bearer_token(cfg)
        if token:
            self.headers["Authorization"] = token
        kwargs: dict[str, Any] = {"maxsize": pool_size, "retries": False}
        if self.host.startswith("https"):
            if cfg.verify_ssl:
                kwargs.update(cert_reqs=ssl.CERT_REQUIRED, ca_certs=cfg.ssl_ca_cert)
            else:
                kwargs.update(cert_reqs=ssl.CERT_NONE)
                urllib3.disable_warnings()
            if cfg.cert_file:
                kwargs.update(cert_file=cfg.cert_file, key_file=cfg.key_file)
        self.http = urllib3.PoolManager(**kwargs)

    def _url(self, path: str, params: dict | None) -> str:
        url = self.host + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        return url

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        headers = dict(self.headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        resp = self.http.request(method, self._url(path, params), body=data, headers=headers,
                                 timeout=urllib3.Timeout(connect=10, read=timeout))
        try:
            payload = json.loads(resp.data) if resp.data else None
        except ValueError:
            payload = resp.data.decode(errors="replace")
        if resp.status >= 400:
            raise ApiError(resp.status, payload, method, path)
        return payload

    def get(self, path: str, params: dict | None = None) -> Any:
        return self.request("GET", path, params=params)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def create(self, path: str, body: dict) -> Any:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: dict) -> Any:
        # JSON merge patch replaces lists wholesale, which is what status writers want:
        # the whole containerStatuses / conditions list is ours on each write.
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: dict | None = None) -> Any:
        return self.request("DELETE", path, body)

    def watch(self, path: str, params: dict, timeout: int = 60) -> Iterator[dict]:
        """Yield watch events ({type, object}) until the server closes the stream."""
        params = dict(params, watch="true", timeoutSeconds=str(timeout), allowWatchBookmarks="true")
        resp = self.http.request("GET", self._url(path, params), headers=self.headers, preload_content=False,
                                 timeout=urllib3.Timeout(connect=10, read=timeout + 15))
        try:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.data.decode(errors="replace"), "WATCH", path)
            buf = b""
            for chunk in resp.stream(4096, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()


def _bearer_token(cfg: Any) -> str | None:
    try:
        value = cfg.get_api_key_with_prefix("authorization")
    except Exception:  # the generated Configuration API changed between client releases
        value = None
    if not value:
        api_key = getattr(cfg, "api_key", None) or {}
        value = api_key.get("authorization") or api_key.get("BearerToken")
    return value


def ns_path(namespace: str, resource: str, name: str = "", sub: str = "", group: str = "") -> str:
    prefix = f"/apis/{group}" if group else "/api/v1"
    path = f"{prefix}/namespaces/{quote(namespace)}/{resource}"
    if name:
        path += "/" + quote(name)
    if sub:
        path += "/" + sub
    return path
