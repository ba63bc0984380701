"""verification.metric agreement through the real CLI and the devenv S3: evaluation images without
labels (a plain prefix of PNGs), the gate on 1 - agreement, and agreement reported beside top-1
where labels are read."""
from __future__ import annotations

import zlib  # noqa: F401

import pytest

from kubeslim_api.contract import EXIT_OK

from kubeslim_dev import digits

pytestmark = pytest.mark.cluster

EVAL_LIMIT = 200


def test_agreement_gates_an_unlabelled_evaluation_prefix(kubeslim_job, job_bucket, digits_data):
    """What a user without labels writes: evaluation = a prefix of images, metric agreement."""
    evaluation = {"uri": f"{job_bucket['prefix']}/data/test-png/img/", "format": "imagePrefix", "limit": EVAL_LIMIT}
    m = digits.manifest("agree", job_bucket["inference"], job_bucket["calib_npz"], evaluation,
                        f"{job_bucket['prefix']}/out/agree/", ["avg"], **{"verification.metric": "agreement"})
    run = kubeslim_job("run", m)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r, gate = run.result.results, run.result.gate
    assert gate.metric == "agreement" and gate.passed and gate.max_accuracy_drop == 0.02
    assert run.result.details["evalSamples"] == EVAL_LIMIT
    assert r.fp32.agreement == 1.0 and r.fp32.top1 is None and r.int8.top1 is None     # no labels were read
    # the drop is 1 - agreement, and the chosen candidate's is within the gate
    assert r.accuracy_drop == pytest.approx(1 - r.int8.agreement)
    assert 1 - r.int8.agreement <= gate.max_accuracy_drop + 1e-9 and r.int8.agreement <= 1.0
    assert round(r.int8.agreement * EVAL_LIMIT, 6).is_integer()
    assert run.result.details["fp32Correct"] is None
    assert "agreement" in run.result.message and run.result.artifacts.model


def test_agreement_is_reported_beside_top1(kubeslim_job, job_bucket, trained, digits_data):
    """With labels and metric top1, every candidate also says how often it keeps fp32's answer;
    each changed answer moves top-1 by at most one image."""
    m = digits.manifest("agree-top1", job_bucket["inference"], job_bucket["calib_npz"], job_bucket["eval_npz"],
                        f"{job_bucket['prefix']}/out/agree-top1/", ["avg", "hist"])
    run = kubeslim_job("run", m)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r = run.result.results
    n = len(digits_data["test_y"])
    assert round(r.fp32.top1 * n) == round(trained["cnn_top1"] * n) and r.fp32.agreement == 1.0
    for c in r.candidates:
        # no floor (how many answers a candidate changes depends on the calibration and the CPU's
        # kernels): a share of n images, and each changed answer moves top-1 by at most one image
        assert c.agreement is not None and 0.0 <= c.agreement <= 1.0 and round(c.agreement * n, 6).is_integer()
        assert abs(c.top1 - r.fp32.top1) <= (1 - c.agreement) + 1e-6, c
