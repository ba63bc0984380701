"""Property-based fuzz (hypothesis) of QuantizationJob specs against the real API server (issue 10):
every spec the API server accepts yields either a Job the API server accepts or a Failed status
with a reason naming a spec field — and the operator's code never raises on the way.

The fast path runs what the operator runs, without the operator process: a server-side dry-run
create of the CR (the API server's defaults come back), `parse_spec` → `build_job` (the pure
builder), a server-side dry-run create of that Job, and for a refusal `job_rejection` (what the
reconciler turns into Failed/JobRejected). A sample of the accepted specs then goes through the
live operator (real CR, real Job or real Failed status).

KUBESLIM_FUZZ_EXAMPLES sets the number of specs (default: 500 in `make chaos`, 150 in `make test`).
"""
from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeslim_api.spec import SpecError, parse_spec
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.jobs import Owner, build_job
from kubeslim_operator.status import job_rejection

from chaos_harness import SCALE, record
from operator_harness import JOB_IMAGE, OperatorProcess, crd, operator_identity  # noqa: F401
from tests.invalid_specs import VALID_SPEC

EXAMPLES = int(os.environ.get("KUBESLIM_FUZZ_EXAMPLES") or (500 if SCALE == "full" else 150))
LIVE_SAMPLE = 12
pytestmark = pytest.mark.timeout(900)

# Strings at and around the edges of the syntaxes the Job's fields have (label keys and values,
# qualified names, DNS labels and subdomains, resource names, Secret keys) plus arbitrary ones.
EDGES = ["", "a", "A", "a.b", "a..b", "a_b", "-lead", "trail-", ".dot", "has space", "UPPER", "a/b", "a/b/c", "/x", "x/",
         "example.com/k", "Example.com/k", "example.com/" + "k" * 63, "example.com/" + "k" * 64, "k" * 63, "k" * 64,
         "d" * 254, "kubernetes.io/hostname", "batch.kubernetes.io/controller-uid", "app.kubernetes.io/managed-by",
         "kubeslim.io/generation", "nvidia.com/gpu", "0", "-1", "1e3", "é", "a\nb", "*"]
# Valid names too, in the same measure: a spec is accepted only if every string in it is, and the
# property is about the accepted ones.
_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?\Z")
text = st.one_of(_label, _label.map(lambda x: f"example.com/{x}"), st.sampled_from(EDGES),
                 st.text(alphabet="abzAZ09-._/ ", max_size=70))
ints = st.one_of(st.sampled_from([-1, 0, 1, 6, 59, 2**31 - 1, 2**31, 2**53]), st.integers(-10, 10**6))


def _dict(keys, values, max_size=4):
    return st.dictionaries(keys, values, max_size=max_size)


toleration = _dict(st.sampled_from(["key", "operator", "value", "effect", "tolerationSeconds"]), st.none(), 5).flatmap(
    lambda shape: st.fixed_dictionaries({}, optional={
        "key": text, "operator": st.sampled_from(["Exists", "Equal", "In", ""]), "value": text,
        "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule", "", "Never"]), "tolerationSeconds": ints}))
requirement = st.fixed_dictionaries({"key": text, "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Equals"])},
                                    optional={"values": st.lists(st.one_of(text, st.integers(-5, 5).map(str)), max_size=3)})
node_term = st.fixed_dictionaries({}, optional={"matchExpressions": st.lists(requirement, max_size=2),
                                                "matchFields": st.lists(requirement, max_size=1)})
pod_term = st.fixed_dictionaries({"topologyKey": text}, optional={
    "labelSelector": st.fixed_dictionaries({}, optional={"matchLabels": _dict(text, text, 2),
                                                         "matchExpressions": st.lists(requirement, max_size=1)}),
    "namespaces": st.lists(text, max_size=2)})
affinity = st.fixed_dictionaries({}, optional={
    "nodeAffinity": st.fixed_dictionaries({}, optional={
        "requiredDuringSchedulingIgnoredDuringExecution": st.fixed_dictionaries({"nodeSelectorTerms": st.lists(node_term, max_size=2)}),
        "preferredDuringSchedulingIgnoredDuringExecution": st.lists(
            st.fixed_dictionaries({"weight": ints, "preference": node_term}), max_size=2)}),
    "podAffinity": st.fixed_dictionaries({}, optional={"requiredDuringSchedulingIgnoredDuringExecution": st.lists(pod_term, max_size=2)}),
    "podAntiAffinity": st.fixed_dictionaries({}, optional={"preferredDuringSchedulingIgnoredDuringExecution": st.lists(
        st.fixed_dictionaries({"weight": ints, "podAffinityTerm": pod_term}), max_size=1)}),
})
quantity = st.one_of(st.sampled_from(["1", "100m", "0.5", "2Gi", "16Gi", "1.5Gi", "0", "1e3", "lots", "-1", "1Pi"]), text)
spec_changes = st.fixed_dictionaries({}, optional={
    "scheduling": st.fixed_dictionaries({}, optional={
        "tolerations": st.lists(toleration, max_size=3), "affinity": affinity, "nodeSelector": _dict(text, text, 3),
        "priorityClassName": text, "runtimeClassName": text, "queueName": text}),
    "podMetadata": st.fixed_dictionaries({}, optional={"labels": _dict(text, text), "annotations": _dict(text, text)}),
    "storage": st.fixed_dictionaries({}, optional={
        "credentialsSecret": st.fixed_dictionaries({"name": text}, optional={"accessKeyIdKey": text, "secretAccessKeyKey": text}),
        "caBundle": st.fixed_dictionaries({"configMapName": text}, optional={"key": text}),
        "endpoint": st.sampled_from(["http://s3.local:9000", "https://[::1]:9000", "http://a b", "s3.local"])}),
    "resources": st.fixed_dictionaries({}, optional={"gpu": ints, "cpu": quantity, "memory": quantity, "gpuResourceName": text}),
    "runPolicy": st.fixed_dictionaries({}, optional={"backoffLimit": ints, "activeDeadlineSeconds": ints,
                                                     "ttlSecondsAfterFinished": ints}),
})


def merged(changes: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(VALID_SPEC)
    for k, v in changes.items():
        spec[k] = {**spec.get(k, {}), **v}
    return spec


def qj_body(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def test_every_accepted_spec_gets_a_job_or_a_reason(crd, k8s, namespace, operator_identity, tmp_path, wait_for):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom, batch = client.CustomObjectsApi(k8s), client.BatchV1Api(k8s)
    config = OperatorConfig(job_image=JOB_IMAGE)
    counts = {"specs": 0, "refused_by_crd": 0, "accepted": 0, "job_accepted": 0, "failed_invalid_spec": 0,
              "failed_job_rejected": 0}
    silent: list[str] = []
    rejected: list[str] = []          # what the CRD still lets through: each one a gap in its schema
    accepted_specs: list[dict] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(spec_changes)
    def prop(changes):
        counts["specs"] += 1
        spec = merged(changes)
        try:
            created = custom.create_namespaced_custom_object("kubeslim.io", "v1alpha1", namespace, "quantizationjobs",
                                                             qj_body("fuzz", namespace, spec), dry_run="All")
        except ApiException as exc:
            assert exc.status in (400, 422), f"CR dry-run: HTTP {exc.status}: {exc.body}"
            counts["refused_by_crd"] += 1
            return
        counts["accepted"] += 1
        accepted_specs.append(spec)
        try:
            parsed = parse_spec(created["spec"])
        except SpecError as exc:
            # The reconciler writes Failed/InvalidSpec with this field (status.observe).
            assert exc.field.startswith("spec"), exc
            counts["failed_invalid_spec"] += 1
            return
        owner = Owner(name="fuzz", namespace=namespace, uid=str(uuid.uuid4()), generation=1)
        job = build_job(owner, parsed, config)
        try:
            batch.create_namespaced_job(namespace, job, dry_run="All")
        except ApiException as exc:
            body = json.loads(exc.body) if exc.body else {}
            rejection = job_rejection(exc.status, body, job["metadata"]["name"])
            if rejection is None or not rejection.final:
                silent.append(f"HTTP {exc.status} ({body.get('message')}) for {json.dumps(changes)[:600]}")
                return
            assert rejection.reason == "JobRejected" and "spec." in rejection.message, rejection
            counts["failed_job_rejected"] += 1
            rejected.append(f"{rejection.message} <- {json.dumps(changes)[:400]}")
            return
        counts["job_accepted"] += 1

    prop()
    figures = {**counts, "silent": len(silent), "silent_detail": silent[:10], "job_rejected_detail": rejected[:10]}
    assert not silent, silent[:5]

    # The live operator on a sample: each accepted spec gets a Job or a Failed status with a reason.
    # No pod of the sample may run anywhere: a GPU resource no node has keeps them Pending.
    op = OperatorProcess(Path(operator_identity["kubeconfig"]), namespace, tmp_path).start()
    sample = [dict(s, resources={**s.get("resources", {}), "gpu": 1, "gpuResourceName": "fuzz.kubeslim.io/none"})
              for s in accepted_specs[:: max(1, len(accepted_specs) // LIVE_SAMPLE)][:LIVE_SAMPLE]]
    names = [f"live-{i:02d}" for i in range(len(sample))]
    for name, spec in zip(names, sample):
        custom.create_namespaced_custom_object("kubeslim.io", "v1alpha1", namespace, "quantizationjobs", qj_body(name, namespace, spec))

    def answers() -> dict[str, str | None]:
        """name → what its status answers; None while it says nothing (no Job, no reason)."""
        out: dict[str, str | None] = {}
        for name in names:
            status = custom.get_namespaced_custom_object("kubeslim.io", "v1alpha1", namespace, "quantizationjobs", name).get("status") or {}
            if status.get("jobName") and status.get("phase"):
                out[name] = f"{status['phase']} {status.get('reason', '')} (Job {status['jobName']})"
            elif status.get("phase") and status.get("reason"):
                # Failed for good, or Pending on something the user must create (a ConfigMap).
                out[name] = f"{status['phase']} {status['reason']}: {status.get('message', '')[:120]}"
            else:
                out[name] = None
        return out

    try:
        live = wait_for(lambda: next((a for a in [answers()] if all(a.values())), None), timeout=60, interval=1,
                        what="an answer for every sampled spec")
    except TimeoutError:
        silent_live = {n: spec for n, spec, answer in zip(names, sample, answers().values()) if answer is None}
        raise AssertionError(f"no answer for {json.dumps(silent_live)[:3000]}") from None
    op.stop()
    figures["live_sample"] = live
    record("fuzz", figures)
    assert "Traceback" not in op.log(), op.log()[-3000:]
    assert counts["specs"] >= EXAMPLES and counts["accepted"] > 0
