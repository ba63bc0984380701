"""SIGKILL the operator in each phase of a run, start it again: still exactly one Job per
generation, and the final status is right (it is rebuilt from the Job and its pods)."""
from __future__ import annotations

import json
import time

import pytest

from operator_harness import crd, fake, operator, operator_identity, qj, qj_manifest, verify_ok_message  # noqa: F401
from test_operator_lifecycle import writes_by_operator

pytestmark = pytest.mark.timeout(240)


def one_job_per_generation(qj) -> dict[str, int]:
    names = [j["metadata"]["name"] for j in qj.jobs()]
    assert len(names) == len(set(names))
    counts: dict[str, int] = {}
    for j in qj.jobs():
        owner = j["metadata"]["ownerReferences"][0]["name"]
        gen = j["metadata"]["labels"]["kubeslim.io/generation"]
        counts[f"{owner}/{gen}"] = counts.get(f"{owner}/{gen}", 0) + 1
    assert all(n == 1 for n in counts.values()), counts
    return counts


def finish(qj, job: str) -> None:
    for pod in qj.pods(job):
        qj.annotate_pod(pod["metadata"]["name"], fake(exit_code=0, message=verify_ok_message(), container="verify", duration="0s"))


def test_killed_while_pending_unschedulable(operator, qj, namespace):
    qj.apply(qj_manifest("p", namespace, resources={"gpu": 16}))
    qj.wait_phase("p", "Pending", "Unschedulable")
    operator.kill()
    operator.start()
    time.sleep(2)
    assert one_job_per_generation(qj) == {"p/1": 1}
    assert qj.status("p")["reason"] == "Unschedulable"
    assert writes_by_operator(operator.metrics()) == {}      # nothing to write: the status was right


def test_killed_while_running_then_finishes(operator, qj, namespace):
    qj.apply(qj_manifest("r", namespace, annotations=fake(duration="24h")))
    qj.wait_phase("r", "Running")
    operator.kill()
    operator.start()
    time.sleep(1)
    assert qj.status("r")["phase"] == "Running"
    finish(qj, "r-g1")
    st = qj.wait_phase("r", "Succeeded")
    assert st["results"]["int8"]["algo"] == "hist"
    assert one_job_per_generation(qj) == {"r/1": 1}


def test_pod_finishes_while_the_operator_is_down(operator, qj, namespace, wait_for):
    qj.apply(qj_manifest("d", namespace, annotations=fake(duration="24h")))
    qj.wait_phase("d", "Running")
    operator.kill()
    finish(qj, "d-g1")
    wait_for(lambda: any(c["type"] == "Complete" and c["status"] == "True"
                         for c in (qj.jobs()[0].get("status") or {}).get("conditions") or []), what="Job complete")
    assert qj.status("d")["phase"] == "Running"              # nobody told the CR yet
    operator.start()
    st = qj.wait_phase("d", "Succeeded")
    assert st["results"]["accuracyDrop"] == 0.0044 and st["artifacts"]["model"].endswith("model.pdmodel")
    assert one_job_per_generation(qj) == {"d/1": 1}


def test_restart_after_the_end_changes_nothing(operator, qj, namespace):
    qj.apply(qj_manifest("e", namespace, annotations=fake(exit_code=0, message=verify_ok_message(), container="verify")))
    qj.wait_phase("e", "Succeeded")
    before = qj.get("e")
    operator.kill()
    operator.start()
    time.sleep(2)
    after = qj.get("e")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert writes_by_operator(operator.metrics()) == {}
    assert one_job_per_generation(qj) == {"e/1": 1}


def test_spec_changed_while_the_operator_is_down(operator, qj, namespace, kubectl, wait_for):
    qj.apply(qj_manifest("s", namespace, annotations=fake(duration="24h")))
    qj.wait_phase("s", "Running")
    operator.kill()
    kubectl("patch", "qj", "s", "-n", namespace, "--type=merge", "-p", json.dumps(
        {"spec": {"podMetadata": {"annotations": fake(exit_code=0, message=verify_ok_message(), container="verify", duration="0s")}}}))
    operator.start()
    qj.wait("s", lambda s_: s_ if s_.get("observedGeneration") == 2 and s_.get("phase") == "Succeeded" else None,
            what="generation 2 succeeded")
    wait_for(lambda: [j["metadata"]["name"] for j in qj.jobs()] == ["s-g2"], what="only the g2 Job left")
    assert one_job_per_generation(qj) == {"s/2": 1}


def test_killed_in_a_creation_burst(operator, qj, namespace, kubectl, wait_for):
    n = 20
    docs = [qj_manifest(f"b{i}", namespace, annotations=fake(exit_code=0, message=verify_ok_message(), container="verify"))
            for i in range(n)]
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    time.sleep(0.3)
    operator.kill()                                  # some Jobs made, some not, statuses half-written
    operator.start()
    wait_for(lambda: all(qj.status(f"b{i}").get("phase") == "Succeeded" for i in range(n)), timeout=120,
             what="all succeeded")
    assert one_job_per_generation(qj) == {f"b{i}/1": 1 for i in range(n)}
