"""spec.verification.custom: the user's function from S3 is called with a model's outputs and the
evaluation npz's arrays; what it gets wrong is MetricError naming the file and the line."""
from __future__ import annotations

import io

import numpy as np
import pytest

from kubeslim_api.spec import SpecError, parse_spec
from kubeslim_job import custom_metric
from kubeslim_job.errors import BadInput
from kubeslim_job.workdir import WorkDir
from tests.invalid_specs import VALID_SPEC

from job_fakes import MemStorage

pytestmark = pytest.mark.unit

CODE = "s3://b/metric.py"
EVAL = "s3://b/eval.npz"


class _Files(MemStorage):
    def download(self, uri, path, field):
        with open(path, "wb") as fh:
            fh.write(self.get_bytes(uri, field))


def _spec(function: str = "evaluate"):
    return parse_spec({**VALID_SPEC, "data": {**VALID_SPEC["data"], "evaluation": {"uri": EVAL, "format": "npz"}},
                       "verification": {"metric": "custom", "custom": {"code": CODE, "function": function}}})


def _load(tmp_path, source: str, function: str = "evaluate", samples: int = 3):
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((4, 2), np.float32), targets=np.array([1.0, 2.0, 3.0, 4.0]), classes=np.arange(10))
    storage = _Files({CODE: source.encode(), EVAL: buf.getvalue()})
    return custom_metric.load(_spec(function), storage, WorkDir(str(tmp_path)), samples, ["x"])


def test_the_function_gets_the_outputs_and_the_npz_arrays_cut_to_the_evaluated_samples(tmp_path):
    metric = _load(tmp_path, "import numpy as np\n"
                             "def evaluate(outputs, data):\n"
                             "    assert set(data) == {'x', 'targets', 'classes'} and len(data['classes']) == 10\n"
                             "    return -float(np.mean((outputs['y'][:, 0] - data['targets']) ** 2))\n")
    assert metric({"y": np.array([[1.0], [2.0], [5.0]])}, "fp32") == pytest.approx(-4 / 3, abs=1e-6)
    assert metric({"y": np.array([[1.0], [2.0], [3.0]])}, "int8 avg") == 0.0


@pytest.mark.parametrize("source, words", [
    ("def evaluate(outputs, data):\n    x = 1\n    return x / 0\n",
     ["metric.py line 3", "evaluate raised ZeroDivisionError", "int8 hist outputs"]),
    ("def evaluate(outputs, data):\n    return 'high'\n", ["returned 'high' (str)", "finite number"]),
    ("def evaluate(outputs, data):\n    return float('nan')\n", ["returned nan", "finite number"]),
    ("def evaluate(outputs, data):\n    return None\n", ["returned None (NoneType)"]),
])
def test_a_function_that_raises_or_returns_no_number_is_a_metric_error(tmp_path, source, words):
    metric = _load(tmp_path, source)
    with pytest.raises(BadInput) as ei:
        metric({"y": np.zeros((3, 1))}, "int8 hist")
    assert ei.value.reason == "MetricError" and f"spec.verification.custom.code {CODE}" in ei.value.message
    assert all(w in ei.value.message for w in words), ei.value.message


def test_a_file_that_does_not_import_or_lacks_the_function_names_it(tmp_path):
    with pytest.raises(BadInput, match=r"metric.py line 2: importing it failed \(SyntaxError"):
        _load(tmp_path, "import numpy\ndef evaluate(:\n")
    with pytest.raises(BadInput, match=r"has no function 'score' \(spec.verification.custom.function\)"):
        _load(tmp_path, "def evaluate(outputs, data):\n    return 1.0\n", function="score")


@pytest.mark.parametrize("verification, data, field", [
    ({"metric": "custom"}, None, "spec.verification.custom"),
    ({"metric": "top1", "custom": {"code": CODE}}, None, "spec.verification.custom"),
    ({"metric": "custom", "custom": {"code": CODE}}, "imageList", "spec.data.evaluation.format"),
    ({"metric": "custom", "custom": {"code": "http://b/metric.py"}}, None, "spec.verification.custom.code"),
])
def test_custom_needs_its_metric_code_in_s3_and_an_npz_evaluation(verification, data, field):
    evaluation = VALID_SPEC["data"]["evaluation"] if data == "imageList" else {"uri": EVAL, "format": "npz"}
    with pytest.raises(SpecError) as ei:
        parse_spec({**VALID_SPEC, "data": {**VALID_SPEC["data"], "evaluation": evaluation}, "verification": verification})
    assert field in str(ei.value)
