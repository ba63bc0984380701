"""A parallel sweep (spec.quantization.parallelism) on the real control plane with kwok pods: the
Indexed Job, its pods scheduled `parallelism` at a time with their completion indexes, the status
read from the final index, a restart of the operator mid-sweep (still one Job), and a failing
index that ends the run Failed, naming the index."""
from __future__ import annotations

import time

import pytest

from operator_harness import bad_input_message, crd, fake, operator, operator_identity, qj, qj_manifest, verify_ok_message  # noqa: F401
from test_operator_restart import one_job_per_generation

pytestmark = pytest.mark.timeout(240)

INDEX = "batch.kubernetes.io/job-completion-index"
ALGOS = ["hist", "avg", "KL"]


def indexes(pods) -> list[int]:
    return sorted(int(p["metadata"]["labels"][INDEX]) for p in pods)


def live(pods) -> list[dict]:
    return [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")]


def test_sweep_runs_as_an_indexed_job(operator, qj, namespace, wait_for):
    qj.apply(qj_manifest("sweep", namespace, quantization={"algos": ALGOS, "parallelism": 2},
                         annotations=fake(duration="24h")))
    st = qj.wait_phase("sweep", "Running")
    (job,) = qj.jobs()
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 2)
    # The Job controller keeps two pods going, the lowest indexes first.
    running = wait_for(lambda: live(qj.pods("sweep-g1")) if len(live(qj.pods("sweep-g1"))) == 2 else None,
                       what="two pods of the sweep", timeout=30)
    assert indexes(running) == [0, 1]
    st = qj.wait("sweep", lambda s: "candidates calibrated" in (s.get("message") or "") and s, "per-index progress")
    assert st["message"].startswith("0 of 3 candidates calibrated. Candidate ")

    # A restart mid-sweep finds the Job by its name: still one.
    operator.kill()
    operator.start()
    time.sleep(2)
    assert one_job_per_generation(qj) == {"sweep/1": 1}

    # Each pod finishes as kwok is told; the Job controller starts the next index in the freed slot.
    def finish_all():
        pods = qj.pods("sweep-g1")
        for p in live(pods):
            if p["metadata"].get("annotations", {}).get("kubeslim.io/fake-duration") != "0s":
                qj.annotate_pod(p["metadata"]["name"], fake(exit_code=0, message=verify_ok_message(), container="verify",
                                                            duration="0s"))
        return qj.status("sweep").get("phase") == "Succeeded"

    wait_for(finish_all, what="the sweep to succeed", timeout=90)
    st = qj.status("sweep")
    assert st["results"]["int8"]["algo"] == "hist" and st["artifacts"]["model"]
    done = [p for p in qj.pods("sweep-g1") if p["status"].get("phase") == "Succeeded"]
    assert indexes(done) == [0, 1, 2, 3]
    assert one_job_per_generation(qj) == {"sweep/1": 1}


def test_a_failing_index_fails_the_run_naming_it(operator, qj, namespace):
    qj.apply(qj_manifest("sweepbad", namespace, quantization={"algos": ALGOS, "parallelism": 2},
                         annotations=fake(exit_code=3, message=bad_input_message("calibrate"), container="calibrate")))
    st = qj.wait_phase("sweepbad", "Failed", "NoSuchKey")
    assert st["stage"] == "Calibrating"
    assert st["message"].startswith("Candidate ") and "(index " in st["message"], st["message"]
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["Stalled"] == "True" and conds["Ready"] == "False"
    # Failed at once (exit 3 is the podFailurePolicy's FailJob), not retried: no index got a second pod.
    pods = qj.pods("sweepbad-g1")
    assert len(indexes(pods)) == len(set(indexes(pods)))
    assert one_job_per_generation(qj) == {"sweepbad/1": 1}
