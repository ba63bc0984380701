"""Pure functions: from a Pod (a dict as the API returns it) to the processes the dev node runs.

Nothing here touches the API or the filesystem; lookups of Secrets and ConfigMaps go through a
`getter(kind, namespace, name) -> dict | None` so the unit tests use plain dicts.

A process cannot have a private filesystem, so container paths are *rewritten*: every volume
mount (and the termination message path, and a workingDir outside any mount) maps a container
path to a host path, and each occurrence of a mapped path in command, args and env values is
replaced by the host path (see `PathMap`).
"""
from __future__ import annotations

import base64
import fnmatch
import json
import math
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Iterable

Getter = Callable[[str, str, str], "dict | None"]

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# kubelet: 4096 bytes per container, 12 KiB for the whole pod, split between its containers.
MAX_TERMINATION_MESSAGE = 4096
MAX_POD_TERMINATION_MESSAGES = 12 * 1024
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80
# Env var through which a process learns where its termination message goes on this node.
TERMINATION_MESSAGE_ENV = "TERMINATION_MESSAGE_PATH"
PATH_MAP_ENV = "DEVNODE_PATH_MAP"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(Exception):
    """Container config cannot be built yet (kubelet: CreateContainerConfigError); retried."""


class MountError(Exception):
    """A volume cannot be set up yet (kubelet: FailedMount, pod stays ContainerCreating); retried."""


# ---------------------------------------------------------------------------------------------
# $(VAR) expansion, as in k8s.io/kubernetes/third_party/forked/golang/expansion


def expand(text: str, env: dict[str, str]) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close == -1:
                    out.append("$(")
                    i += 2
                    continue
                name = text[i + 2:close]
                out.append(env[name] if name in env else f"$({name})")
                i = close + 1
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Path rewriting

_PATH_CHAR = r"[\w.\-]"


@dataclass
class PathMap:
    """Container path -> host path. `rewrite` replaces each occurrence of a mapped path that
    stands as a path token: at the start of the string or after a character that cannot be part
    of a path (space, '=', ':', quote, ...), and followed by '/', the end, or such a character.
    So `/work/out`, `--out=/work/out`, `PATH=/tmp/bin:/x` and `sh -c 'cat /work/a'` are rewritten;
    `/workdir`, `/homework` and `s3://b/tmp` are not. Longest container path wins."""

    entries: dict[str, str] = field(default_factory=dict)

    def add(self, container_path: str, host_path: str) -> None:
        container_path = container_path.rstrip("/") or "/"
        if container_path == "/":
            raise ValueError("cannot map the container root filesystem")
        self.entries[container_path] = host_path

    def _regex(self) -> re.Pattern | None:
        if not self.entries:
            return None
        alts = "|".join(re.escape(p) for p in sorted(self.entries, key=len, reverse=True))
        return re.compile(rf"(?<![\w.\-/~$])({alts})(?=/|$|[^\w.\-])")

    def rewrite(self, text: str) -> str:
        rx = self._regex()
        if rx is None or not text:
            return text
        return rx.sub(lambda m: self.entries[m.group(1)], text)

    def lookup(self, container_path: str) -> str | None:
        """Host path of a container path, or None when no mount covers it."""
        best = None
        for cpath in self.entries:
            if container_path == cpath or container_path.startswith(cpath + "/"):
                if best is None or len(cpath) > len(best):
                    best = cpath
        if best is None:
            return None
        return self.entries[best] + container_path[len(best):]


# ---------------------------------------------------------------------------------------------
# Quantities (for resourceFieldRef and memory limits)

_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}


def parse_quantity(q: str | int | float) -> Decimal:
    if isinstance(q, (int, float)):
        return Decimal(str(q))
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", q.strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"invalid quantity {q!r}")
    number, suffix = m.groups()
    return Decimal(number) * Decimal(_SUFFIX[suffix])


# ---------------------------------------------------------------------------------------------
# Env


def _field_value(pod: dict, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []) or "127.0.0.1",
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []) or "127.0.0.1",
    }
    if path == "metadata.labels":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get("labels") or {}).items()))
    if path == "metadata.annotations":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get("annotations") or {}).items()))
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return simple[path]


def _resource_value(pod: dict, container: dict, ref: dict, node_allocatable: dict) -> str:
    name = ref.get("containerName") or container["name"]
    target = next((c for c in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
                   if c["name"] == name), container)
    kind, _, res = ref["resource"].partition(".")
    resources = target.get("resources") or {}
    raw = (resources.get(kind) or {}).get(res)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(res)  # requests default to limits
    if raw is None and kind == "requests":
        raw = "0"
    if raw is None:
        raw = node_allocatable.get(res, "0")  # a missing limit reads as node allocatable
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    return str(math.ceil(parse_quantity(raw) / divisor))


def _decode(data: dict, key: str, is_secret: bool) -> str:
    raw = data[key]
    return base64.b64decode(raw).decode("utf-8", "surrogateescape") if is_secret else raw


def _lookup(getter: Getter, kind: str, namespace: str, name: str, optional: bool) -> dict | None:
    obj = getter(kind, namespace, name)
    if obj is None and not optional:
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    return obj


def _key_ref(getter: Getter, kind: str, namespace: str, ref: dict) -> str | None:
    optional = bool(ref.get("optional"))
    obj = _lookup(getter, kind, namespace, ref["name"], optional)
    if obj is None:
        return None
    key = ref["key"]
    data = obj.get("data") or {}
    if kind == "Secret" and key in data:
        return _decode(data, key, True)
    if kind == "ConfigMap" and key in data:
        return data[key]
    if optional:
        return None
    raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{ref['name']}")


_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def resolve_env(pod: dict, container: dict, getter: Getter, pathmap: PathMap,
                node_allocatable: dict | None = None) -> dict[str, str]:
    """The container's environment as kubelet builds it (envFrom, then env in order, with $(VAR)
    expansion against the variables defined before). Values that do not come from a Secret are
    path-rewritten. Raises ConfigError with kubelet's message when a reference is missing."""
    ns = pod["metadata"]["namespace"]
    node_allocatable = node_allocatable or {}
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        kind, ref = ("ConfigMap", src["configMapRef"]) if "configMapRef" in src else ("Secret", src.get("secretRef"))
        if ref is None:
            continue
        obj = _lookup(getter, kind, ns, ref["name"], bool(ref.get("optional")))
        if obj is None:
            continue
        is_secret = kind == "Secret"
        for key in (obj.get("data") or {}):
            name = prefix + key
            if _ENV_NAME.fullmatch(name):  # kubelet skips invalid names (with an event)
                value = _decode(obj["data"], key, is_secret)
                env[name] = value if is_secret else pathmap.rewrite(value)
    for item in container.get("env") or []:
        name = item["name"]
        value_from = item.get("valueFrom")
        if value_from is None:
            env[name] = expand(pathmap.rewrite(item.get("value", "")), env)
            continue
        if "secretKeyRef" in value_from:
            value = _key_ref(getter, "Secret", ns, value_from["secretKeyRef"])
            if value is None:
                continue
            env[name] = value
            continue
        if "configMapKeyRef" in value_from:
            value = _key_ref(getter, "ConfigMap", ns, value_from["configMapKeyRef"])
            if value is None:
                continue
        elif "fieldRef" in value_from:
            value = _field_value(pod, value_from["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in value_from:
            value = _resource_value(pod, container, value_from["resourceFieldRef"], node_allocatable)
        else:
            raise ConfigError(f"unsupported valueFrom for env {name}: {sorted(value_from)}")
        env[name] = pathmap.rewrite(value)
    return env


# ---------------------------------------------------------------------------------------------
# Image mapping and the command line


@dataclass
class ImageRule:
    """Images matching `pattern` (fnmatch) run from `bin_dir` (its bin dir goes first on PATH);
    `entrypoint` stands in for the image ENTRYPOINT when the container sets no command."""

    pattern: str
    bin_dir: str
    entrypoint: list[str] = field(default_factory=list)


def match_image(image: str, rules: Iterable[ImageRule]) -> ImageRule | None:
    for rule in rules:
        if fnmatch.fnmatchcase(image, rule.pattern):
            return rule
    return None


def resolve_argv(container: dict, rule: ImageRule | None, env: dict[str, str], pathmap: PathMap,
                 exists: Callable[[str], bool] = os.path.exists) -> list[str]:
    """command (or the mapped image's entrypoint) + args, with $(VAR) expansion and path
    rewriting. argv[0] is resolved in the image's bin dir first, then on the PATH in `env`."""
    command = container.get("command") or (rule.entrypoint if rule else [])
    args = container.get("args") or []
    argv = [expand(pathmap.rewrite(a), env) for a in list(command) + list(args)]
    if not argv:
        raise ConfigError(f"devnode: no command for image {container.get('image')!r} "
                          "(set command, or give the image an entrypoint with --image)")
    exe = argv[0]
    candidates: list[str] = []
    if "/" in exe:
        candidates.append(exe)
        if rule:
            candidates.append(os.path.join(rule.bin_dir, os.path.basename(exe)))
    else:
        dirs = ([rule.bin_dir] if rule else []) + env.get("PATH", "").split(":")
        candidates.extend(os.path.join(d, exe) for d in dirs if d)
    for cand in candidates:
        if exists(cand):
            argv[0] = cand
            break
    return argv


# ---------------------------------------------------------------------------------------------
# Volumes: what to write for configMap / secret / downwardAPI / projected


def _items_files(data: dict[str, bytes], items: list | None, default_mode: int, optional: bool,
                 what: str) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    files = {}
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise MountError(f"configmap references non-existent config key: {it['key']}" if what == "ConfigMap"
                             else f"references non-existent secret key: {it['key']}")
        files[it["path"]] = (data[it["key"]], it.get("mode", default_mode))
    return files


def _object_bytes(obj: dict, is_secret: bool) -> dict[str, bytes]:
    if is_secret:
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def _source_files(pod: dict, src_kind: str, src: dict, getter: Getter, default_mode: int,
                  token: Callable[[dict], str] | None) -> dict[str, tuple[bytes, int]]:
    ns = pod["metadata"]["namespace"]
    if src_kind in ("configMap", "secret"):
        kind = "ConfigMap" if src_kind == "configMap" else "Secret"
        name = src.get("name") or src.get("secretName")
        optional = bool(src.get("optional"))
        obj = getter(kind, ns, name)
        if obj is None:
            if optional:
                return {}
            raise MountError(f'{kind.lower()} "{name}" not found')
        return _items_files(_object_bytes(obj, kind == "Secret"), src.get("items"),
                            src.get("defaultMode", default_mode), optional, kind)
    if src_kind == "downwardAPI":
        files = {}
        for it in src.get("items") or []:
            if "fieldRef" in it:
                value = _field_value(pod, it["fieldRef"]["fieldPath"])
            else:
                ref = it["resourceFieldRef"]
                cont = next(c for c in pod["spec"]["containers"] if c["name"] == ref.get("containerName"))
                value = _resource_value(pod, cont, ref, {})
            files[it["path"]] = (value.encode(), it.get("mode", default_mode))
        return files
    if src_kind == "serviceAccountToken":
        if token is None:
            return {}
        return {src["path"]: (token(src).encode(), default_mode)}
    raise MountError(f"devnode: unsupported projected source {src_kind}")


def volume_files(pod: dict, volume: dict, getter: Getter,
                 token: Callable[[dict], str] | None = None) -> dict[str, tuple[bytes, int]] | None:
    """Files (relative path -> (content, mode)) for a volume that carries data, or None for a
    plain directory volume (emptyDir). Raises MountError for missing data or unsupported types."""
    if "emptyDir" in volume:
        return None
    for kind in ("configMap", "secret", "downwardAPI"):
        if kind in volume:
            src = volume[kind]
            return _source_files(pod, kind, src, getter, src.get("defaultMode", 0o644), token)
    if "projected" in volume:
        proj = volume["projected"]
        mode = proj.get("defaultMode", 0o644)
        files: dict[str, tuple[bytes, int]] = {}
        for source in proj.get("sources") or []:
            for kind, src in source.items():
                files.update(_source_files(pod, kind, src, getter, src.get("defaultMode", mode) if isinstance(src, dict) else mode, token))
        return files
    kinds = sorted(k for k in volume if k != "name")
    raise MountError(f"devnode: unsupported volume type {kinds} for volume {volume['name']!r}")


# ---------------------------------------------------------------------------------------------
# Termination message


def termination_message_limit(pod: dict) -> int:
    n = len(pod["spec"].get("containers", [])) + len(pod["spec"].get("initContainers", []))
    return min(MAX_TERMINATION_MESSAGE, MAX_POD_TERMINATION_MESSAGES // max(n, 1))


def termination_message(file_bytes: bytes, log_tail: bytes, exit_code: int, policy: str, limit: int) -> str:
    """kubelet: the last `limit` bytes of the termination message file; with
    FallbackToLogsOnError and an empty file and a non-zero exit, the last 80 lines / 2048 bytes
    of the container log."""
    msg = file_bytes[-limit:] if file_bytes else b""
    if not msg and exit_code != 0 and policy == "FallbackToLogsOnError":
        lines = log_tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        msg = b"".join(lines)[-min(FALLBACK_LOG_BYTES, limit):]
    return msg.decode("utf-8", "replace")


def path_map_env(pathmap: PathMap) -> str:
    return json.dumps(pathmap.entries, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# In-cluster identity


def in_cluster_kubeconfig(server: str, sa_host_dir: str) -> str:
    """A kubeconfig that stands in for in-cluster config. Client libraries read the ServiceAccount
    token from the fixed path /var/run/secrets/..., which no process here can have, so a pod that
    mounts its token gets KUBECONFIG pointing at this file instead: same token, same CA, same
    namespace, hence exactly the pod's RBAC rights. The token is inlined (not tokenFile): kopf's
    kubeconfig login reads only `token`."""
    with open(os.path.join(sa_host_dir, "token")) as fh:
        token = fh.read().strip()
    namespace_file = os.path.join(sa_host_dir, "namespace")
    namespace = open(namespace_file).read().strip() if os.path.exists(namespace_file) else "default"
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
        "clusters": [{"name": "in-cluster", "cluster": {"server": server, "certificate-authority": os.path.join(sa_host_dir, "ca.crt")}}],
        "users": [{"name": "serviceaccount", "user": {"token": token}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "serviceaccount", "namespace": namespace}}],
    }, indent=1)
