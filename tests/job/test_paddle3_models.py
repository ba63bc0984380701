"""Paddle 3 exports through the real `kubeslim-job run` CLI and the devenv S3.

The fixtures (tests/fixtures/paddle3, written by paddle 3.3.1: make_fixtures.py there) are the
same seeded network twice: as PIR JSON (`inference.json`, what PaddleOCR/PaddleX 3.x ship) and
as a legacy `.pdmodel` (FLAGS_enable_pir_api=0). The PIR copy must end with the clear
UnsupportedModelFormat reason in every way a user can hand it over, and never reach Paddle (2.6
segfaults on it); the legacy copy of the very same model is quantized and verified, so the refusal
is about the format and nothing else."""
from __future__ import annotations

import zlib  # noqa: F401

from pathlib import Path

import pytest

from kubeslim_api.contract import EXIT_BAD_INPUT, EXIT_OK

from kubeslim_dev import digits

pytestmark = pytest.mark.cluster

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "paddle3"
PIR_DIR, LEGACY_DIR = FIXTURES / "pir", FIXTURES / "legacy"


@pytest.fixture(scope="module")
def paddle3_models(s3, job_bucket):
    """Upload the fixtures under several layouts; {case: spec.model}."""
    bucket, b = job_bucket["bucket"], job_bucket["prefix"]

    def put(key: str, path: Path) -> None:
        s3.upload_file(str(path), bucket, key)

    put("p3/ocr/inference.json", PIR_DIR / "inference.json")             # PaddleOCR 3.x layout
    put("p3/ocr/inference.pdiparams", PIR_DIR / "inference.pdiparams")
    put("p3/default/model.json", PIR_DIR / "inference.json")             # jit.save defaults on paddle 3
    put("p3/default/model.pdiparams", PIR_DIR / "inference.pdiparams")
    put("p3/renamed/model.pdmodel", PIR_DIR / "inference.json")          # PIR under a legacy name
    put("p3/renamed/model.pdiparams", PIR_DIR / "inference.pdiparams")
    put("p3/legacy/model.pdmodel", LEGACY_DIR / "model.pdmodel")
    put("p3/legacy/model.pdiparams", LEGACY_DIR / "model.pdiparams")
    return {
        "modelFile-json": ({"inference": {"uri": f"{b}/p3/ocr/", "modelFile": "inference.json",
                                          "paramsFile": "inference.pdiparams"}}, f"{b}/p3/ocr/inference.json"),
        "json-beside-missing-default": ({"inference": {"uri": f"{b}/p3/default/"}}, f"{b}/p3/default/model.json"),
        "pdmodel-that-is-pir": ({"inference": {"uri": f"{b}/p3/renamed/"}}, f"{b}/p3/renamed/model.pdmodel"),
        "legacy": ({"inference": {"uri": f"{b}/p3/legacy/"}}, f"{b}/p3/legacy/model.pdmodel"),
    }


def _manifest(job_bucket, model, out: str):
    return digits.manifest("paddle3", model, job_bucket["calib_npz"], job_bucket["eval_npz"],
                           f"{job_bucket['prefix']}/out/paddle3/{out}/", ["avg"], max_drop=1.0)


@pytest.mark.parametrize("case", ["modelFile-json", "json-beside-missing-default", "pdmodel-that-is-pir"])
def test_a_pir_model_fails_clearly_through_run(kubeslim_job, job_bucket, paddle3_models, case, tmp_path):
    model, uri = paddle3_models[case]
    work = tmp_path / "work"
    run = kubeslim_job("run", _manifest(job_bucket, model, case), work=work)
    assert run.rc == EXIT_BAD_INPUT, (run.rc, run.result, run.stderr[-2000:])
    res = run.result
    assert res is not None and res.stage == "export" and not res.ok
    assert res.reason == "UnsupportedModelFormat", res
    for words in (uri, "PIR", "FLAGS_enable_pir_api=0", "spec.model.builtin", "spec.model.custom"):
        assert words in res.message, (words, res.message)
    # Refused from a ranged read of the first bytes, before the model was even downloaded: no
    # Paddle code ever saw the file.
    assert not (work / "fp32" / "model.pdmodel").exists()
    assert "Traceback" not in run.stderr


def test_the_legacy_twin_of_the_same_model_is_quantized(kubeslim_job, job_bucket, paddle3_models):
    # Written by paddle 3.3.1 with PIR off: the format kubeslim takes, whichever Paddle runs the job.
    model, _ = paddle3_models["legacy"]
    run = kubeslim_job("run", _manifest(job_bucket, model, "legacy"))
    assert run.rc == EXIT_OK, (run.rc, run.result, run.stderr[-3000:])
    assert run.result.ok and run.result.stage == "verify"
    assert run.result.results.int8.algo == "avg"
