"""One table of invalid QuantizationJob specs, checked against both gates: the API server
(CRD schema + CEL, tests/cluster/test_crd_validation.py) and the typed model that `kubeslim-job run`
uses without a cluster (tests/unit/test_spec.py). Each case names the field the error must name."""
from __future__ import annotations

import copy
from typing import Any, Callable

from tests.manifests import set_path

VALID_SPEC: dict[str, Any] = {
    "model": {"builtin": {"architecture": "lenet", "numClasses": 10}, "inputShape": [1, 28, 28]},
    "data": {
        "calibration": {"uri": "s3://datasets/digits/train.npz", "format": "npz"},
        "evaluation": {"uri": "s3://datasets/digits/val/", "format": "imageList", "listFile": "val_list.txt"},
    },
    "output": {"uri": "s3://models/digits/int8/"},
}


def _set(path: str, value: Any) -> Callable[[dict], None]:
    return lambda spec: set_path(spec, path, value)


def _delete(path: str) -> Callable[[dict], None]:
    def apply(spec: dict) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for p in parents:
            node = node[p]
        del node[leaf]
    return apply


# (case id, mutation of VALID_SPEC, text the error must contain: the field path)
INVALID_SPECS: list[tuple[str, Callable[[dict], None], str]] = [
    ("no-model-source", _delete("model.builtin"), "spec.model"),
    ("two-model-sources", _set("model.inference", {"uri": "s3://models/fp32/"}), "spec.model"),
    ("input-shape-missing", _delete("model.inputShape"), "spec.model.inputShape"),
    ("input-shape-two-dims", _set("model.inputShape", [28, 28]), "spec.model.inputShape"),
    ("input-shape-zero", _set("model.inputShape", [1, 0, 28]), "spec.model.inputShape"),
    ("image-list-without-list-file", _delete("data.evaluation.listFile"), "listFile"),
    ("calibration-uri-not-s3", _set("data.calibration.uri", "http://datasets/digits.npz"), "spec.data.calibration.uri"),
    ("output-uri-no-bucket", _set("output.uri", "s3://"), "spec.output.uri"),
    ("builtin-weights-local-file", _set("model.builtin.weights", "file:///tmp/w.pdparams"), "spec.model.builtin.weights"),
    ("algos-empty", _set("quantization.algos", []), "spec.quantization.algos"),
    ("algo-min-max-not-offered", _set("quantization.algos", ["min_max"]), "spec.quantization.algos"),
    ("algo-unknown", _set("quantization.algos", ["hist", "kl"]), "spec.quantization.algos"),
    ("algo-twice", _set("quantization.algos", ["hist", "hist"]), "spec.quantization.algos"),
    ("max-drop-above-one", _set("verification.maxAccuracyDrop", 1.5), "spec.verification.maxAccuracyDrop"),
    ("max-drop-negative", _set("verification.maxAccuracyDrop", -0.01), "spec.verification.maxAccuracyDrop"),
    ("metric-unknown", _set("verification.metric", "top3"), "spec.verification.metric"),
    ("data-format-unknown", _set("data.calibration.format", "csv"), "spec.data.calibration.format"),
    ("batch-size-zero", _set("quantization.batchSize", 0), "spec.quantization.batchSize"),
    ("custom-code-and-module", lambda s: (s["model"].pop("builtin"), s["model"].update(custom={"code": "s3://models/net.py", "module": "nets.mobile"})), "spec.model.custom"),
    ("mean-std-length-mismatch", _set("data.preprocess", {"mean": [0.5], "std": [0.2, 0.2]}), "spec.data.preprocess"),
    ("std-zero", _set("data.preprocess", {"mean": [0.5], "std": [0.0]}), "spec.data.preprocess.std"),
    ("std-against-default-mean", _set("data.preprocess", {"std": [0.5]}), "spec.data.preprocess"),
    ("evaluation-image-prefix-has-no-labels", _set("data.evaluation", {"uri": "s3://datasets/val/", "format": "imagePrefix"}),
     "spec.data.evaluation"),
    ("endpoint-without-scheme", _set("storage.endpoint", "minio.storage:9000"), "spec.storage.endpoint"),
    ("memory-not-a-quantity", _set("resources.memory", "lots"), "spec.resources.memory"),
    ("credentials-secret-without-name", _set("storage.credentialsSecret", {"accessKeyIdKey": "id"}), "spec.storage.credentialsSecret.name"),
    ("backend-unknown", _set("verification.backend", "tpu"), "spec.verification.backend"),
]


def invalid_spec(mutate: Callable[[dict], None]) -> dict[str, Any]:
    spec = copy.deepcopy(VALID_SPEC)
    mutate(spec)
    return spec
