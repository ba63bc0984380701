"""Job + Pods → QuantizationJob status. Pure: the reconciler passes in everything it saw (and the
clock), so a restarted operator derives the same status from the same children.

The flow: `observe()` condenses the Job and its pods into a `Verdict` (phase, stage, reason,
message, results, per-condition facts); `build_status()` turns a verdict into the status mapping
with kstatus conditions, keeping each condition's lastTransitionTime while its status holds.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from kubeslim_api import reasons
from kubeslim_api.contract import NON_RETRYABLE_EXIT_CODES, STAGES, BadResultMessage, StageResult, decode, metric_value
from kubeslim_api.spec import QuantizationJobSpec, SpecError
from kubeslim_api.text import truncate

from . import constants as c
from .constants import Obj
from .jobs import spec_field
from .times import parse_time


@dataclasses.dataclass(frozen=True)
class Fact:
    """One condition's facts: status True/False, reason, message."""
    status: bool
    reason: str
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Verdict:
    phase: str
    reason: str = ""
    message: str = ""
    stage: str = ""
    scheduled: Fact | None = None      # None: nothing new (keep what the status says)
    config: Fact | None = None
    gate: Fact | None = None
    onnx: Fact | None = None           # spec.output.onnx only: was model.onnx exported, and if not, why
    results: Obj | None = None
    artifacts: Obj | None = None
    start_time: str | None = None
    completion_time: str | None = None
    # Nothing to tell yet: the pod finished but the Job controller has not concluded (Complete /
    # Failed) — the next Job event will. The reconciler writes nothing for such a verdict.
    hold: bool = False

    @property
    def final(self) -> bool:
        return self.phase in c.FINAL_PHASES


# ----------------------------------------------------------------------------------------------
# Small readers over k8s-shaped dicts (the reconciler's caches keep that shape, trimmed).

def _true_conditions(obj: Obj) -> dict[str, Obj]:
    return {x.get("type", ""): x for x in (obj.get("status") or {}).get("conditions") or [] if x.get("status") == "True"}


def _created(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("creationTimestamp") or "", meta.get("name") or ""


def _statuses(pod: Obj) -> list[Obj]:
    """Container statuses in stage order: export, calibrate (init), verify."""
    st = pod.get("status") or {}
    by_name = {s.get("name"): s for s in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])}
    return [by_name[n] for n in STAGES if n in by_name]


def _last_line(text: str, limit: int = c.KUBELET_MESSAGE_MAX_CHARS) -> str:
    """The last non-blank line (where kubelet and Go put the cause), cut to `limit` characters."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return truncate(lines[-1] if lines else "", limit)


def _sentence(text: str) -> str:
    text = (text or "").strip()
    return text if not text or text[-1] in ".!?" else text + "."


_SECRET_MISSING = re.compile(r'secret "([^"]+)" not found')
_SECRET_KEY_MISSING = re.compile(r"couldn't find key (\S+) in Secret (\S+)")
_CONFIGMAP_MISSING = re.compile(r'configmap "([^"]+)" not found', re.IGNORECASE)


def config_problem_from_kubelet(message: str) -> Fact:
    """Kubelet's CreateContainerConfigError message → a ConfigAvailable=False fact. The operator
    may not read Secrets, so this is how a missing Secret or key shows up: kubelet refuses to
    start the container and keeps retrying, and the run proceeds once the Secret appears."""
    if m := _SECRET_KEY_MISSING.search(message):
        return Fact(False, reasons.SECRET_KEY_NOT_FOUND,
                    f"Secret {m.group(2)} has no key {m.group(1)}; add the key or set "
                    "spec.storage.credentialsSecret.accessKeyIdKey/secretAccessKeyKey to the keys it has.")
    if m := _SECRET_MISSING.search(message):
        return Fact(False, reasons.SECRET_NOT_FOUND,
                    f"Secret {m.group(1)} (spec.storage.credentialsSecret.name) does not exist in this namespace; "
                    "create it and the run starts by itself.")
    if m := _CONFIGMAP_MISSING.search(message):
        return Fact(False, reasons.CONFIGMAP_NOT_FOUND,
                    f"ConfigMap {m.group(1)} (spec.storage.caBundle.configMapName) does not exist in this namespace; "
                    "create it and the run starts by itself.")
    return Fact(False, reasons.CONTAINER_CONFIG, _sentence(f"Kubelet cannot start the pod: {_last_line(message)}"))


# ----------------------------------------------------------------------------------------------
# Reading a stage's result.

@dataclasses.dataclass(frozen=True)
class StageOutcome:
    container: str                 # export | calibrate | verify
    exit_code: int
    reason: str                    # kubelet's terminated.reason (Completed, Error, OOMKilled…)
    message: str                   # the termination message (JSON, or a log tail on a crash)


def _terminal_outcome(pod: Obj) -> StageOutcome | None:
    """The first stage of a pod that terminated with a non-zero code, else verify's outcome."""
    last: StageOutcome | None = None
    for s in _statuses(pod):
        term = (s.get("state") or {}).get("terminated")
        if not term:
            continue
        last = StageOutcome(s["name"], int(term.get("exitCode") or 0), term.get("reason") or "", term.get("message") or "")
        if last.exit_code != 0:
            return last
    return last


# The kubelet's eviction message for an emptyDir past its sizeLimit (pkg/kubelet/eviction,
# emptyDirMessageFmt); "work" is the /work volume jobs.py sizes with job.workSizeLimit.
_WORK_VOLUME_EVICTION = re.compile(r'Usage of EmptyDir volume "work" exceeds the limit "([^"]+)"')


def _work_volume_full(pod: Obj, attempts: int, **times: Any) -> Verdict | None:
    """A pod the kubelet evicted because /work outgrew its sizeLimit, in the user's terms: the
    containers were only killed (exit 137), which alone would read as a crash."""
    st = pod.get("status") or {}
    found = _WORK_VOLUME_EVICTION.search(st.get("message") or "") if st.get("reason") == "Evicted" else None
    if found is None:
        return None
    out = _terminal_outcome(pod)
    stage = c.STAGE_NAMES.get(out.container, "") if out is not None else ""
    during = f" during the {out.container} stage" if out is not None else ""
    tries = f" (attempt {attempts})" if attempts > 1 else ""
    return Verdict(c.FAILED, reasons.WORK_VOLUME_FULL,
                   f"The /work volume outgrew its size limit ({found.group(1)}, the chart's job.workSizeLimit){during}"
                   f"{tries} and the kubelet evicted the pod; raise job.workSizeLimit or use a smaller model or "
                   "dataset (spec.data.calibration / spec.data.evaluation).", stage, **times)


def _gate_fact(result: StageResult) -> Fact | None:
    g = result.gate
    if g is None:
        return None
    drop = result.results.accuracy_drop if result.results else None
    drop_text = f"{drop:.4f}" if drop is not None else "unknown"
    if g.passed:
        return Fact(True, reasons.GATE_PASSED, f"The {g.metric} drop {drop_text} is within maxAccuracyDrop {g.max_accuracy_drop}.")
    return Fact(False, reasons.GATE_FAILED, f"The {g.metric} drop {drop_text} exceeds maxAccuracyDrop {g.max_accuracy_drop}.")


def _onnx_fact(result: StageResult) -> Fact | None:
    """results.onnx → the OnnxExported condition. False is a warning, not a failure: the Paddle int8
    model passed its gate and is published either way."""
    o = result.results.onnx if result.results else None
    if o is None:
        return None
    return Fact(o.exported, o.reason, _sentence(o.message or ("model.onnx exported." if o.exported else "model.onnx not exported.")))


def _success_message(result: StageResult) -> str:
    r = result.results
    if r is None or r.int8 is None:
        return "Quantization finished."
    metric = result.gate.metric if result.gate else "top1"
    fp32 = metric_value(r.fp32, metric)        # fidelity: the worst output cosine (fp32: 1.0)
    int8 = metric_value(r.int8, metric)
    parts = [f"int8 ({r.int8.algo}) {metric} {int8:.4f} vs fp32 {fp32:.4f}" if fp32 is not None and int8 is not None
             else f"int8 ({r.int8.algo}) verified"]
    if r.accuracy_drop is not None:
        parts.append(f"drop {r.accuracy_drop:.4f}")
    if r.speedup is not None:
        parts.append(f"{r.speedup:.2f}x faster on {r.backend}")
    if r.fallback is not None and r.fallback.fp32_layers:
        cost = f", {r.fallback.latency_cost:.2f}x the latency of plain int8" if r.fallback.latency_cost else ""
        parts.append(f"{len(r.fallback.fp32_layers)} layer(s) kept in fp32 ({', '.join(r.fallback.fp32_layers)}{cost})")
    where = result.artifacts.model if result.artifacts and result.artifacts.model else None
    if where:
        parts.append(f"model at {where}")
    if result.artifacts and result.artifacts.onnx:
        parts.append(f"ONNX at {result.artifacts.onnx}")
    elif r.onnx is not None:
        parts.append(f"no ONNX ({r.onnx.reason}; see the {c.ONNX_EXPORTED} condition)")
    return "; ".join(parts) + "."


def _result_fields(result: StageResult) -> tuple[Obj | None, Obj | None]:
    return (result.results.dump() if result.results else None,
            result.artifacts.dump() if result.artifacts else None)


def _verdict_from_result(out: StageOutcome, result: StageResult, **times: Any) -> Verdict:
    """A decoded stage result: success, a failed gate, or the stage's own failure reason."""
    stage = c.STAGE_NAMES[out.container]
    results, artifacts = _result_fields(result)
    gate = _gate_fact(result)
    if gate is not None and not gate.status:
        msg = result.message or gate.message
        msg = _sentence(msg) if result.message else gate.message[:-1] + "; raise spec.verification.maxAccuracyDrop or try other spec.quantization.algos."
        return Verdict(c.FAILED, reasons.GATE_FAILED, msg, stage, gate=gate, results=results, artifacts=artifacts, **times)
    if out.exit_code == 0 and result.ok:
        if out.container != "verify":
            return Verdict(c.FAILED, reasons.BAD_RESULT, f"The Job completed but its last result came from {out.container}, not verify.", stage, **times)
        return Verdict(c.SUCCEEDED, "", _success_message(result), "", gate=gate, onnx=_onnx_fact(result), results=results,
                       artifacts=artifacts, **times)
    reason = result.reason or reasons.STAGE_FAILED
    msg = _sentence(result.message) if result.message else f"The {out.container} stage failed with exit code {out.exit_code}."
    return Verdict(c.FAILED, reason, msg, stage, gate=gate, results=results, artifacts=artifacts, **times)


def _verdict_from_failed_stage(out: StageOutcome, spec: QuantizationJobSpec | None, attempts: int, **times: Any) -> Verdict:
    stage = c.STAGE_NAMES[out.container]
    tries = f" (attempt {attempts})" if attempts > 1 else ""
    if out.reason == "OOMKilled":
        mem = spec.resources.memory if spec else "the limit"
        return Verdict(c.FAILED, reasons.OOM,
                       f"The {out.container} stage ran out of memory ({mem}){tries}; raise spec.resources.memory "
                       "or lower spec.quantization.batchSize / spec.verification.batchSize.", stage, **times)
    try:
        result = decode(out.message)
    except BadResultMessage as exc:
        if out.exit_code in NON_RETRYABLE_EXIT_CODES:
            # These codes promise a v1 result; a stage that breaks the promise is a bug, not input.
            return Verdict(c.FAILED, reasons.BAD_RESULT,
                           f"The {out.container} stage exited with code {out.exit_code} but its termination message "
                           f"is not a result ({exc}); check that the job image matches the operator version.", stage, **times)
        tail = _last_line(out.message)
        return Verdict(c.FAILED, reasons.STAGE_FAILED,
                       f"The {out.container} stage exited with code {out.exit_code}{tries}"
                       + (f" after logging: {tail}" if tail else "") + "; see the pod's logs.", stage, **times)
    return _verdict_from_result(out, result, **times)


# ----------------------------------------------------------------------------------------------
# A Job held by Kueue: Kueue's webhook suspends a Job that names a queue and makes a Workload for
# it; its conditions say why the Job waits. Kueue is optional: without it nothing suspends a Job.

@dataclasses.dataclass(frozen=True)
class Queue:
    """What the reconciler learnt of the Workload of a suspended Job."""
    workload: Obj | None = None        # trimmed (objects.trim_workload); None: Kueue has made none yet
    api: str = "served"                # served | absent (no Kueue Workload API) | forbidden (no RBAC to read it)


# Kueue's workload controller: "LocalQueue <name> doesn't exist".
_LOCAL_QUEUE_MISSING = re.compile(r"^LocalQueue \S+ doesn't exist")


def _clause(text: str, limit: int) -> str:
    """Foreign text as one clause of our sentence: white space folded, no final full stop, cut to `limit`."""
    return truncate(" ".join((text or "").split()).rstrip("."), limit)


def queued_verdict(job: Obj, queue: Queue | None) -> Verdict:
    """Why a suspended Job waits, in the words of its Workload's conditions."""
    meta = job.get("metadata") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    lq = (meta.get("labels") or {}).get(c.LABEL_KUEUE_QUEUE)
    if not lq:
        return Verdict(c.PENDING, reasons.QUEUED, f"Job {name} is suspended; it starts when it is resumed.")
    if queue is not None and queue.api == "absent":
        return Verdict(c.PENDING, reasons.KUEUE_UNAVAILABLE,
                       f"Job {name} is suspended for Kueue LocalQueue {lq} (spec.scheduling.queueName), but this "
                       "cluster serves no Kueue Workloads; install Kueue or remove spec.scheduling.queueName.")
    if queue is not None and queue.api == "forbidden":
        return Verdict(c.PENDING, reasons.QUEUED,
                       f"Job {name} waits in Kueue LocalQueue {lq}; the operator may not list Kueue Workloads "
                       "(its RBAC lacks workloads.kueue.x-k8s.io list) to say why.")
    wl = queue.workload if queue is not None else None
    if wl is None:
        return Verdict(c.PENDING, "", f"Job {name} waits for Kueue to create its Workload in LocalQueue {lq}.")
    conds = {x.get("type"): x for x in (wl.get("status") or {}).get("conditions") or []}
    cq = ((wl.get("status") or {}).get("admission") or {}).get("clusterQueue") or "its ClusterQueue"

    def true(t: str) -> bool:
        return (conds.get(t) or {}).get("status") == "True"

    if true("Admitted"):
        return Verdict(c.PENDING, "", f"Kueue admitted Job {name} in ClusterQueue {cq}; the Job starts.")
    if true("QuotaReserved"):
        return Verdict(c.PENDING, reasons.QUEUED,
                       f"Job {name} has quota in ClusterQueue {cq} (LocalQueue {lq}); Kueue waits for its admission checks.")
    reserved = conds.get("QuotaReserved")
    if reserved is None:
        # Not Queued yet: the status is only rewritten when its reason changes, and Kueue's answer
        # (why there is no quota) must be in the first Queued message.
        return Verdict(c.PENDING, "", f"Job {name} is in Kueue LocalQueue {lq}; Kueue has not yet evaluated its Workload "
                                      f"{(wl.get('metadata') or {}).get('name', '')}.")
    why = _clause(reserved.get("message") or "", c.KUEUE_MESSAGE_MAX_CHARS)
    if reserved.get("reason") == "Inadmissible":
        if _LOCAL_QUEUE_MISSING.match(why):
            return Verdict(c.PENDING, reasons.LOCAL_QUEUE_NOT_FOUND,
                           f"Kueue LocalQueue {lq} (spec.scheduling.queueName) does not exist in namespace {namespace}; "
                           "create it or fix the name, and Kueue admits the Job.")
        return Verdict(c.PENDING, reasons.QUEUE_INADMISSIBLE,
                       f"Kueue cannot admit Job {name} from LocalQueue {lq}: {why or 'no reason given'}.")
    evicted = conds.get("Evicted") or {}
    before = f" (evicted earlier: {evicted.get('reason')}: {_clause(evicted.get('message') or '', c.INNER_MESSAGE_MAX_CHARS)})" if true("Evicted") else ""
    return Verdict(c.PENDING, reasons.QUEUED,
                   f"Job {name} waits in Kueue LocalQueue {lq}{before}" + (f": {why}." if why else " for quota."))


# ----------------------------------------------------------------------------------------------
# The API server's answer to creating the Job.

# Answers no retry of the same Job can change: the spec of this generation builds a Job the API
# server refuses (400: it cannot be decoded, e.g. an int32 overflow; 413: too large; 422: invalid).
PERMANENT_CREATE_ERRORS = (400, 413, 422)
# 403 is the cluster's verdict rather than the spec's (RBAC, an exhausted ResourceQuota, a
# terminating namespace, a policy webhook): it can be lifted without a new generation, so the
# operator says why and tries again.
REFUSED_CREATE_ERRORS = (403,)
_JOB_FIELD = re.compile(r"(?<![\w/-])((?:metadata|spec)(?:\.\w+|\[[^\]\s]*\])+)")
# A body the API server cannot decode names the Go field: "... into Go struct field JobSpec.spec.x of type int32".
_GO_FIELD = re.compile(r"Go struct field \w+\.")


@dataclasses.dataclass(frozen=True)
class JobRejection:
    final: bool            # Failed for this generation; otherwise Pending and retried
    reason: str
    message: str


def _in_spec_terms(text: str) -> str:
    """Job field paths in an API server message → the QuantizationJob fields they came from."""
    return _JOB_FIELD.sub(lambda m: spec_field(m.group(1)) or m.group(1), _GO_FIELD.sub("field ", text))


def _rejection_detail(body: Obj | str) -> str:
    doc = body if isinstance(body, dict) else {"message": str(body)}
    causes = ((doc.get("details") or {}).get("causes")) or []
    # Each cause names one field; the three stage containers share env and resources, so their
    # causes repeat once mapped.
    parts = list(dict.fromkeys(_in_spec_terms(f"{x['field']}: {x.get('message', '')}" if x.get("field") else x.get("message", ""))
                               for x in causes if x.get("field") or x.get("message")))
    return _clause("; ".join(parts) or _in_spec_terms(doc.get("message") or "no reason given"), c.REJECTION_DETAIL_MAX_CHARS)


def job_rejection(code: int, body: Obj | str, job_name: str) -> JobRejection | None:
    """What a refused Job create means for the QuantizationJob; None for a transient error (5xx,
    429, …) that the reconciler retries with a backoff."""
    if code in PERMANENT_CREATE_ERRORS:
        return JobRejection(True, reasons.JOB_REJECTED,
                            f"The API server rejected Job {job_name}: {_rejection_detail(body)}; fix the spec and apply again.")
    if code in REFUSED_CREATE_ERRORS:
        return JobRejection(False, reasons.JOB_FORBIDDEN,
                            f"The API server refused to create Job {job_name}: {_rejection_detail(body)}; the operator "
                            "tries again.")
    return None


# ----------------------------------------------------------------------------------------------
# Will the Job retry? The Job controller decides from its podFailurePolicy and backoffLimit; a
# failed pod's watch event can arrive before the Job's failure condition, and in that window the
# same rules say whether a new pod is coming.

def _exit_code_matches(pod: Obj, requirement: Obj) -> bool:
    """batch/v1 onExitCodes: any terminated container (init ones included) with a non-zero code."""
    values = set(requirement.get("values") or [])
    wanted = requirement.get("containerName")
    for s in _statuses(pod):
        code = int(((s.get("state") or {}).get("terminated") or {}).get("exitCode") or 0)
        if code != 0 and (wanted is None or wanted == s.get("name")):
            if (code in values) == (requirement.get("operator") == "In"):
                return True
    return False


def _pod_condition_matches(pod: Obj, patterns: list[Obj]) -> bool:
    conds = {x.get("type"): x.get("status") for x in (pod.get("status") or {}).get("conditions") or []}
    return any(conds.get(p.get("type")) == (p.get("status") or "True") for p in patterns)


def pod_failure_action(pod: Obj, policy: Obj | None) -> str:
    """The action of the first podFailurePolicy rule a failed pod matches (Count if none does)."""
    for rule in (policy or {}).get("rules") or []:
        on_codes, on_conds = rule.get("onExitCodes"), rule.get("onPodConditions")
        if (on_codes and _exit_code_matches(pod, on_codes)) or (on_conds and _pod_condition_matches(pod, on_conds)):
            return rule.get("action") or c.POD_FAILURE_COUNT
    return c.POD_FAILURE_COUNT


def job_will_retry(job: Obj, failed_pods: list[Obj]) -> bool:
    """Whether the Job controller starts another pod after these failures."""
    spec = job.get("spec") or {}
    actions = [pod_failure_action(p, spec.get("podFailurePolicy")) for p in failed_pods]
    if c.POD_FAILURE_FAIL_JOB in actions:
        return False
    # The Job's own count may lag the pods (or outlive them); either one can be ahead.
    counted = max(actions.count(c.POD_FAILURE_COUNT), int((job.get("status") or {}).get("failed") or 0))
    limit = spec.get("backoffLimit")
    return counted <= (c.JOB_DEFAULT_BACKOFF_LIMIT if limit is None else int(limit))


# ----------------------------------------------------------------------------------------------
# The derivation.

def _scheduled_fact(pod: Obj) -> Fact:
    return Fact(True, "Scheduled", f"Pod {(pod.get('metadata') or {}).get('name', '')} is on node "
                                   f"{(pod.get('spec') or {}).get('nodeName', '')}.")


def _pod_progress(pod: Obj, spec: QuantizationJobSpec | None) -> Verdict:
    """A pod of an unfinished Job: where it is and what, if anything, holds it up."""
    st = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    scheduled_cond = next((x for x in st.get("conditions") or [] if x.get("type") == "PodScheduled"), None)
    if scheduled_cond and scheduled_cond.get("status") == "False":
        why = scheduled_cond.get("message") or "no node fits the pod"
        if scheduled_cond.get("reason") == "Unschedulable":
            fact = Fact(False, reasons.UNSCHEDULABLE, _sentence(why))
            return Verdict(c.PENDING, reasons.UNSCHEDULABLE,
                           _sentence(f"No node can run the pod: {why.rstrip('.')}; check spec.resources and spec.scheduling"),
                           scheduled=fact)
    scheduled = _scheduled_fact(pod) \
        if (scheduled_cond and scheduled_cond.get("status") == "True") or (pod.get("spec") or {}).get("nodeName") else None

    started = False
    for s in _statuses(pod):
        state = s.get("state") or {}
        if "running" in state:
            return Verdict(c.RUNNING, "", f"Pod {name} is running the {s['name']} stage.", c.STAGE_NAMES[s["name"]],
                           scheduled=scheduled, config=Fact(True, "Found", "The credentials and CA bundle are available."))
        if "terminated" in state:
            started = True
            continue
        waiting = state.get("waiting") or {}
        wr = waiting.get("reason") or ""
        if wr == reasons.CONTAINER_CONFIG:
            fact = config_problem_from_kubelet(waiting.get("message") or "")
            return Verdict(c.PENDING, fact.reason, fact.message, scheduled=scheduled, config=fact)
        if wr in c.IMAGE_PULL_REASONS and wr != "ErrImagePull":
            return Verdict(c.FAILED, reasons.IMAGE_PULL,
                           _sentence(f"The job image cannot be pulled ({wr}: {_last_line(waiting.get('message') or '', c.INNER_MESSAGE_MAX_CHARS)})")[:-1]
                           + "; fix the operator's KUBESLIM_JOB_IMAGE or the registry access.",
                           c.STAGE_NAMES[s["name"]], scheduled=scheduled)
        if wr == "ErrImagePull":
            return Verdict(c.PENDING, "ErrImagePull", _sentence(f"Pulling the job image failed, kubelet retries: {_last_line(waiting.get('message') or '', c.INNER_MESSAGE_MAX_CHARS)}"),
                           scheduled=scheduled)
        if started:
            # The kubelet starts the next stage a moment after the last one exits (waiting:
            # PodInitializing); the run goes on, it does not start over.
            return Verdict(c.RUNNING, "", f"Pod {name} is starting the {s['name']} stage.", c.STAGE_NAMES[s["name"]],
                           scheduled=scheduled, config=Fact(True, "Found", "The credentials and CA bundle are available."))
        break
    else:
        if started:
            # Every stage exited and the kubelet has not yet set the pod's phase: the run is over,
            # not starting (users saw Running -> Pending -> Succeeded).
            return Verdict(c.RUNNING, "", f"Pod {name} finished its stages; waiting for the Job to complete.",
                           c.STAGE_NAMES["verify"], scheduled=scheduled,
                           config=Fact(True, "Found", "The credentials and CA bundle are available."))
    config = Fact(True, "Found", "The credentials and CA bundle are available.") if started else None
    if scheduled is not None:
        return Verdict(c.PENDING, "", f"Pod {name} is scheduled and starting.", scheduled=scheduled, config=config)
    return Verdict(c.PENDING, "", f"Pod {name} is waiting to be scheduled.")


def observe(*, generation: int, spec: QuantizationJobSpec | None, spec_error: SpecError | None,
            job: Obj | None, pods: list[Obj], config_problem: Fact | None = None,
            job_conflict: str | None = None, job_deleted: bool = False,
            job_rejection: JobRejection | None = None, queue: Queue | None = None, now: str = "") -> Verdict:
    """What the run of this generation is doing, from the Job and its pods (and, while Kueue holds
    the Job, its Workload)."""
    v = _observe(generation=generation, spec=spec, spec_error=spec_error, job=job, pods=pods,
                 config_problem=config_problem, job_conflict=job_conflict, job_deleted=job_deleted,
                 job_rejection=job_rejection, queue=queue, now=now)
    # A pod that ran was scheduled and had its Secret: say so even when no earlier pass saw it
    # happen (status writes are coalesced, and a restarted operator only sees the end).
    if job is not None and pods:
        last = sorted(pods, key=_created)[-1]
        if v.scheduled is None and (last.get("spec") or {}).get("nodeName"):
            v = dataclasses.replace(v, scheduled=_scheduled_fact(last))
        if v.config is None and any("terminated" in (s.get("state") or {}) or "running" in (s.get("state") or {})
                                    for s in _statuses(last)):
            v = dataclasses.replace(v, config=Fact(True, "Found", "The credentials and CA bundle are available."))
    return v


# Jobs and Pods come on separate watch streams, and after an outage kopf reconnects them one by
# one: the Job may be seen concluded while its pod is still seen running. The pod's final state
# (and the result in its termination message) is on its way; a verdict from the Job's condition
# alone would be final and wrong (PodFailurePolicy for a failed gate, ResultUnavailable for a
# success). The wait is bounded, for a pod deleted while no watch was open.
POD_VIEW_LAG_SECONDS = 300


def _pod_view_behind(conds: dict[str, Obj], pods: list[Obj], now: str) -> bool:
    """A Job that concluded (other than by its deadline, which stops running pods itself) while a
    pod of it is seen running, less than POD_VIEW_LAG_SECONDS ago."""
    concluded = conds.get("Complete") or conds.get("SuccessCriteriaMet") or conds.get("Failed") or conds.get("FailureTarget")
    if concluded is None or concluded.get("reason") == "DeadlineExceeded":
        return False
    if not any((p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")
               and not (p.get("metadata") or {}).get("deletionTimestamp") for p in pods):
        return False
    t0, t1 = parse_time(concluded.get("lastTransitionTime")), parse_time(now)
    return t0 is None or t1 is None or t1 - t0 < POD_VIEW_LAG_SECONDS


def _observe(*, generation: int, spec: QuantizationJobSpec | None, spec_error: SpecError | None,
            job: Obj | None, pods: list[Obj], config_problem: Fact | None = None,
            job_conflict: str | None = None, job_deleted: bool = False,
            job_rejection: JobRejection | None = None, queue: Queue | None = None, now: str = "") -> Verdict:
    if spec_error is not None:
        return Verdict(c.FAILED, reasons.INVALID_SPEC,
                       f"{spec_error.field}: {_sentence(spec_error.message)[:-1]}; fix the field and apply again.",
                       completion_time=now)
    if job is None:
        if job_deleted:
            return Verdict(c.FAILED, reasons.JOB_DELETED,
                           "The Job of this generation was deleted before it finished; change the spec (or delete and "
                           "re-create the QuantizationJob) to run again.", completion_time=now)
        if config_problem is not None:
            return Verdict(c.PENDING, config_problem.reason, config_problem.message, config=config_problem)
        if job_rejection is not None:
            return Verdict(c.FAILED if job_rejection.final else c.PENDING, job_rejection.reason, job_rejection.message,
                           completion_time=now if job_rejection.final else None)
        if job_conflict:
            return Verdict(c.PENDING, reasons.JOB_NAME_CONFLICT,
                           f"A Job named {job_conflict} exists that this QuantizationJob does not own; delete that Job "
                           "or rename the QuantizationJob.")
        return Verdict(c.PENDING, "", "Creating the Job.")

    js = job.get("status") or {}
    times = {"start_time": js.get("startTime")}
    conds = _true_conditions(job)
    pods = sorted(pods, key=_created)
    failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]

    if _pod_view_behind(conds, pods, now):
        return Verdict(c.RUNNING, "", "The Job concluded; reading its pod's result.", hold=True, **times)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        done = js.get("completionTime") or (conds.get("Complete") or conds["SuccessCriteriaMet"]).get("lastTransitionTime") or now
        winners = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        outcome = _terminal_outcome(winners[-1]) if winners else None
        if outcome is None:
            return Verdict(c.FAILED, reasons.RESULT_LOST,
                           "The Job completed but its pod is gone, so its result cannot be read; delete and re-create "
                           "the QuantizationJob to run again.", completion_time=done, **times)
        try:
            result = decode(outcome.message)
        except BadResultMessage as exc:
            return Verdict(c.FAILED, reasons.BAD_RESULT,
                           f"The verify stage finished but its termination message is not a result ({exc}); check that "
                           "the job image matches the operator version.", c.STAGE_NAMES[outcome.container],
                           completion_time=done, **times)
        return _verdict_from_result(outcome, result, completion_time=done, **times)

    failed = conds.get("Failed") or conds.get("FailureTarget")
    if failed is not None:
        done = failed.get("lastTransitionTime") or now
        job_reason = failed.get("reason") or ""
        if job_reason == "DeadlineExceeded":
            deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
            running = [_pod_progress(p, spec).stage for p in pods if (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
            stage = next((s for s in reversed(running) if s), "")
            during = f" while {stage.lower()}" if stage else ""
            return Verdict(c.FAILED, reasons.DEADLINE,
                           f"The run passed spec.runPolicy.activeDeadlineSeconds ({deadline} s){during}; raise it or "
                           "shrink the work (fewer algos, a smaller spec.data.evaluation.limit).", stage,
                           completion_time=done, **times)
        for pod in reversed(failed_pods):
            full = _work_volume_full(pod, len(failed_pods), completion_time=done, **times)
            if full is not None:
                return full
        outcome = None
        for pod in reversed(failed_pods):
            outcome = _terminal_outcome(pod)
            if outcome is not None and outcome.exit_code != 0:
                break
        if outcome is not None and outcome.exit_code != 0:
            v = _verdict_from_failed_stage(outcome, spec, len(failed_pods), completion_time=done, **times)
            return v
        reason = job_reason or reasons.STAGE_FAILED
        msg = _sentence(failed.get("message") or "The Job failed")
        return Verdict(c.FAILED, reason, msg, completion_time=done, **times)

    if (job.get("spec") or {}).get("suspend"):
        return dataclasses.replace(queued_verdict(job, queue), **times)

    live = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")
            and not (p.get("metadata") or {}).get("deletionTimestamp")]
    if live:
        v = _pod_progress(live[-1], spec)
        if v.final:
            v = dataclasses.replace(v, completion_time=now)
        return dataclasses.replace(v, **times)
    if failed_pods:
        out = _terminal_outcome(failed_pods[-1])
        why = ""
        full = _work_volume_full(failed_pods[-1], len(failed_pods))
        if full is not None:
            why = f" ({full.reason}: {full.message.rstrip('.')})"
        elif out is not None and out.exit_code != 0:
            first = _verdict_from_failed_stage(out, spec, len(failed_pods))
            why = f" ({first.reason}: {first.message.rstrip('.')})"
        if not job_will_retry(job, failed_pods):
            # The Job's failure condition is on its way and will say why: announcing a retry now
            # would be withdrawn a moment later.
            return Verdict(c.PENDING, "", f"Attempt {len(failed_pods)} failed{why}; waiting for the Job's verdict.",
                           hold=True, **times)
        return Verdict(c.PENDING, reasons.RETRYING,
                       f"Attempt {len(failed_pods)} failed{why}; the Job retries.", **times)
    if pods and all((p.get("status") or {}).get("phase") == "Succeeded" for p in pods):
        return Verdict(c.RUNNING, "", "The pod finished; waiting for the Job to complete.", c.STAGE_NAMES["verify"],
                       hold=True, **times)
    return Verdict(c.PENDING, "", f"Job {job.get('metadata', {}).get('name', '')} is waiting for its pod.", **times)


# ----------------------------------------------------------------------------------------------
# Verdict → status mapping.

def _condition(ctype: str, status: bool, reason: str, message: str, generation: int,
               prev: dict[str, Obj], now: str) -> Obj:
    value = "True" if status else "False"
    old = prev.get(ctype)
    since = old.get("lastTransitionTime") if old and old.get("status") == value and old.get("lastTransitionTime") else now
    return {"type": ctype, "status": value, "reason": reason or ctype, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation}


def build_status(v: Verdict, *, generation: int, job_name: str | None, prev: Obj | None, now: str) -> Obj:
    """The complete status for a verdict. Keys the verdict leaves empty are None, so that a JSON
    merge patch of this mapping also removes what an earlier generation left behind."""
    prev = prev or {}
    same_gen = prev.get("observedGeneration") == generation
    prev_conds = {x.get("type"): x for x in prev.get("conditions") or [] if isinstance(x, dict)}
    reason_or_phase = v.reason or v.phase
    conds: dict[str, Obj] = {}

    def put(ctype: str, status: bool, reason: str, message: str) -> None:
        conds[ctype] = _condition(ctype, status, reason, message, generation, prev_conds, now)

    if v.phase == c.SUCCEEDED:
        put(c.READY, True, c.SUCCEEDED, v.message)
        put(c.RECONCILING, False, c.SUCCEEDED, "")
        put(c.STALLED, False, c.SUCCEEDED, "")
    elif v.phase == c.FAILED:
        put(c.READY, False, v.reason or c.FAILED, v.message)
        put(c.RECONCILING, False, v.reason or c.FAILED, "")
        put(c.STALLED, True, v.reason or c.FAILED, v.message)
    else:
        put(c.READY, False, reason_or_phase, v.message)
        put(c.RECONCILING, True, v.stage or reason_or_phase, v.message)
        put(c.STALLED, False, reason_or_phase, "")
    # Facts the verdict does not restate keep their last value within a generation.
    for ctype, fact in ((c.SCHEDULED, v.scheduled), (c.CONFIG_AVAILABLE, v.config), (c.ACCURACY_GATE, v.gate),
                        (c.ONNX_EXPORTED, v.onnx)):
        if fact is not None:
            put(ctype, fact.status, fact.reason, fact.message)
        elif same_gen and ctype in prev_conds:
            conds[ctype] = prev_conds[ctype]

    # Results of this generation survive a later verdict that carries none (e.g. a stalled retry).
    results = v.results if v.results is not None else (prev.get("results") if same_gen and v.final else None)
    artifacts = v.artifacts if v.artifacts is not None else (prev.get("artifacts") if same_gen and v.final else None)
    start = v.start_time or (prev.get("startTime") if same_gen else None)
    completion = (v.completion_time or (prev.get("completionTime") if same_gen else None)) if v.final else None
    return {
        "observedGeneration": generation,
        "phase": v.phase,
        "stage": v.stage,
        "reason": v.reason,
        "message": v.message,
        "conditions": [conds[t] for t in c.CONDITION_ORDER if t in conds],
        "jobName": job_name,
        "startTime": start,
        "completionTime": completion,
        "results": results,
        "artifacts": artifacts,
    }


def visible(status: Obj | None) -> tuple:
    """What a status says at a glance. A change here is written (progress at most once per
    status_progress_seconds); a change of message or conditions alone waits for the next such change."""
    status = status or {}
    return (status.get("observedGeneration"), status.get("phase"), status.get("reason") or "", status.get("stage") or "",
            status.get("results"), status.get("artifacts"), status.get("jobName"), status.get("progress"))


def is_final_for(status: Obj | None, generation: int) -> bool:
    status = status or {}
    return status.get("observedGeneration") == generation and status.get("phase") in c.FINAL_PHASES


@dataclasses.dataclass(frozen=True)
class EventSpec:
    type: str          # Normal | Warning
    reason: str
    message: str


def transition_event(prev: Obj | None, new: Obj) -> EventSpec | None:
    """One event per visible transition (phase, reason or stage changed), none otherwise."""
    prev = prev or {}
    key = lambda s: (s.get("observedGeneration"), s.get("phase"), s.get("reason") or "", s.get("stage") or "")  # noqa: E731
    if key(prev) == key(new):
        return None
    phase, reason = new.get("phase"), new.get("reason") or ""
    warning = phase == c.FAILED or (phase == c.PENDING and reason not in ("", reasons.QUEUED))
    if reason:
        ev_reason = reason
    elif phase == c.RUNNING:
        stage = new.get("stage") or ""
        ev_reason = stage if stage in c.STAGE_NAMES.values() else c.RUNNING   # Exporting, Calibrating…
    else:
        ev_reason = phase or "Unknown"
    return EventSpec("Warning" if warning else "Normal", ev_reason, new.get("message") or "")
