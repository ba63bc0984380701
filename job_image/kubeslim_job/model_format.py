"""Which program format an `inference` model file holds, decided from its first bytes before Paddle
ever opens it.

Paddle 3 writes its programs either as the legacy protobuf `.pdmodel` or, by default, as PIR JSON
(`model.json` / PaddleOCR and PaddleX 3.x's `inference.json`). Only the legacy format can be
quantized here: PaddleSlim's quant_post_static and Paddle's static PTQ take a legacy `Program`
(on Paddle 3.3 with PIR on they fail with a bare AssertionError), and Paddle 2.6 cannot read PIR at
all (`create_predictor` on a `.json` model segfaults the process, `load_inference_model` raises
"Failed to parse program_desc"). So a PIR model ends the job with a clear reason instead.

Pure: no Paddle, no boto3; `Storage` is passed in by the caller.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import BadInput

if TYPE_CHECKING:
    from kubeslim_api.spec import InferenceModel

    from .storage import Storage

UNSUPPORTED_MODEL_FORMAT = "UnsupportedModelFormat"

# Every PIR file Paddle 3 writes starts with `{"base_code":{"magic":"pir"`; whitespace and a BOM are
# allowed too, in case a tool re-indented the JSON.
_PIR_HEAD = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"base_code"\s*:\s*\{\s*"magic"\s*:\s*"pir"')
HEAD_BYTES = 256          # enough for the magic even in pretty-printed JSON

# Where Paddle 3 exporters put the PIR program when the user kept their default names.
PIR_FILE_NAMES = ("inference.json", "model.json")
DEFAULT_FIELD = "spec.model.inference"


def is_pir(head: bytes) -> bool:
    """True when these first bytes of a model file are a Paddle 3 PIR (JSON) program."""
    return bool(_PIR_HEAD.match(head))


def unsupported_pir(uri: str, field: str = DEFAULT_FIELD) -> BadInput:
    """The error for a PIR model: names the file and the two ways out."""
    return BadInput(UNSUPPORTED_MODEL_FORMAT,
                    f"{field}: {uri} is a Paddle 3 PIR program (JSON, magic \"pir\"); post-training quantization "
                    "needs the legacy .pdmodel program format. Re-export the model with the environment variable "
                    "FLAGS_enable_pir_api=0 set before `import paddle` (paddle.jit.save then writes model.pdmodel + "
                    "model.pdiparams) and point spec.model.inference at those files, or give the model as "
                    "spec.model.builtin or spec.model.custom so the job exports it in the legacy format itself")


def require_legacy_file(path: str, uri: str, field: str = DEFAULT_FIELD) -> None:
    """Raise UnsupportedModelFormat if the downloaded model file at `path` (fetched from `uri`) is PIR."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if is_pir(head):
        raise unsupported_pir(uri, field)


def preflight_inference(storage: Storage, inference: InferenceModel, field: str = DEFAULT_FIELD) -> None:
    """Both files of an `inference` model exist, and the model file is not PIR, checked with a small
    ranged read. A missing default `model.pdmodel` next to an `inference.json`/`model.json` is
    the usual Paddle 3 export: say that, rather than only "no such key"."""
    from .storage import join_uri

    model_uri = join_uri(inference.uri, inference.model_file)
    uri_field = f"{field}.uri"
    try:
        head, _size = storage.get_range(model_uri, uri_field, 0, HEAD_BYTES - 1)
    except BadInput as exc:
        if exc.reason == "InvalidRange":        # an empty object: Paddle's loader names it
            head = b""
        elif exc.reason == "NoSuchKey":
            for name in PIR_FILE_NAMES:
                if name != inference.model_file and _exists(storage, join_uri(inference.uri, name), uri_field):
                    raise unsupported_pir(join_uri(inference.uri, name), field) from None
            raise
        else:
            raise
    if is_pir(head):
        raise unsupported_pir(model_uri, field)
    storage.size_of(join_uri(inference.uri, inference.params_file), uri_field)


def _exists(storage: Storage, uri: str, field: str) -> bool:
    try:
        storage.get_range(uri, field, 0, 0)
    except BadInput as exc:
        if exc.reason == "NoSuchKey":
            return False
        if exc.reason == "InvalidRange":        # there, but empty
            return True
        raise
    return True


# Paddle 3.2+ sends some operators' Python APIs (sigmoid, tanh, exp, sqrt, log, matmul, ... measured
# on 3.3.1) straight to C++ functions that accept only dygraph tensors or PIR values. Tracing a model
# with PIR off, which the legacy .pdmodel needs, hands them a legacy `Variable` and they raise this.
_PIR_ONLY_OPERATOR = re.compile(r"\b(\w+)\(\): argument \(position \d+\) must be Value, but got (?:Variable|None)")
LEGACY_EXPORT_UNSUPPORTED = "LegacyExportUnsupported"


def pir_only_operator(error_text: str) -> str | None:
    """The operator named by a Paddle 3 "must be Value, but got Variable" export error, else None."""
    m = _PIR_ONLY_OPERATOR.search(error_text)
    return m.group(1) if m else None


def legacy_export_unsupported(operator: str, field: str, paddle_version: str) -> BadInput:
    """This Paddle cannot write the model as a legacy program, the only format quantization takes."""
    return BadInput(LEGACY_EXPORT_UNSUPPORTED,
                    f"{field}: Paddle {paddle_version} cannot export this model as a legacy .pdmodel program (with "
                    f"FLAGS_enable_pir_api=0 its operator {operator}() accepts only PIR values), and post-training "
                    "quantization needs that format. Export the model with Paddle 2.6 (paddle.jit.save) and give it "
                    "as spec.model.inference, or run the job in the Paddle 2.6.2 image (the Dockerfile's GPU `job` "
                    "target)")
