"""Operator configuration, read once from the environment (the Helm chart sets these).

pydantic-settings maps each field to its variable (KUBESLIM_ + the field's name in capitals) and
types it; the validators below keep the chart's conventions: an empty or blank variable means the
default, lists are comma-separated, node selector and tolerations are JSON. A bad value is refused
with a ConfigError that names the variable (and the chart value that sets it), every bad one at once.
Its cost, measured importing the operator and reading its config: 67.4 MB RSS against 66.0 MB for
the hand-written parser it replaced, start-up time within the noise (about 2 s on 2 shared cores)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

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


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBESLIM_", env_ignore_empty=True, frozen=True, extra="ignore")
    # The job image every pod runs. Never taken from the CR: users must not choose what runs
    # with the operator's pod template privileges.
    job_image: str = Field(default_factory=_default_job_image)
    job_image_pull_policy: str = "IfNotPresent"
    # Secrets (in each QuantizationJob's namespace) the kubelet pulls the job image with; the
    # chart's admission policy admits Jobs with exactly these and no other.
    job_image_pull_secrets: Annotated[tuple[str, ...], NoDecode] = ()
    # Merged into every QuantizationJob's spec.scheduling (e.g. a cluster's GPU pool label and
    # taint), so users need not repeat them: the job's own tolerations are added to these, its own
    # nodeSelector keys win over these on conflict (jobs.py, merged_scheduling).
    default_node_selector: Annotated[tuple[tuple[str, str], ...], NoDecode] = ()
    default_tolerations: Annotated[tuple[str, ...], NoDecode] = ()          # JSON texts (hashable, frozen)
    # The ServiceAccount (in each QuantizationJob's namespace) the job pods run as; "" = the
    # namespace's default. Its token is never mounted (automountServiceAccountToken: false): the
    # name exists for identity bindings (IRSA, GKE/AKS workload identity), not for API rights.
    job_service_account_name: str = ""
    # Proxy settings for the job pods' S3 traffic, as (variable, value) pairs among JOB_PROXY_VARIABLES;
    # only these variables, never arbitrary env (the admission policy admits exactly these values).
    job_proxy_env: Annotated[tuple[tuple[str, str], ...], NoDecode] = ()
    # sizeLimit of the job pods' /work emptyDir (a Kubernetes quantity, e.g. "20Gi"); "" = none. The
    # kubelet evicts a pod whose /work grows past it, so a runaway download cannot fill the node.
    job_work_size_limit: str = ""
    # Namespaces to serve; empty = the whole cluster (-A).
    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    # Numeric UID/GID of the job image's non-root user (PSS restricted needs a number).
    run_as_user: int = Field(65532, ge=1)
    # Status writes are coalesced: a burst of pod/Job events within this window becomes one
    # status patch (and one event). Job creation itself is never delayed.
    status_coalesce_seconds: float = Field(1.0, ge=0)
    # Progress that is neither final nor a problem (Pending → Running, one stage to the next) is
    # written at most once per this many seconds per QuantizationJob; final phases and problems
    # (Unschedulable, SecretNotFound, …) are written at once. Bounds writes for short runs.
    status_progress_seconds: float = Field(5.0, ge=0)
    # How often a QuantizationJob waiting on a missing CA ConfigMap (or a Job name held by a
    # foreign Job) is re-checked.
    recheck_seconds: float = Field(15.0, ge=0.1)
    metrics_port: int = Field(9090, ge=0)            # 0 disables the Prometheus endpoint
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"   # "" disables it
    log_level: str = "INFO"
    # "text" (one human line per record) or "json" (one JSON object per line, for log pipelines).
    log_format: str = "text"
    # Concurrent API requests of the reconciler (its own aiohttp connection pool).
    api_concurrency: int = Field(32, ge=1)
    # Leader election on a coordination.k8s.io/v1 Lease (leader.py), for several replicas of which
    # one reconciles. Off for a single process; the chart turns it on.
    leader_election: bool = False
    leader_election_namespace: str = ""     # where the Lease lives: the operator's own namespace
    leader_election_name: str = "kubeslim-operator"
    # client-go's defaults, as kube-controller-manager's --leader-elect-* flags: the leader gives up
    # after renew_deadline without a renewal, lease_duration - renew_deadline before anyone else
    # may take the Lease over.
    lease_duration_seconds: int = Field(15, ge=1)
    renew_deadline_seconds: float = Field(10.0, ge=0.1)
    retry_period_seconds: float = Field(2.0, ge=0.1)


    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        # Constructing a config takes only its arguments (tests build them freely); the process
        # environment is read where the operator starts, by from_env.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if env is None else env
        values = _EnvOf(cls, env)()
        values.update(_from_several_variables(env))
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError("; ".join(_explain(err) for err in exc.errors())) from None

    @field_validator("job_image_pull_policy")
    @classmethod
    def _pull_policy(cls, value: str) -> str:
        if value not in ("IfNotPresent", "Always", "Never"):
            raise ValueError(f"must be IfNotPresent, Always or Never, got {value!r}")
        return value

    @field_validator("job_image_pull_secrets", "namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return tuple(n.strip() for n in value.split(",") if n.strip()) if isinstance(value, str) else value

    @field_validator("namespaces")
    @classmethod
    def _namespace_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    @field_validator("job_image_pull_secrets")
    @classmethod
    def _secret_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if len(name) > 253 or not _SECRET_NAME.match(name):
                raise ValueError(f"must list Secret names (comma-separated DNS-1123 subdomains; the chart's "
                                 f"job.imagePullSecrets[].name), got {name!r}")
        return value

    @field_validator("default_node_selector", mode="before")
    @classmethod
    def _node_selector(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return tuple(sorted((str(k), str(v)) for k, v in _json(value, dict).items()))

    @field_validator("default_tolerations", mode="before")
    @classmethod
    def _tolerations(cls, value: Any) -> Any:
        return tuple(json.dumps(t, sort_keys=True) for t in _json(value, list)) if isinstance(value, str) else value

    @field_validator("job_service_account_name")
    @classmethod
    def _service_account(cls, value: str) -> str:
        if value and (len(value) > 253 or not _SERVICE_ACCOUNT_NAME.match(value)):
            raise ValueError(f"must be a ServiceAccount name (a DNS-1123 subdomain; the chart's "
                             f"job.serviceAccountName), got {value!r}")
        return value

    @field_validator("job_work_size_limit")
    @classmethod
    def _work_size_limit(cls, value: str) -> str:
        if value and not _QUANTITY.match(value):
            raise ValueError(f"must be a Kubernetes quantity such as 20Gi (the chart's job.workSizeLimit), got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return value.upper()

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        value = value.lower() if isinstance(value, str) else value
        if value not in ("text", "json"):
            raise ValueError(f"must be text or json (the chart's operator.logFormat), got {value!r}")
        return value

    @field_validator("leader_election", mode="before")
    @classmethod
    def _true_or_false(cls, value: Any) -> Any:
        # Stricter than pydantic's bool (which takes yes/on/1): the chart writes true or false.
        if isinstance(value, str):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"must be true or false, got {value.lower()!r}")
            return value.lower() == "true"
        return value

    @model_validator(mode="after")
    def _leader_election_fits(self) -> "OperatorConfig":
        # client-go's own checks: a leader must give up before its Lease can expire, and must be
        # able to retry within the deadline.
        if self.renew_deadline_seconds >= self.lease_duration_seconds:
            raise ValueError(f"KUBESLIM_RENEW_DEADLINE_SECONDS ({self.renew_deadline_seconds:g}) must be less than "
                             f"KUBESLIM_LEASE_DURATION_SECONDS ({self.lease_duration_seconds})")
        if self.retry_period_seconds * 1.2 >= self.renew_deadline_seconds:
            raise ValueError(f"KUBESLIM_RETRY_PERIOD_SECONDS ({self.retry_period_seconds:g}) must be less than "
                             f"KUBESLIM_RENEW_DEADLINE_SECONDS / 1.2 ({self.renew_deadline_seconds / 1.2:g})")
        if self.leader_election and not self.leader_election_namespace:
            raise ValueError("KUBESLIM_LEADER_ELECTION_NAMESPACE must name the Lease's namespace when "
                             "KUBESLIM_LEADER_ELECTION is true (the chart sets it to the pod's namespace)")
        return self

    # Defined last so that it runs first: pydantic runs "before" validators last-defined first.
    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and info.field_name != "liveness_endpoint":   # "" disables the probe
            value = value.strip()
            if not value:
                return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value


class _EnvOf(EnvSettingsSource):
    """pydantic-settings' environment source over the mapping from_env is given (the process
    environment, or a test's dict), with the exact upper-case names the chart sets. It replaces
    _load_env_vars as pydantic-settings' own DotEnvSettingsSource does (pyproject pins <3)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._env.items() if k == k.upper() and not (self.env_ignore_empty and v == "")}


# Fields that more than one variable sets, which a one-variable-per-field source cannot read.
def _from_several_variables(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    namespaces = env.get("KUBESLIM_WATCH_NAMESPACES") or env.get("KUBESLIM_NAMESPACES")
    if namespaces:
        out["namespaces"] = namespaces
    # KUBESLIM_LIVENESS_ENDPOINT, even empty (the probe off), wins over the older KUBESLIM_LIVENESS_PORT.
    if "KUBESLIM_LIVENESS_ENDPOINT" in env:
        out["liveness_endpoint"] = env["KUBESLIM_LIVENESS_ENDPOINT"].strip()
    elif raw_port := env.get("KUBESLIM_LIVENESS_PORT", "").strip():
        try:
            port = int(raw_port)
        except ValueError:
            raise ConfigError(f"KUBESLIM_LIVENESS_PORT must be a number, got {raw_port!r}") from None
        if port < 0:
            raise ConfigError(f"KUBESLIM_LIVENESS_PORT must be >= 0, got {raw_port!r}")
        out["liveness_endpoint"] = f"http://0.0.0.0:{port}/healthz" if port else ""
    out["job_proxy_env"] = tuple((var, _proxy_value(var, env.get(f"KUBESLIM_JOB_{var}", "")))
                                 for var in JOB_PROXY_VARIABLES if env.get(f"KUBESLIM_JOB_{var}", "").strip())
    return out


def _json(raw: str, kind: type) -> Any:
    """A JSON variable's value of type `kind`; null is the empty one."""
    if raw == "null":
        return kind()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"must be JSON ({exc.msg})") from None
    if not isinstance(value, kind):
        raise ValueError(f"must be a JSON {kind.__name__}")
    return value


_VARIABLE_OF_FIELD = {"namespaces": "KUBESLIM_WATCH_NAMESPACES"}
_NUMBER_ERRORS = ("int_parsing", "int_from_float", "float_parsing", "int_type", "float_type")


def _explain(err: Any) -> str:
    """One pydantic error in the terms of the environment: the variable, what it must be, what it was."""
    if not err["loc"]:           # a check across fields (model_validator): its message names them
        return str(err["ctx"]["error"])
    field = str(err["loc"][0])
    name = _VARIABLE_OF_FIELD.get(field, f"KUBESLIM_{field.upper()}")
    got = err.get("input")
    if err["type"] == "value_error":
        return f"{name} {err['ctx']['error']}"
    if err["type"] == "greater_than_equal":
        return f"{name} must be >= {err['ctx']['ge']:g}, got {got!r}"
    if err["type"] in _NUMBER_ERRORS:
        return f"{name} must be a number, got {got!r}"
    return f"{name} is invalid: {err['msg']}, got {got!r}"
