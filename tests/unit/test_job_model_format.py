"""The Paddle 3 PIR probe (kubeslim_job.model_format) on real files written by paddle 3.3.1
(tests/fixtures/paddle3, made by make_fixtures.py there) and on in-memory S3 objects: a PIR
program is refused with UnsupportedModelFormat naming the file and the fix, before any Paddle
code could read it; legacy programs pass untouched."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeslim_api.contract import EXIT_BAD_INPUT
from kubeslim_api.spec import InferenceModel
from kubeslim_job import model_format
from kubeslim_job.errors import BadInput

from job_fakes import MemStorage

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "paddle3"
PIR_FILE = FIXTURES / "pir" / "inference.json"
LEGACY_FILE = FIXTURES / "legacy" / "model.pdmodel"
PREFIX = "s3://models/ocr/"


def test_fixtures_are_what_paddle_3_wrote():
    # The legacy twin is protobuf (not JSON at all); the PIR one parses as JSON with the magic.
    doc = json.loads(PIR_FILE.read_text())
    assert doc["base_code"]["magic"] == "pir"
    with pytest.raises(UnicodeDecodeError):
        LEGACY_FILE.read_bytes().decode("utf-8")


def test_a_pir_file_is_recognised_from_its_head():
    assert model_format.is_pir(PIR_FILE.read_bytes()[:model_format.HEAD_BYTES])


def test_a_legacy_program_is_not_pir():
    assert not model_format.is_pir(LEGACY_FILE.read_bytes()[:model_format.HEAD_BYTES])


@pytest.mark.parametrize("head", [
    b'{ "base_code" : {\n    "magic": "pir", "version": 4}}',      # re-indented by a tool
    b'\xef\xbb\xbf{"base_code":{"magic":"pir"',                       # written with a BOM
    b'\n\n  {"base_code":{"magic":"pir","trainable":true',
])
def test_reformatted_pir_is_still_pir(head):
    assert model_format.is_pir(head)


@pytest.mark.parametrize("head", [
    b"",
    b'{"base_code":{"magic":"onnx"',            # some other JSON
    b'{"program":{"base_code":{"magic":"pir"',  # magic not at the top
    b"\x0a\x07\x0a\x05feed",                    # protobuf bytes
])
def test_other_bytes_are_not_pir(head):
    assert not model_format.is_pir(head)


def _assert_unsupported(exc: BadInput, uri: str):
    assert exc.reason == model_format.UNSUPPORTED_MODEL_FORMAT
    assert exc.exit_code == EXIT_BAD_INPUT          # retrying cannot help
    for words in (uri, "spec.model.inference", "FLAGS_enable_pir_api=0", "spec.model.builtin", "spec.model.custom"):
        assert words in exc.message, (words, exc.message)


def test_a_downloaded_pir_file_is_refused_naming_its_uri(tmp_path):
    path = tmp_path / "model.pdmodel"
    path.write_bytes(PIR_FILE.read_bytes())
    with pytest.raises(BadInput) as info:
        model_format.require_legacy_file(str(path), PREFIX + "inference.json")
    _assert_unsupported(info.value, PREFIX + "inference.json")


def test_a_downloaded_legacy_file_passes(tmp_path):
    path = tmp_path / "model.pdmodel"
    path.write_bytes(LEGACY_FILE.read_bytes())
    model_format.require_legacy_file(str(path), PREFIX + "model.pdmodel")


def _storage(**files: bytes) -> MemStorage:
    return MemStorage({PREFIX + name: data for name, data in files.items()})


def test_preflight_refuses_a_model_file_pointing_at_pir_json():
    st = _storage(**{"inference.json": PIR_FILE.read_bytes(), "inference.pdiparams": b"p"})
    inf = InferenceModel(uri=PREFIX, model_file="inference.json", params_file="inference.pdiparams")
    with pytest.raises(BadInput) as info:
        model_format.preflight_inference(st, inf)
    _assert_unsupported(info.value, PREFIX + "inference.json")
    # a ranged read of the head, never the whole model
    assert st.bytes_read <= model_format.HEAD_BYTES


def test_preflight_refuses_a_pdmodel_that_is_really_pir():
    st = _storage(**{"model.pdmodel": PIR_FILE.read_bytes(), "model.pdiparams": b"p"})
    with pytest.raises(BadInput) as info:
        model_format.preflight_inference(st, InferenceModel(uri=PREFIX))
    _assert_unsupported(info.value, PREFIX + "model.pdmodel")


@pytest.mark.parametrize("name", model_format.PIR_FILE_NAMES)
def test_preflight_names_the_pir_file_beside_a_missing_default(name):
    # A Paddle 3 export left at the default names: no model.pdmodel, a .json next to where it should be.
    st = _storage(**{name: PIR_FILE.read_bytes(), "model.pdiparams": b"p"})
    with pytest.raises(BadInput) as info:
        model_format.preflight_inference(st, InferenceModel(uri=PREFIX))
    _assert_unsupported(info.value, PREFIX + name)


def test_preflight_keeps_no_such_key_when_there_is_no_pir_file_either():
    st = _storage(**{"model.pdiparams": b"p"})
    with pytest.raises(BadInput) as info:
        model_format.preflight_inference(st, InferenceModel(uri=PREFIX))
    assert info.value.reason == "NoSuchKey"
    assert "model.pdmodel" in info.value.message


def test_preflight_passes_a_legacy_model_and_checks_its_params():
    ok = _storage(**{"model.pdmodel": LEGACY_FILE.read_bytes(), "model.pdiparams": b"p"})
    model_format.preflight_inference(ok, InferenceModel(uri=PREFIX))
    no_params = _storage(**{"model.pdmodel": LEGACY_FILE.read_bytes()})
    with pytest.raises(BadInput) as info:
        model_format.preflight_inference(no_params, InferenceModel(uri=PREFIX))
    assert info.value.reason == "NoSuchKey" and "model.pdiparams" in info.value.message


# The sigmoid lines verbatim from paddle 3.3.1 (jit.save with FLAGS_enable_pir_api=0 of a model
# calling F.sigmoid, then Tensor.sigmoid); matmul (which failed the same way) in the same generated form.
PADDLE3_LEGACY_TRACE_ERRORS = [
    ("sigmoid", "TypeError: (InvalidType) sigmoid(): argument (position 1) must be Value, but got Variable "
                "(at /paddle/paddle/fluid/pybind/eager_utils.cc:2308)"),
    ("matmul", "TypeError: (InvalidType) matmul(): argument (position 1) must be Value, but got Variable "
               "(at /paddle/paddle/fluid/pybind/eager_utils.cc:2308)"),
    ("sigmoid", "ValueError: (InvalidArgument) sigmoid(): argument (position 1) must be Value, but got None "
                "(at /paddle/paddle/fluid/pybind/eager_utils.cc:2296)"),
]


@pytest.mark.parametrize("operator, text", PADDLE3_LEGACY_TRACE_ERRORS)
def test_the_operator_paddle_3_cannot_trace_as_legacy_is_named(operator, text):
    assert model_format.pir_only_operator("Traceback ...\n  ...\n" + text) == operator


@pytest.mark.parametrize("text", [
    "ValueError: (InvalidArgument) The shape of input[0] and input[1] is expected to be equal",
    "TypeError: forward() missing 1 required positional argument: 'y'",
])
def test_other_export_errors_are_left_alone(text):
    assert model_format.pir_only_operator(text) is None


def test_the_legacy_export_error_names_the_operator_version_and_the_ways_out():
    exc = model_format.legacy_export_unsupported("sigmoid", "spec.model.custom", "3.3.1")
    assert exc.reason == model_format.LEGACY_EXPORT_UNSUPPORTED and exc.exit_code == EXIT_BAD_INPUT
    for words in ("spec.model.custom", "Paddle 3.3.1", "sigmoid()", "Paddle 2.6", "spec.model.inference"):
        assert words in exc.message, (words, exc.message)
