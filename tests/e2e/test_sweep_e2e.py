"""A parallel sweep on the real node (see conftest.py): two candidates calibrated in two pods at once,
then the final index's choice, which must be a sequential sweep's on the same data."""
from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import BUCKET, applied_until_final

pytestmark = pytest.mark.timeout(1500)

ALGOS = ["hist", "avg"]
INDEX = "batch.kubernetes.io/job-completion-index"
# Two pods on the node's 2 CPUs beside the operator's 100m: each pod's request must leave room.
RESOURCES = {"gpu": 1, "cpu": "800m", "memory": "3Gi"}


def run(kubectl, namespace: str, doc: dict) -> dict:
    st = applied_until_final(kubectl, namespace, doc, timeout=900)
    assert st.get("phase") == "Succeeded", st
    return st


def by_algo(status: dict) -> dict[str, dict]:
    return {c["algo"]: c for c in status["results"]["candidates"]}


def test_two_candidates_at_once_choose_as_a_sequential_sweep(operator_release, e2e_namespace, digits_manifest, kubectl, seeded):
    # speed-aware off: its timed extra rows would share the chosen algo's name and key
    common = {"quantization.algos": ALGOS, "resources": RESOURCES, "quantization.accuracyControl": {"mode": "off"},
              "quantization.speedAware": "off"}
    parallel_doc = digits_manifest("sweep-par", **common, **{"quantization.parallelism": 2})
    par = run(kubectl, e2e_namespace, parallel_doc)
    seq = run(kubectl, e2e_namespace, digits_manifest("sweep-seq", **common))

    # The parallel run was an Indexed Job whose two candidates calibrated at the same time.
    job = json.loads(kubectl("-n", e2e_namespace, "get", "job", par["jobName"], "-o", "json").stdout)
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 3)
    pods = json.loads(kubectl("-n", e2e_namespace, "get", "pods", "-l", f"batch.kubernetes.io/job-name={par['jobName']}",
                              "-o", "json").stdout)["items"]
    ok = {int(p["metadata"]["labels"][INDEX]): p for p in pods if p["status"]["phase"] == "Succeeded"}
    assert sorted(ok) == [0, 1, 2]

    def calibrating(index: int) -> tuple[str, str]:
        term = next(s for s in ok[index]["status"]["initContainerStatuses"] if s["name"] == "calibrate")["state"]["terminated"]
        return term["startedAt"], term["finishedAt"]
    (s0, e0), (s1, e1) = calibrating(0), calibrating(1)
    assert s0 < e1 and s1 < e0, f"the candidates did not calibrate at once: {(s0, e0)} {(s1, e1)}"

    # Same candidates (calibration is deterministic: the same models, so the same accuracy), and the
    # same choice: the best top-1; where two tie, the chooser takes the faster, which each run timed
    # on its own pod, so either tied one is a sequential sweep's choice too.
    assert set(by_algo(par)) == set(by_algo(seq)) == set(ALGOS)
    for algo in ALGOS:
        assert by_algo(par)[algo]["top1"] == pytest.approx(by_algo(seq)[algo]["top1"], abs=1e-9), algo
    best = max(c["top1"] for c in by_algo(seq).values())
    tied = sorted(a for a, c in by_algo(seq).items() if abs(c["top1"] - best) <= 1e-9)
    assert par["results"]["int8"]["algo"] in tied
    if len(tied) == 1:
        assert par["results"]["int8"]["algo"] == seq["results"]["int8"]["algo"]
    assert par["results"]["fp32"]["top1"] == pytest.approx(seq["results"]["fp32"]["top1"], abs=1e-9)

    # Published like a sequential run; the work prefix is gone.
    out = parallel_doc["spec"]["output"]["uri"]
    assert par["artifacts"]["model"] == out + "model.pdmodel"
    prefix = out[len(f"s3://{BUCKET}/"):]
    keys = [o["Key"] for o in seeded.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    assert prefix + "model.pdmodel" in keys
    assert not [k for k in keys if ".kubeslim-sweep/" in k], keys
