"""A Job the API server refuses: its answer in spec terms (pure), and what the reconciler does
with it (a fake API: a permanent refusal is written once and never retried for the generation)."""
from __future__ import annotations

import asyncio
import copy

import pytest

from kubeslim_api import reasons
from kubeslim_operator import constants as c
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.handlers.reconcile import Reconciler
from kubeslim_operator.kube import ApiError
from kubeslim_operator.status import job_rejection, observe, spec_field
from tests.invalid_specs import VALID_SPEC

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("job_field,expected", [
    ("spec.template.spec.tolerations[0].tolerationSeconds", "spec.scheduling.tolerations[0].tolerationSeconds"),
    ("spec.template.spec.tolerations", "spec.scheduling.tolerations"),
    ("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
     "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"),
    ("spec.template.spec.nodeSelector", "spec.scheduling.nodeSelector"),
    ("spec.template.spec.priorityClassName", "spec.scheduling.priorityClassName"),
    ("spec.template.spec.runtimeClassName", "spec.scheduling.runtimeClassName"),
    ("spec.template.metadata.labels", "spec.podMetadata.labels"),
    ("spec.template.metadata.annotations", "spec.podMetadata.annotations"),
    ("spec.template.labels", "spec.podMetadata.labels"),
    ("spec.template.metadata.labels[batch.kubernetes.io/controller-uid]", "spec.podMetadata.labels[batch.kubernetes.io/controller-uid]"),
    ("metadata.labels", "spec.scheduling.queueName"),
    ("spec.ttlSecondsAfterFinished", "spec.runPolicy.ttlSecondsAfterFinished"),
    ("spec.backoffLimit", "spec.runPolicy.backoffLimit"),
    ("spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]", "spec.resources"),
    ("spec.template.spec.initContainers[1].env[6].valueFrom.secretKeyRef.key", "spec.storage.credentialsSecret"),
    ("spec.template.spec.initContainers[0].env[6].valueFrom.secretKeyRef.name", "spec.storage.credentialsSecret.name"),
    ("spec.template.spec.volumes[3].configMap.name", "spec.storage.caBundle.configMapName"),
    ("spec.template.spec.volumes[3].configMap.items[0].key", "spec.storage.caBundle.key"),
    # the operator's own fields have no counterpart in the spec
    ("metadata.name", None),
    ("spec.template.spec.securityContext", None),
    ("spec.template.spec.nodeSelectorTerms", None),
])
def test_spec_field_of_a_job_field(job_field, expected):
    assert spec_field(job_field) == expected


def invalid(*causes, message="Job.batch \"qj-g1\" is invalid: [...]"):
    return {"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422, "message": message,
            "details": {"name": "qj-g1", "group": "batch", "kind": "Job",
                        "causes": [{"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in causes]}}


TOLERATION = ("spec.template.spec.tolerations[0].tolerationSeconds",
              "Invalid value: 60: must be specified only when `effect` is NoExecute")
LABEL = ("spec.template.metadata.labels", 'Invalid value: "has space": name part must consist of alphanumeric characters')

REJECTIONS = [
    # (id, HTTP code, body, final, reason, text the message must contain)
    ("invalid toleration", 422, invalid(TOLERATION), True, "JobRejected",
     "spec.scheduling.tolerations[0].tolerationSeconds: Invalid value: 60: must be specified only when `effect` is NoExecute"),
    ("causes repeat per container", 422, invalid(
        ("spec.template.spec.initContainers[0].env[6].valueFrom.secretKeyRef.key", 'Invalid value: "a/b": a valid config key'),
        ("spec.template.spec.initContainers[1].env[6].valueFrom.secretKeyRef.key", 'Invalid value: "a/b": a valid config key'),
        ("spec.template.spec.containers[0].env[6].valueFrom.secretKeyRef.key", 'Invalid value: "a/b": a valid config key')),
     True, "JobRejected", 'Job qj-g1: spec.storage.credentialsSecret: Invalid value: "a/b": a valid config key; fix'),
    ("two fields", 422, invalid(TOLERATION, LABEL), True, "JobRejected",
     "is NoExecute; spec.podMetadata.labels: Invalid value"),
    ("undecodable (no causes)", 400,
     {"kind": "Status", "code": 400, "reason": "BadRequest",
      "message": 'Job in version "v1" cannot be handled as a Job: json: cannot unmarshal number 2147483648 into '
                 'Go struct field JobSpec.spec.ttlSecondsAfterFinished of type int32'},
     True, "JobRejected", "cannot unmarshal number 2147483648 into field spec.runPolicy.ttlSecondsAfterFinished of type int32"),
    ("too large", 413, {"code": 413, "reason": "RequestEntityTooLarge", "message": "Request entity too large: limit is 3145728"},
     True, "JobRejected", "limit is 3145728"),
    ("plain text body", 422, "something odd", True, "JobRejected", "something odd"),
    ("quota", 403, {"code": 403, "reason": "Forbidden",
                    "message": 'jobs.batch "qj-g1" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1'},
     False, "JobForbidden", "exceeded quota"),
]


@pytest.mark.parametrize("code,body,final,reason,needle", [x[1:] for x in REJECTIONS], ids=[x[0] for x in REJECTIONS])
def test_job_rejection(code, body, final, reason, needle):
    r = job_rejection(code, body, "qj-g1")
    assert (r.final, r.reason) == (final, reason)
    assert needle in r.message, r.message
    assert r.message.endswith(".") and "\n" not in r.message and "spec.template" not in r.message
    v = observe(generation=1, spec=None, spec_error=None, job=None, pods=[], job_rejection=r, now="T")
    assert (v.phase, v.reason, v.message) == ("Failed" if final else "Pending", reason, r.message)
    assert bool(v.completion_time) is final


@pytest.mark.parametrize("code", [409, 429, 500, 502, 503, 504])
def test_transient_answers_are_no_rejection(code):
    assert job_rejection(code, {"message": "try later"}, "qj-g1") is None


def test_long_answers_are_cut():
    r = job_rejection(422, invalid(*[(f"spec.template.spec.tolerations[{i}].key", "x" * 100) for i in range(50)]), "qj-g1")
    assert len(r.message) < 1000 and r.message.endswith("; fix the spec and apply again.")


# -- the reconciler with a fake API -------------------------------------------------------------

class FakeKube:
    """Answers every Job create with `create_error`; records writes."""

    def __init__(self, create_error: ApiError):
        self.create_error = create_error
        self.creates, self.statuses, self.events = 0, [], []

    async def create_job(self, namespace, manifest):
        self.creates += 1
        raise self.create_error

    async def patch_status(self, namespace, name, status):
        self.statuses.append(status)
        return {"status": status}

    async def post_event(self, involved, type_, reason, message):
        self.events.append((type_, reason, message))


def qj_body(generation=1):
    return {"metadata": {"name": "qj", "namespace": "ml", "uid": "uid-1", "generation": generation},
            "spec": copy.deepcopy(VALID_SPEC), "status": {}}


def passes(kube, generations):
    """One pass per generation given (the index holds the QuantizationJob at that generation)."""
    r = Reconciler(OperatorConfig(), kube)
    index = {("ml", "qj"): [qj_body()]}
    r.bind(index, {}, {})

    async def go():
        results = []
        for gen in generations:
            body = qj_body(gen)
            body["status"] = r.known_status(body)
            index[("ml", "qj")] = [body]
            results.append(await r.reconcile(("ml", "qj")))
        return results
    return asyncio.run(go())


def test_a_rejected_job_fails_the_generation_once_until_the_spec_changes():
    kube = FakeKube(ApiError(422, invalid(TOLERATION), "POST", "/apis/batch/v1/namespaces/ml/jobs"))
    requeues = passes(kube, [1, 1, 1, 2])
    assert kube.creates == 2                        # once for generation 1, once for generation 2
    assert requeues[:3] == [None, None, None]       # nothing scheduled again for generation 1
    first = kube.statuses[0]
    assert (first["phase"], first["reason"], first["observedGeneration"]) == ("Failed", reasons.JOB_REJECTED, 1)
    assert "spec.scheduling.tolerations[0].tolerationSeconds" in first["message"]
    assert {x["type"]: x["status"] for x in first["conditions"]}["Stalled"] == "True"
    assert kube.events[0][:2] == ("Warning", reasons.JOB_REJECTED)
    assert len(kube.statuses) == 2 and kube.statuses[1]["observedGeneration"] == 2


def test_a_forbidden_job_is_reported_and_tried_again():
    kube = FakeKube(ApiError(403, {"message": "exceeded quota: jobs"}, "POST", "/apis/batch/v1/namespaces/ml/jobs"))
    requeues = passes(kube, [1, 1])
    assert kube.creates == 2 and requeues == [OperatorConfig().recheck_seconds] * 2
    assert [(s["phase"], s["reason"]) for s in kube.statuses] == [("Pending", reasons.JOB_FORBIDDEN)]   # written once
    assert kube.events[0][:2] == ("Warning", reasons.JOB_FORBIDDEN)


@pytest.mark.parametrize("code", [429, 500, 503])
def test_a_transient_error_is_raised_for_the_backoff(code):
    kube = FakeKube(ApiError(code, {"message": "busy"}, "POST", "/apis/batch/v1/namespaces/ml/jobs"))
    with pytest.raises(ApiError):
        passes(kube, [1])
    assert kube.statuses == [] and kube.events == []
