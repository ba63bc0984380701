"""QuantizationJob (typed spec) → batch/v1 Job manifest. Pure: no I/O, no clock, no randomness,
so the same generation always yields the same Job (name included)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from kubeslim_api import sweep
from kubeslim_api.contract import NON_RETRYABLE_EXIT_CODES, STAGES, TERMINATION_MESSAGE_PATH, WORK_DIR
from kubeslim_api.spec import QuantizationJobSpec

from . import constants as c
from .config import OperatorConfig

MAX_JOB_NAME = 63
# Where the projected ServiceAccount token of spec.storage.credentials.webIdentity is mounted; the
# chart's admission policy admits this one token volume (name, single source, path) and no other.
WEB_IDENTITY_VOLUME = "web-identity"
WEB_IDENTITY_DIR = "/var/run/secrets/kubeslim/web-identity"
WEB_IDENTITY_FILE = "token"
# The kubelet refreshes a projected token at 80 % of its life; botocore re-reads the file on each
# AssumeRoleWithWebIdentity, so an hour-long token serves runs of any length.
WEB_IDENTITY_TOKEN_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class Owner:
    """The identity of the QuantizationJob a Job is built for."""
    name: str
    namespace: str
    uid: str
    generation: int


def job_name(name: str, generation: int) -> str:
    """`<name>-g<generation>`; names that would pass 63 characters are cut and given a short hash
    of the full name, so two long names with a common prefix never collide."""
    suffix = f"-g{generation}"
    full = f"{name}{suffix}"
    if len(full) <= MAX_JOB_NAME:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = name[: MAX_JOB_NAME - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{suffix}"


def owner_reference(owner: Owner) -> dict[str, Any]:
    # No blockOwnerDeletion: it would need update on quantizationjobs/finalizers, and background
    # garbage collection removes the Job and its pods without it.
    return {"apiVersion": c.API_VERSION, "kind": c.KIND, "name": owner.name, "uid": owner.uid, "controller": True}


def child_labels(owner: Owner) -> dict[str, str]:
    return {
        c.LABEL_MANAGED_BY: c.MANAGER,
        c.LABEL_COMPONENT: c.COMPONENT,
        c.LABEL_OWNER_UID: owner.uid,
        c.LABEL_GENERATION: str(owner.generation),
    }


def spec_json(spec: QuantizationJobSpec) -> str:
    """The spec as the pod reads it from KUBESLIM_SPEC: compact camelCase JSON with defaults filled."""
    return spec.model_dump_json(by_alias=True)


def _env(spec: QuantizationJobSpec) -> list[dict[str, Any]]:
    st = spec.storage
    env: list[dict[str, Any]] = [
        {"name": "KUBESLIM_SPEC", "value": spec_json(spec)},
        {"name": "HOME", "value": c.HOME_DIR},
        {"name": "MPLCONFIGDIR", "value": f"{c.HOME_DIR}/.config/matplotlib"},
        {"name": "XDG_CACHE_HOME", "value": f"{c.HOME_DIR}/.cache"},
        {"name": "AWS_REGION", "value": st.region},
        {"name": "AWS_DEFAULT_REGION", "value": st.region},
    ]
    if st.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": st.endpoint})
    if st.credentials_secret is not None:
        cs = st.credentials_secret
        # Only references: the values never pass through the operator.
        env += [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": cs.name, "key": cs.access_key_id_key}}},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": cs.name, "key": cs.secret_access_key_key}}},
        ]
    if st.credentials is not None:
        # boto3's own AssumeRoleWithWebIdentity provider reads these two (no key pair in the pod).
        env += [
            {"name": "AWS_ROLE_ARN", "value": st.credentials.web_identity.role_arn},
            {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{WEB_IDENTITY_DIR}/{WEB_IDENTITY_FILE}"},
        ]
    if st.ca_bundle is not None:
        env.append({"name": "AWS_CA_BUNDLE", "value": f"{c.CA_DIR}/{c.CA_FILE}"})
    return env


def _resources(spec: QuantizationJobSpec) -> dict[str, Any]:
    r = spec.resources
    amounts: dict[str, Any] = {"cpu": str(r.cpu), "memory": r.memory}
    if r.gpu > 0:
        amounts[r.gpu_resource_name] = str(r.gpu)
    # Requests == limits: Guaranteed QoS, so a long calibration is not the first to be evicted.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _container(stage: str, image: str, pull: str, env: list[dict[str, Any]], resources: dict[str, Any],
               mounts: list[dict[str, Any]], uid: int) -> dict[str, Any]:
    return {
        "name": stage,
        "image": image,
        "imagePullPolicy": pull,
        "command": ["kubeslim-job"],
        # Both paths explicit: the contract between Job and CLI is in the pod spec, not in defaults.
        "args": [stage, "--work-dir", WORK_DIR, "--termination-log", TERMINATION_MESSAGE_PATH],
        "env": env,
        "resources": resources,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # A stage that crashes before writing its result still explains itself with its log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def pod_failure_policy() -> dict[str, Any]:
    return {"rules": [
        # Evictions, preemption and node drains are not the run's fault: retry without counting.
        {"action": c.POD_FAILURE_IGNORE, "onPodConditions": [{"type": "DisruptionTarget"}]},
        # Bad input and a failed accuracy gate cannot be fixed by retrying. No containerName: the
        # rule covers the init containers (export, calibrate) as well as verify.
        {"action": c.POD_FAILURE_FAIL_JOB, "onExitCodes": {"operator": "In", "values": list(NON_RETRYABLE_EXIT_CODES)}},
    ]}


def merged_scheduling(spec: QuantizationJobSpec, config: OperatorConfig) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The pod's nodeSelector and tolerations: the chart's defaults merged with the QuantizationJob's
    own. nodeSelector: the union, the job's own value winning on a shared key (its pool choice is
    deliberate). Tolerations: the defaults, then the job's own ones not already among them (a
    toleration only widens where a pod may go, so none of either side is dropped)."""
    sch = spec.scheduling
    node_selector = {**dict(config.default_node_selector), **sch.node_selector}
    tolerations = [json.loads(t) for t in config.default_tolerations]
    # Only what the user wrote: the typed core/v1 models hold None for every field left out.
    for own in (t.model_dump(by_alias=True, exclude_none=True) for t in sch.tolerations):
        if own not in tolerations:
            tolerations.append(own)
    return node_selector, tolerations


def build_job(owner: Owner, spec: QuantizationJobSpec, config: OperatorConfig) -> dict[str, Any]:
    """The Job for one generation of a QuantizationJob."""
    name = job_name(owner.name, owner.generation)
    labels = child_labels(owner)
    job_labels = dict(labels)
    if spec.scheduling.queue_name:
        # Kueue admits (and unsuspends) the Job; suspend handling is Kueue's business.
        job_labels[c.LABEL_KUEUE_QUEUE] = spec.scheduling.queue_name
    annotations = {c.ANNOTATION_OWNER_NAME: owner.name}

    env = _env(spec) + [{"name": name, "value": value} for name, value in config.job_proxy_env]
    parallel = sweep.is_sweep(spec.quantization)
    if parallel:
        env.append({"name": sweep.URI_ENV, "value": sweep.work_uri(spec.output.uri, owner.uid, owner.generation)})
    resources = _resources(spec)
    mounts = [
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": c.HOME_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {"sizeLimit": config.job_work_size_limit} if config.job_work_size_limit else {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
    ]
    if spec.storage.ca_bundle is not None:
        ca = spec.storage.ca_bundle
        mounts.append({"name": "ca-bundle", "mountPath": c.CA_DIR, "readOnly": True})
        volumes.append({"name": "ca-bundle", "configMap": {
            "name": ca.config_map_name, "items": [{"key": ca.key, "path": c.CA_FILE}]}})

    if spec.storage.credentials is not None:
        # A token for STS only (its audience), not for the API server: automountServiceAccountToken
        # stays false. It names the pod's ServiceAccount (job.serviceAccountName), which the role's
        # trust policy admits.
        mounts.append({"name": WEB_IDENTITY_VOLUME, "mountPath": WEB_IDENTITY_DIR, "readOnly": True})
        volumes.append({"name": WEB_IDENTITY_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": spec.storage.credentials.web_identity.audience,
            "expirationSeconds": WEB_IDENTITY_TOKEN_SECONDS, "path": WEB_IDENTITY_FILE}}]}})

    uid = config.run_as_user
    export, calibrate, verify = (
        _container(stage, config.job_image, config.job_image_pull_policy, env, resources, mounts, uid) for stage in STAGES)

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",          # required by podFailurePolicy; the Job retries
        "automountServiceAccountToken": False,   # the pod needs no API rights
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [export, calibrate],
        "containers": [verify],
        "volumes": volumes,
    }
    if config.job_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in config.job_image_pull_secrets]
    if config.job_service_account_name:
        # Still no token in the pod (automountServiceAccountToken above): the name is for identity
        # bindings such as IRSA or GKE/AKS workload identity.
        pod_spec["serviceAccountName"] = config.job_service_account_name
    sch = spec.scheduling
    node_selector, tolerations = merged_scheduling(spec, config)
    affinity = sch.affinity.model_dump(by_alias=True, exclude_none=True)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if affinity:
        pod_spec["affinity"] = affinity
    if sch.priority_class_name:
        pod_spec["priorityClassName"] = sch.priority_class_name
    if sch.runtime_class_name:
        pod_spec["runtimeClassName"] = sch.runtime_class_name

    pm = spec.pod_metadata
    pod_labels = {**pm.labels, **labels}            # ours win: the operator finds pods by them
    pod_annotations = {**pm.annotations, **annotations}

    rp = spec.run_policy
    job_spec: dict[str, Any] = {
        "backoffLimit": rp.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec},
    }
    if parallel:
        # kubeslim_api.sweep: one index per candidate and a final one; the Job controller gives each
        # pod its JOB_COMPLETION_INDEX. backoffLimit (not per index) still counts every failed pod,
        # so a failing index ends the Job as it ends a one-pod run.
        q = spec.quantization
        job_spec.update(completionMode="Indexed", completions=sweep.completions(q), parallelism=sweep.pods_at_once(q))
    if rp.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = rp.active_deadline_seconds
    if rp.ttl_seconds_after_finished is not None:
        # The TTL removes the Job and its pods, never the QuantizationJob (GitOps would recreate it).
        job_spec["ttlSecondsAfterFinished"] = rp.ttl_seconds_after_finished

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": job_labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": job_spec,
    }
