"""The progress lines the real pod stages print (kubeslim_api.progress), read back from stderr as
the operator reads them from the pod's log: real Paddle, PaddleSlim and S3 (devenv)."""
from __future__ import annotations

import zlib  # noqa: F401

import math

import pytest

from kubeslim_api.contract import EXIT_OK
from kubeslim_api.progress import PREFIX, parse_line
from kubeslim_dev import digits
from kubeslim_job import progress

pytestmark = pytest.mark.cluster


def lines_of(stderr: str):
    return [x for x in map(parse_line, stderr.splitlines()) if x is not None]


def test_calibrate_and_verify_count_what_paddleslim_and_the_evaluation_take(kubeslim_job, job_bucket, tmp_path):
    algos = ["hist", "avg"]
    m = digits.manifest("progress", job_bucket["custom"], job_bucket["calib_npz"], job_bucket["eval_png"],
                        f"{job_bucket['prefix']}/out/progress/", algos, batch_size=16, batch_nums=4)
    work = tmp_path / "work"
    runs = {stage: kubeslim_job(stage, m, work=work, via="env") for stage in ("export", "calibrate", "verify")}
    for stage, run in runs.items():
        assert run.rc == EXIT_OK, (stage, run.stderr[-2000:])
        lines = lines_of(run.stderr)
        assert lines and all(x.stage == stage for x in lines)
        assert not lines[0].finished and lines[-1].finished and lines[-1].percent == 100
        assert PREFIX not in run.stdout                    # stdout is the stage result's
        times = [x.time for x in lines]
        assert times == sorted(times)

    calib = [x for x in lines_of(runs["calibrate"].stderr) if x.total is not None]
    # spec.calibrationSamples defaults to batchSize x batchNums: 64 samples in batches of 16
    batch_nums = math.ceil(64 / 16)
    # hist takes its batches twice (abs-max pass, then histograms), avg once; counted as taken
    assert {x.total for x in calib} == {progress.calibration_batches(algos, batch_nums)}
    assert calib[-1].done == calib[-1].total and calib[-1].unit == "batches"
    assert [x.done for x in calib] == sorted(x.done for x in calib)
    assert {x.step for x in calib} >= {"avg"}

    verify = [x for x in lines_of(runs["verify"].stderr) if x.total is not None]
    evaluated = runs["verify"].result.results
    samples = runs["verify"].result.details["evalSamples"]
    models = 1 + len([c for c in evaluated.candidates if c.error is None])
    # The evaluation counts batches (its lines are rate-limited, so the last one printed may be short
    # of the total); speed-aware quantization, when it runs after it, counts its own steps and may
    # stop early (the stage's finished line at 100 % is checked above).
    evaluation = [x for x in verify if x.unit == "batches"]
    assert {x.total for x in evaluation} == {progress.evaluation_batches(samples, 64, models)}
    assert [x.done for x in evaluation] == sorted(x.done for x in evaluation)
