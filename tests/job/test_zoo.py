"""The architectures Paddle users quantize (kubeslim_dev.zoo: PP-YOLOE+ detector with image +
scale_factor and NMS output, PP-OCR DB detector with dynamic H/W, SVTR-LCNet recognizer with
dynamic width, PP-LCNet classifier, ERNIE-style encoder with int64 inputs) through the real
`kubeslim-job run`, real Paddle and the devenv S3, as users give them: an exported inference model
(`spec.model.inference`), npz data keyed by input name, `verification.metric: fidelity`.

Each model's reported fidelity is checked against an independent computation: the fp32 model and
the int8 model the job uploaded, run here by plain Paddle Inference on the same evaluation npz."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from kubeslim_api.contract import EXIT_OK
from kubeslim_api.spec import parse_manifest
from kubeslim_dev import plain_paddle, zoo
from kubeslim_job import inference

from kubeslim_dev.devenv import remove_bucket

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {"ppyoloe": "ppyoloe.yaml", "ocr_det": "ocr-det.yaml", "ocr_rec": "ocr-rec.yaml", "lcnet": "lcnet.yaml",
            "ernie": "ernie.yaml"}


@pytest.fixture(scope="module")
def zoo_bucket(s3):
    """One bucket for the module's zoo models (conftest's `bucket` is per test)."""
    name = f"kz-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield name
    remove_bucket(s3, name)


def per_sample_cosines(fp32: np.ndarray, int8: np.ndarray) -> np.ndarray:
    """Cosine of each sample's flattened outputs; two all-zero samples (a detector's bbox_num of 0
    in both) are identical, cosine 1; one all-zero against a non-zero one, 0."""
    a = fp32.reshape(len(fp32), -1).astype(np.float64)
    b = int8.reshape(len(int8), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    return np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-30))


def download_model(s3, model_uri: str, into: Path) -> Path:
    bucket, key = model_uri[len("s3://"):].split("/", 1)
    into.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(into / "model.pdmodel"))
    s3.download_file(bucket, key[: -len(".pdmodel")] + ".pdiparams", str(into / "model.pdiparams"))
    return into


@pytest.mark.parametrize("key", list(zoo.MODELS))
def test_zoo_model_quantizes_with_output_fidelity(key, kubeslim_job, s3, zoo_bucket, tmp_path):
    model, settings = zoo.MODELS[key], zoo.RUN_SETTINGS[key]
    up = zoo.upload(s3, zoo_bucket, key, key, tmp_path / "export", settings["calibration"], settings["evaluation"])
    evaluation = dict(np.load(up.evaluation_file))
    # The export carries the inputs by name, as users' exporters write them; dynamic models get
    # evaluation data at another shape than their calibration data on purpose.
    names, fp32_runs = plain_paddle.predictor_outputs(up.local_dir, evaluation, batch=settings["batch"])
    assert set(evaluation) == {i["name"] for i in model.inputs}
    if any(-1 in i["shape"] for i in model.inputs):
        calib = zoo.calibration_data(key, 1)
        assert any(calib[n].shape[1:] != evaluation[n].shape[1:] for n in calib), "dynamic model, one shape"

    m = zoo.manifest(f"zoo-{key.replace('_', '-')}", key, up, f"s3://{zoo_bucket}/out/{key}/")
    # Plain PTQ is what is checked here: the fp32 fallback (on by default) would recover a failed
    # gate by keeping layers in fp32 and take minutes.
    m["spec"]["quantization"]["accuracyControl"] = {"mode": "off"}
    run = kubeslim_job("run", m, timeout=420)
    assert run.rc == EXIT_OK, (run.result, run.stderr[-3000:])
    r, gate = run.result.results, run.result.gate
    assert gate.metric == "fidelity" and gate.passed and gate.min_cosine == settings["min_cosine"], run.result.message
    assert r.backend == "cpu-onednn-int8"
    fid = r.int8.fidelity
    assert fid.cosine is not None and settings["min_cosine"] <= fid.cosine <= 1.0 + 1e-9, fid
    # One row per output, in the model's order. (Not by name: the job names the outputs of the fp32
    # copy it re-saves, and Paddle numbers fetch variables per process, so the file exported here
    # may say save_infer_model/scale_0.tmp_1 where the job's copy says ...tmp_0.)
    assert len(fid.per_output) == len(names) and all(o.name.startswith("save_infer_model/") for o in fid.per_output), \
        (fid, names)
    assert fid.cosine == pytest.approx(min(o.cosine for o in fid.per_output if o.comparable), abs=1e-6)
    assert r.fp32.fidelity.cosine == pytest.approx(1.0)
    assert run.result.artifacts.model == f"s3://{zoo_bucket}/out/{key}/model.pdmodel"

    # Independent: the uploaded int8 model and the fp32 model on the same npz, here (int8 on the op
    # types the job runs in int8, as the README tells a server to).
    int8_dir = download_model(s3, run.result.artifacts.model, tmp_path / "int8")
    _, int8_runs = plain_paddle.predictor_outputs(int8_dir, evaluation, batch=settings["batch"], int8=True,
                                                  int8_ops=inference.ONEDNN_INT8_OPS)
    n = settings["evaluation"]
    for index, out in enumerate(fid.per_output):
        fp32 = np.concatenate([run_[index] for run_ in fp32_runs])
        int8 = np.concatenate([run_[index] for run_ in int8_runs])
        if len(fp32) != n:
            # Not one row per sample: the detector's NMS boxes ([boxes, 6] over the batch). Matched
            # box for box only when int8 kept the same count; otherwise a reason, never a crash.
            assert out.comparable or out.reason, out
            continue
        assert out.comparable, out
        mine = per_sample_cosines(fp32, int8)
        # oneDNN's int8 kernels are not bit-reproducible from run to run (measured on ERNIE's
        # logits, the same 8 samples twice in one process: cosine 0.9932 and 0.9887), so the two
        # computations agree to a share of the int8 error itself, not to 1e-3.
        tolerance = 1e-3 + 0.6 * (1.0 - min(out.cosine, float(mine.mean())))
        assert out.cosine == pytest.approx(float(mine.mean()), abs=tolerance), (out, float(mine.mean()))
        error = float(np.abs(fp32.astype(np.float64) - int8).max())
        assert 0.5 * error - 1e-6 <= out.max_abs_error <= 2.0 * error + 1e-6, (out, error)


def test_detector_output_varies_in_length(tmp_path):
    """The detector's seeded class scores keep a different number of NMS boxes per image (what the
    fidelity comparison must cope with), and bbox rows add up to bbox_num."""
    evaluation = zoo.evaluation_data("ppyoloe", 4)
    model_dir = zoo.export("ppyoloe", tmp_path / "ppyoloe", zoo.calibration_data("ppyoloe", 4))
    _, runs = plain_paddle.predictor_outputs(model_dir, evaluation, batch=4)
    boxes, counts = runs[0]
    assert len(counts) == 4 and len(set(counts.tolist())) > 1 and counts.sum() == len(boxes)
    assert boxes.shape[1] == 6 and np.all((boxes[:, 1] >= 0.01) & (boxes[:, 1] <= 1.0))   # class, score, x1..y2


@pytest.mark.parametrize("key", list(zoo.MODELS))
def test_example_manifest_is_what_the_zoo_seeds(key):
    """examples/<kind>.yaml names exactly what `python -m kubeslim_dev.zoo seed` uploads, with the
    settings the job-tier test above passes with."""
    doc = yaml.safe_load((REPO / "examples" / EXAMPLES[key]).read_text())
    _, typed = parse_manifest(doc)             # what the operator and the job accept
    assert typed.verification.metric == "fidelity" and [i.name for i in typed.model.inputs] == \
        [i["name"] for i in zoo.MODELS[key].inputs]
    b = f"s3://{zoo.EXAMPLE_BUCKET}/zoo/{key}"
    up = zoo.Uploaded({"inference": {"uri": f"{b}/fp32/"}, "inputs": zoo.MODELS[key].inputs},
                      {"uri": f"{b}/calibration.npz", "format": "npz"}, {"uri": f"{b}/evaluation.npz", "format": "npz"},
                      Path("."), Path("."))
    expected = zoo.manifest(doc["metadata"]["name"], key, up, f"{b}/int8/")["spec"]
    spec = doc["spec"]
    for field in ("model", "data", "quantization", "verification"):
        assert spec[field] == expected[field], field
    assert spec["output"]["uri"] == f"{b}/int8/"
