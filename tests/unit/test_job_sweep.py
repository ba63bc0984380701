"""The parallel sweep's pod roles (kubeslim_job.sweep) over an in-memory S3: who runs what, the
hand-over through the run's work prefix, and the clean-up."""
from __future__ import annotations

import json
import os

import pytest

from kubeslim_api import sweep as contract
from kubeslim_api.spec import parse_spec
from kubeslim_job import sweep
from kubeslim_job.errors import BadInput
from kubeslim_job.handoff import CalibratedCandidate, ExportFacts
from kubeslim_job.workdir import WorkDir
from tests.unit.job_fakes import MemStorage

pytestmark = pytest.mark.unit

URI = "s3://m/out/.kubeslim-sweep/u-g1/"
SPEC = parse_spec({
    "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
    "data": {"calibration": {"uri": "s3://d/train/", "listFile": "t.txt"},
             "evaluation": {"uri": "s3://d/val/", "listFile": "v.txt"}},
    "output": {"uri": "s3://m/out/"},
    "quantization": {"algos": ["hist", "avg", "KL"], "parallelism": 2},
})


class S3(MemStorage):
    """MemStorage that also uploads, downloads and deletes."""

    def upload(self, path, uri, field, content_type=None):
        with open(path, "rb") as fh:
            self.objects[uri] = fh.read()

    def download(self, uri, path, field):
        data = self.get_bytes(uri, field)
        with open(path, "wb") as fh:
            fh.write(data)
        return len(data)

    def delete(self, uri, field):
        del self.objects[uri]


def env(index):
    return {contract.URI_ENV: URI, contract.INDEX_ENV: str(index)}


# -- who runs what: (index, stage) → the runner's role, by its name --------------------------------

ROLES = [
    (0, "export", "_export_first"), (1, "export", "_export_from"), (3, "export", "_export_from"),
    (0, "calibrate", "_candidate"), (2, "calibrate", "_candidate"), (3, "calibrate", "_gather"),
    (0, "verify", "_handed_on"), (2, "verify", "_handed_on"), (3, "verify", "_publish"),
]


@pytest.mark.parametrize("index,stage,role", ROLES)
def test_each_index_plays_its_part(index, stage, role):
    assert sweep.runner(stage, SPEC, env(index)).__qualname__.startswith(f"{role}.")


@pytest.mark.parametrize("spec,environ", [
    (SPEC, {}),                                                    # kubeslim-job run -f: the plain stages
    (SPEC, {contract.URI_ENV: URI}),                               # not an Indexed Job's pod
    (SPEC.model_copy(update={"quantization": SPEC.quantization.model_copy(update={"parallelism": 1})}), env(0)),
])
def test_the_plain_stages_run_outside_a_sweep(spec, environ):
    assert sweep.runner("calibrate", spec, environ) is None


def test_a_candidates_verify_hands_on():
    res = sweep.runner("verify", SPEC, env(2))(SPEC, None, None).to_result()
    assert res.ok and res.stage == "verify" and "KL" in res.message and "index 3" in res.message


# -- the hand-over ---------------------------------------------------------------------------------

FACTS = ExportFacts(source="builtin", inputs=[{"name": "x", "shape": [3, 224, 224], "dtype": "float32"}], outputs=[],
                    ops=10, op_types={}, params=5, size_bytes=9)


def test_later_indexes_take_index_0s_export(tmp_path):
    s3 = S3({URI + "export/model.pdmodel": b"program", URI + "export/model.pdiparams": b"weights",
             URI + "export/export.json": json.dumps(FACTS.dump()).encode()})
    work = WorkDir(str(tmp_path))
    facts = sweep.runner("export", SPEC, env(2))(SPEC, s3, work)
    assert facts == FACTS
    assert open(os.path.join(work.fp32, "model.pdiparams"), "rb").read() == b"weights"
    assert work.load(ExportFacts) == FACTS        # calibrate reads it from the work dir


def test_waiting_polls_until_every_marker_is_there():
    s3, polls = S3({}), []
    arrivals = [URI + "candidates/hist.json", URI + "candidates/KL.json", URI + "candidates/avg.json"]

    def sleep(_):
        polls.append(1)
        s3.objects[arrivals[len(polls) - 1]] = b"{}"

    s3.objects[URI + "candidates/hist/model.pdmodel"] = b"m"       # a model alone is no marker
    sweep.wait_for(s3, URI + "candidates/", ["hist.json", "avg.json", "KL.json"], "candidates", "x", sleep=sleep)
    assert len(polls) == 3


def test_the_final_index_gathers_every_candidate_in_spec_order(tmp_path):
    good = {a: CalibratedCandidate(algo=a, calibration_seconds=1.5, size_bytes=4, quant_ops=7, dir=f"int8/{a}")
            for a in ("hist", "KL")}
    failed = CalibratedCandidate(algo="avg", calibration_seconds=0.5, error="no quantize ops")
    objects = {URI + f"candidates/{a}.json": c.model_dump_json(by_alias=True).encode() for a, c in good.items()}
    objects[URI + "candidates/avg.json"] = failed.model_dump_json(by_alias=True).encode()
    for a in good:
        objects[URI + f"candidates/{a}/model.pdmodel"] = f"{a} program".encode()
        objects[URI + f"candidates/{a}/model.pdiparams"] = f"{a} weights".encode()
    work = WorkDir(str(tmp_path))
    got = sweep.candidates_from(S3(objects), URI)(SPEC.quantization, None, FACTS, work, 10)
    assert [c.algo for c in got] == ["hist", "avg", "KL"] and got[1] == failed
    assert open(os.path.join(work.root, got[2].dir, "model.pdiparams"), "rb").read() == b"KL weights"
    assert not os.path.exists(work.int8("avg") + "/model.pdmodel")


def test_a_missing_candidate_model_is_an_error_not_a_silent_gap(tmp_path):
    cand = CalibratedCandidate(algo="hist", calibration_seconds=1.0, dir="int8/hist")
    spec = SPEC.model_copy(update={"quantization": SPEC.quantization.model_copy(update={"algos": ["hist"]})})
    s3 = S3({URI + "candidates/hist.json": cand.model_dump_json(by_alias=True).encode()})
    with pytest.raises(BadInput, match="NoSuchKey"):
        sweep.candidates_from(s3, URI)(spec.quantization, None, FACTS, WorkDir(str(tmp_path)), 10)


def test_clean_up_removes_the_runs_prefix_only():
    mine, other = URI + "candidates/hist.json", "s3://m/out/.kubeslim-sweep/u-g2/export/export.json"
    s3 = S3({mine: b"{}", URI + "export/model.pdmodel": b"m", other: b"{}", "s3://m/out/model.pdmodel": b"int8"})
    sweep.remove_prefix(s3, URI)
    assert sorted(s3.objects) == sorted([other, "s3://m/out/model.pdmodel"])
