"""What the kubelet says about a pod: where its stages are, why a container cannot start (a missing
Secret or ConfigMap, an image it cannot pull), why it is not scheduled, and an eviction for a
full /work volume."""
from __future__ import annotations

import re
from typing import Any

from kubeslim_api import reasons
from kubeslim_api.spec import QuantizationJobSpec

from .. import constants as c
from ..constants import Obj
from .stage_result import terminal_outcome
from .verdict import CONFIG_FOUND, Fact, Verdict, attempt_note, container_statuses, last_line, sentence

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
    return Fact(False, reasons.CONTAINER_CONFIG, sentence(f"Kubelet cannot start the pod: {last_line(message)}"))


# The kubelet's eviction message for an emptyDir past its sizeLimit (pkg/kubelet/eviction,
# emptyDirMessageFmt); "work" is the /work volume jobs.py sizes with job.workSizeLimit.
_WORK_VOLUME_EVICTION = re.compile(r'Usage of EmptyDir volume "work" exceeds the limit "([^"]+)"')


def work_volume_full(pod: Obj, attempts: int, **times: Any) -> Verdict | None:
    """A pod the kubelet evicted because /work outgrew its sizeLimit, in the user's terms: the
    containers were only killed (exit 137), which alone would read as a crash."""
    st = pod.get("status") or {}
    found = _WORK_VOLUME_EVICTION.search(st.get("message") or "") if st.get("reason") == "Evicted" else None
    if found is None:
        return None
    out = terminal_outcome(pod)
    stage = c.STAGE_NAMES.get(out.container, "") if out is not None else ""
    during = f" during the {out.container} stage" if out is not None else ""
    return Verdict(c.FAILED, reasons.WORK_VOLUME_FULL,
                   f"The /work volume outgrew its size limit ({found.group(1)}, the chart's job.workSizeLimit){during}"
                   f"{attempt_note(attempts)} and the kubelet evicted the pod; raise job.workSizeLimit or use a smaller "
                   "model or dataset (spec.data.calibration / spec.data.evaluation).", stage, **times)


def scheduled_fact(pod: Obj) -> Fact:
    return Fact(True, "Scheduled", f"Pod {(pod.get('metadata') or {}).get('name', '')} is on node "
                                   f"{(pod.get('spec') or {}).get('nodeName', '')}.")


def _unschedulable(pod: Obj) -> Verdict | None:
    cond = next((x for x in (pod.get("status") or {}).get("conditions") or [] if x.get("type") == "PodScheduled"), None)
    if not cond or cond.get("status") != "False" or cond.get("reason") != "Unschedulable":
        return None
    why = cond.get("message") or "no node fits the pod"
    return Verdict(c.PENDING, reasons.UNSCHEDULABLE,
                   sentence(f"No node can run the pod: {why.rstrip('.')}; check spec.resources and spec.scheduling"),
                   scheduled=Fact(False, reasons.UNSCHEDULABLE, sentence(why)))


def _scheduled(pod: Obj) -> Fact | None:
    cond = next((x for x in (pod.get("status") or {}).get("conditions") or [] if x.get("type") == "PodScheduled"), None)
    on_node = (cond and cond.get("status") == "True") or (pod.get("spec") or {}).get("nodeName")
    return scheduled_fact(pod) if on_node else None


def _waiting(container: Obj, scheduled: Fact | None) -> Verdict | None:
    """A container kubelet cannot start: a config error (retried), an image it cannot pull."""
    waiting = (container.get("state") or {}).get("waiting") or {}
    why, text = waiting.get("reason") or "", waiting.get("message") or ""
    if why == reasons.CONTAINER_CONFIG:
        fact = config_problem_from_kubelet(text)
        return Verdict(c.PENDING, fact.reason, fact.message, scheduled=scheduled, config=fact)
    if why == "ErrImagePull":
        return Verdict(c.PENDING, "ErrImagePull", sentence(f"Pulling the job image failed, kubelet retries: "
                                                           f"{last_line(text, c.INNER_MESSAGE_MAX_CHARS)}"),
                       scheduled=scheduled)
    if why in c.IMAGE_PULL_REASONS:
        return Verdict(c.FAILED, reasons.IMAGE_PULL,
                       sentence(f"The job image cannot be pulled ({why}: {last_line(text, c.INNER_MESSAGE_MAX_CHARS)})")[:-1]
                       + "; fix the operator's KUBESLIM_JOB_IMAGE or the registry access.",
                       c.STAGE_NAMES[container["name"]], scheduled=scheduled)
    return None


def pod_progress(pod: Obj, spec: QuantizationJobSpec | None) -> Verdict:
    """A pod of an unfinished Job: where it is and what, if anything, holds it up."""
    if (stuck := _unschedulable(pod)) is not None:
        return stuck
    name = (pod.get("metadata") or {}).get("name", "")
    scheduled = _scheduled(pod)
    started = False                    # an earlier stage exited: the pod is under way
    for s in container_statuses(pod):
        state, stage = s.get("state") or {}, c.STAGE_NAMES[s["name"]]
        if "running" in state:
            return Verdict(c.RUNNING, "", f"Pod {name} is running the {s['name']} stage.", stage,
                           scheduled=scheduled, config=CONFIG_FOUND)
        if "terminated" in state:
            started = True
            continue
        if (held := _waiting(s, scheduled)) is not None:
            return held
        if started:
            # The kubelet starts the next stage a moment after the last one exits (waiting:
            # PodInitializing); the run goes on, it does not start over.
            return Verdict(c.RUNNING, "", f"Pod {name} is starting the {s['name']} stage.", stage,
                           scheduled=scheduled, config=CONFIG_FOUND)
        break
    else:
        if started:
            # Every stage exited and the kubelet has not yet set the pod's phase: the run is over,
            # not starting (users saw Running -> Pending -> Succeeded).
            return Verdict(c.RUNNING, "", f"Pod {name} finished its stages; waiting for the Job to complete.",
                           c.STAGE_NAMES["verify"], scheduled=scheduled, config=CONFIG_FOUND)
    if scheduled is not None:
        return Verdict(c.PENDING, "", f"Pod {name} is scheduled and starting.", scheduled=scheduled,
                       config=CONFIG_FOUND if started else None)
    return Verdict(c.PENDING, "", f"Pod {name} is waiting to be scheduled.")
