"""Every accepted spec gets an answer, and no answer is taken back (issue 10, items 1 and 2).

A spec the CRD admits whose Job the API server still refuses ends its generation Failed/JobRejected
with the API server's words in spec terms, once: no POST loop. A failed pod that the Job will not
retry (podFailurePolicy FailJob, backoff used up) is never announced as Retrying."""
from __future__ import annotations

import json
import re
import time

import pytest

from operator_harness import (bad_input_message, crd, fake, operator, operator_identity, qj, qj_manifest,  # noqa: F401
                              verify_ok_message)

pytestmark = pytest.mark.timeout(120)

# The Job controller owns this label of its pods: a different value makes the API server refuse
# the Job (the generated selector would not match its own template), which no CRD schema can know.
JOB_CONTROLLER_LABEL = {"batch.kubernetes.io/controller-uid": "not-this-job"}


def job_posts(metrics_text: str) -> dict[str, float]:
    """POST jobs requests of the operator, by HTTP code."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'kubeslim_api_requests_total\{code="(\d+)",resource="jobs",verb="POST"\} ([0-9.e+]+)', metrics_text)}


def test_a_refused_job_fails_the_generation_once(operator, qj, namespace, kubectl):
    qj.apply(qj_manifest("refused", namespace, podMetadata={"labels": JOB_CONTROLLER_LABEL}))
    st = qj.wait_phase("refused", "Failed", "JobRejected", timeout=30)
    assert st["observedGeneration"] == 1 and not st.get("jobName")
    assert "spec.podMetadata.labels" in st["message"] and "spec.template" not in st["message"], st["message"]
    conds = qj.conditions("refused")
    assert conds["Stalled"]["status"] == "True" and conds["Ready"]["status"] == "False"
    assert any(e["reason"] == "JobRejected" and e["type"] == "Warning" for e in qj.events("refused"))
    # Longer than the first steps of the error backoff (1 s, 2 s): a retry loop would have POSTed again.
    time.sleep(4)
    assert job_posts(operator.metrics()) == {"422": 1.0}
    assert qj.jobs() == []
    # A new generation is a new attempt.
    kubectl("patch", "qj", "refused", "-n", namespace, "--type=json", "-p", json.dumps([{
        "op": "replace", "path": "/spec/podMetadata",
        "value": {"annotations": fake(exit_code=0, message=verify_ok_message(), container="verify")}}]))
    st = qj.wait("refused", lambda s: s if s.get("observedGeneration") == 2 and s.get("phase") == "Succeeded" else None,
                 what="generation 2 succeeded")
    assert st["jobName"] == "refused-g2" and job_posts(operator.metrics()) == {"422": 1.0, "201": 1.0}


@pytest.mark.parametrize("backoff,annotations", [
    (3, fake(exit_code=3, message=bad_input_message(), container="export")),   # FailJob by podFailurePolicy
    (0, fake(exit_code=1, message="Traceback\nRuntimeError: boom", container="calibrate")),
    (0, fake(exit_code=137, reason="OOMKilled", container="calibrate")),
], ids=["bad-input", "crash-no-backoff", "oom-no-backoff"])
def test_no_retrying_when_nothing_retries(operator, qj, namespace, backoff, annotations):
    qj.apply(qj_manifest("final", namespace, runPolicy={"backoffLimit": backoff}, annotations=annotations))
    qj.wait_phase("final", "Failed")
    time.sleep(1)                      # an event posted after the final status would show up by now
    reasons = [e["reason"] for e in qj.events("final")]
    assert "Retrying" not in reasons, reasons
    assert len(qj.pods("final-g1")) == 1
