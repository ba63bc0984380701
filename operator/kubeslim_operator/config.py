"""Operator configuration, read once from the environment (the Helm chart sets these)."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import urllib.parse
from collections.abc import Mapping

from kubeslim_api.spec import DNS_SUBDOMAIN

# The job image's repository: the chart's default (helm/kubeslim/values.yaml, job.image) is the one
# name, this is the operator's fallback outside the chart; tests/unit/test_chart_shipping.py keeps
# them equal. The tag is the package's version, which the chart's appVersion equals (RELEASING.md).
JOB_IMAGE_REPOSITORY = "ghcr.io/kubeslim/kubeslim-job"
# A Secret name (DNS-1123 subdomain), as the kubelet needs it for imagePullSecrets.
_SECRET_NAME = re.compile(DNS_SUBDOMAIN)
# A ServiceAccount name is a DNS-1123 subdomain too.
_SERVICE_ACCOUNT_NAME = _SECRET_NAME
# The proxy variables the job pods may get (the chart's job.proxy.{httpsProxy,httpProxy,noProxy});
# botocore reads them (and their lower-case twins) through urllib's getproxies.
JOB_PROXY_VARIABLES = {"HTTPS_PROXY": "httpsProxy", "HTTP_PROXY": "httpProxy", "NO_PROXY": "noProxy"}
# A Kubernetes resource quantity (apimachinery's regexp, without the rare exponent forms).
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def _default_job_image() -> str:
    try:
        version = importlib.metadata.version("kubeslim")
    except importlib.metadata.PackageNotFoundError:   # run from a source tree without installing
        version = "latest"
    return f"{JOB_IMAGE_REPOSITORY}:{version}"


class ConfigError(ValueError):
    pass


def _proxy_value(variable: str, raw: str) -> str:
    """A proxy variable's value as the job pods get it. A proxy URL with user:password would put
    that password into every Job's spec, readable by whoever may read Jobs: refused."""
    value = raw.strip()
    chart_value = f"job.proxy.{JOB_PROXY_VARIABLES[variable]}"
    if any(ch.isspace() for ch in value):
        raise ConfigError(f"KUBESLIM_JOB_{variable} must not contain whitespace (the chart's {chart_value}), got {value!r}")
    if variable == "NO_PROXY":
        return value           # comma-separated hosts, domains and CIDRs; no URL
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"KUBESLIM_JOB_{variable} must be a proxy URL such as http://proxy.corp:3128 "
                          f"(the chart's {chart_value}), got {value!r}")
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError(f"KUBESLIM_JOB_{variable} must not carry user:password (it would be readable in every "
                          f"Job's spec; the chart's {chart_value}): use a proxy that admits the job pods' addresses")
    return value


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    # The job image every pod runs. Never taken from the CR: users must not choose what runs
    # with the operator's pod template privileges.
    job_image: str = dataclasses.field(default_factory=_default_job_image)
    job_image_pull_policy: str = "IfNotPresent"
    # Secrets (in each QuantizationJob's namespace) the kubelet pulls the job image with; the
    # chart's admission policy admits Jobs with exactly these and no other.
    job_image_pull_secrets: tuple[str, ...] = ()
    # Merged into every QuantizationJob's spec.scheduling (e.g. a cluster's GPU pool label and
    # taint), so users need not repeat them: the job's own tolerations are added to these, its own
    # nodeSelector keys win over these on conflict (jobs.py, merged_scheduling).
    default_node_selector: tuple[tuple[str, str], ...] = ()
    default_tolerations: tuple[str, ...] = ()          # JSON texts (hashable, frozen)
    # The ServiceAccount (in each QuantizationJob's namespace) the job pods run as; "" = the
    # namespace's default. Its token is never mounted (automountServiceAccountToken: false): the
    # name exists for identity bindings (IRSA, GKE/AKS workload identity), not for API rights.
    job_service_account_name: str = ""
    # Proxy settings for the job pods' S3 traffic, as (variable, value) pairs among JOB_PROXY_VARIABLES;
    # only these variables, never arbitrary env (the admission policy admits exactly these values).
    job_proxy_env: tuple[tuple[str, str], ...] = ()
    # sizeLimit of the job pods' /work emptyDir (a Kubernetes quantity, e.g. "20Gi"); "" = none. The
    # kubelet evicts a pod whose /work grows past it, so a runaway download cannot fill the node.
    job_work_size_limit: str = ""
    # Namespaces to serve; empty = the whole cluster (-A).
    namespaces: tuple[str, ...] = ()
    # Numeric UID/GID of the job image's non-root user (PSS restricted needs a number).
    run_as_user: int = 65532
    # Status writes are coalesced: a burst of pod/Job events within this window becomes one
    # status patch (and one event). Job creation itself is never delayed.
    status_coalesce_seconds: float = 1.0
    # Progress that is neither final nor a problem (Pending → Running, one stage to the next) is
    # written at most once per this many seconds per QuantizationJob; final phases and problems
    # (Unschedulable, SecretNotFound, …) are written at once. Bounds writes for short runs.
    status_progress_seconds: float = 5.0
    # How often a QuantizationJob waiting on a missing CA ConfigMap (or a Job name held by a
    # foreign Job) is re-checked.
    recheck_seconds: float = 15.0
    metrics_port: int = 9090            # 0 disables the Prometheus endpoint
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"   # "" disables it
    log_level: str = "INFO"
    # "text" (one human line per record) or "json" (one JSON object per line, for log pipelines).
    log_format: str = "text"
    # Concurrent API requests of the reconciler (its own aiohttp connection pool).
    api_concurrency: int = 32
    # Leader election on a coordination.k8s.io/v1 Lease (leader.py), for several replicas of which
    # one reconciles. Off for a single process; the chart turns it on.
    leader_election: bool = False
    leader_election_namespace: str = ""     # where the Lease lives: the operator's own namespace
    leader_election_name: str = "kubeslim-operator"
    # client-go's defaults, as kube-controller-manager's --leader-elect-* flags: the leader gives up
    # after renew_deadline without a renewal, lease_duration - renew_deadline before anyone else
    # may take the Lease over.
    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if env is None else env
        d = cls()

        def num(name: str, default: float, cast: type = float, minimum: float = 0) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = cast(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if value < minimum:
                raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
            return value

        def js(name: str, kind: type) -> object:
            raw = env.get(name, "").strip()
            if not raw or raw == "null":
                return kind()
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name} must be JSON ({exc.msg})") from None
            if not isinstance(value, kind):
                raise ConfigError(f"{name} must be a JSON {kind.__name__}")
            return value

        image = env.get("KUBESLIM_JOB_IMAGE", "").strip() or d.job_image
        pull = env.get("KUBESLIM_JOB_IMAGE_PULL_POLICY", "").strip() or d.job_image_pull_policy
        if pull not in ("IfNotPresent", "Always", "Never"):
            raise ConfigError(f"KUBESLIM_JOB_IMAGE_PULL_POLICY must be IfNotPresent, Always or Never, got {pull!r}")
        pull_secrets = tuple(n.strip() for n in env.get("KUBESLIM_JOB_IMAGE_PULL_SECRETS", "").split(",") if n.strip())
        for name in pull_secrets:
            if len(name) > 253 or not _SECRET_NAME.match(name):
                raise ConfigError(f"KUBESLIM_JOB_IMAGE_PULL_SECRETS must list Secret names (comma-separated DNS-1123 "
                                  f"subdomains; the chart's job.imagePullSecrets[].name), got {name!r}")
        raw_ns = env.get("KUBESLIM_WATCH_NAMESPACES") or env.get("KUBESLIM_NAMESPACES") or ""
        namespaces = tuple(sorted({n.strip() for n in raw_ns.split(",") if n.strip()}))
        liveness = env.get("KUBESLIM_LIVENESS_ENDPOINT")
        if liveness is None and env.get("KUBESLIM_LIVENESS_PORT", "").strip():
            port = int(num("KUBESLIM_LIVENESS_PORT", 8080, int))
            liveness = f"http://0.0.0.0:{port}/healthz" if port else ""
        election = env.get("KUBESLIM_LEADER_ELECTION", "").strip().lower()
        if election not in ("", "true", "false"):
            raise ConfigError(f"KUBESLIM_LEADER_ELECTION must be true or false, got {election!r}")
        lease_duration = int(num("KUBESLIM_LEASE_DURATION_SECONDS", d.lease_duration_seconds, int, 1))
        renew_deadline = num("KUBESLIM_RENEW_DEADLINE_SECONDS", d.renew_deadline_seconds, float, 0.1)
        retry_period = num("KUBESLIM_RETRY_PERIOD_SECONDS", d.retry_period_seconds, float, 0.1)
        # client-go's own checks: a leader must give up before its Lease can expire, and must be
        # able to retry within the deadline.
        if renew_deadline >= lease_duration:
            raise ConfigError(f"KUBESLIM_RENEW_DEADLINE_SECONDS ({renew_deadline:g}) must be less than "
                              f"KUBESLIM_LEASE_DURATION_SECONDS ({lease_duration})")
        if retry_period * 1.2 >= renew_deadline:
            raise ConfigError(f"KUBESLIM_RETRY_PERIOD_SECONDS ({retry_period:g}) must be less than "
                              f"KUBESLIM_RENEW_DEADLINE_SECONDS / 1.2 ({renew_deadline / 1.2:g})")
        lease_ns = env.get("KUBESLIM_LEADER_ELECTION_NAMESPACE", "").strip()
        if election == "true" and not lease_ns:
            raise ConfigError("KUBESLIM_LEADER_ELECTION_NAMESPACE must name the Lease's namespace when "
                              "KUBESLIM_LEADER_ELECTION is true (the chart sets it to the pod's namespace)")
        service_account = env.get("KUBESLIM_JOB_SERVICE_ACCOUNT_NAME", "").strip()
        if service_account and (len(service_account) > 253 or not _SERVICE_ACCOUNT_NAME.match(service_account)):
            raise ConfigError(f"KUBESLIM_JOB_SERVICE_ACCOUNT_NAME must be a ServiceAccount name (a DNS-1123 "
                              f"subdomain; the chart's job.serviceAccountName), got {service_account!r}")
        proxy_env = tuple((var, _proxy_value(var, env.get(f"KUBESLIM_JOB_{var}", "")))
                          for var in JOB_PROXY_VARIABLES if env.get(f"KUBESLIM_JOB_{var}", "").strip())
        work_size_limit = env.get("KUBESLIM_JOB_WORK_SIZE_LIMIT", "").strip()
        if work_size_limit and not _QUANTITY.match(work_size_limit):
            raise ConfigError(f"KUBESLIM_JOB_WORK_SIZE_LIMIT must be a Kubernetes quantity such as 20Gi (the chart's "
                              f"job.workSizeLimit), got {work_size_limit!r}")
        log_format = env.get("KUBESLIM_LOG_FORMAT", "").strip().lower() or d.log_format
        if log_format not in ("text", "json"):
            raise ConfigError(f"KUBESLIM_LOG_FORMAT must be text or json (the chart's operator.logFormat), got {log_format!r}")
        selector = js("KUBESLIM_DEFAULT_NODE_SELECTOR", dict)
        tolerations = js("KUBESLIM_DEFAULT_TOLERATIONS", list)
        return cls(
            job_image=image,
            job_image_pull_policy=pull,
            job_image_pull_secrets=pull_secrets,
            default_node_selector=tuple(sorted((str(k), str(v)) for k, v in selector.items())),  # type: ignore[union-attr]
            default_tolerations=tuple(json.dumps(t, sort_keys=True) for t in tolerations),  # type: ignore[union-attr]
            job_service_account_name=service_account,
            job_proxy_env=proxy_env,
            job_work_size_limit=work_size_limit,
            namespaces=namespaces,
            run_as_user=int(num("KUBESLIM_RUN_AS_USER", d.run_as_user, int, 1)),
            status_coalesce_seconds=num("KUBESLIM_STATUS_COALESCE_SECONDS", d.status_coalesce_seconds),
            status_progress_seconds=num("KUBESLIM_STATUS_PROGRESS_SECONDS", d.status_progress_seconds),
            recheck_seconds=num("KUBESLIM_RECHECK_SECONDS", d.recheck_seconds, float, 0.1),
            metrics_port=int(num("KUBESLIM_METRICS_PORT", d.metrics_port, int)),
            liveness_endpoint=(d.liveness_endpoint if liveness is None else liveness).strip(),
            log_level=env.get("KUBESLIM_LOG_LEVEL", d.log_level).strip().upper() or d.log_level,
            log_format=log_format,
            api_concurrency=int(num("KUBESLIM_API_CONCURRENCY", d.api_concurrency, int, 1)),
            leader_election=election == "true",
            leader_election_namespace=lease_ns,
            leader_election_name=env.get("KUBESLIM_LEADER_ELECTION_NAME", "").strip() or d.leader_election_name,
            lease_duration_seconds=lease_duration,
            renew_deadline_seconds=renew_deadline,
            retry_period_seconds=retry_period,
        )
