"""One table of invalid QuantizationJob specs, checked against both gates: the API server
(CRD schema + CEL, tests/cluster/test_crd_validation.py) and the typed model that `kubeslim-job run`
uses without a cluster (tests/unit/test_spec.py; all but API_SERVER_ONLY). Each case names the field the error must name."""
from __future__ import annotations

import copy
from typing import Any, Callable

from kubeslim_dev.manifests import set_path

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


_NODE_TERMS = "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"


def _node_affinity(requirement: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [requirement]}]}}}


# (case id, mutation of VALID_SPEC, text the error must contain: the field path)
INVALID_SPECS: list[tuple[str, Callable[[dict], None], str]] = [
    ("no-model-source", _delete("model.builtin"), "spec.model"),
    ("two-model-sources", _set("model.inference", {"uri": "s3://models/fp32/"}), "spec.model"),
    ("input-shape-missing", _delete("model.inputShape"), "spec.model.inputShape"),
    ("input-shape-two-dims", _set("model.inputShape", [28, 28]), "spec.model.inputShape"),
    ("input-shape-zero", _set("model.inputShape", [1, 0, 28]), "spec.model.inputShape"),
    ("input-shape-and-inputs", _set("model.inputs", [{"name": "image", "shape": [1, 28, 28]}]), "spec.model.inputs"),
    ("inputs-name-twice", lambda s: (s["model"].pop("inputShape"), s["model"].update(inputs=[
        {"name": "x", "shape": [1, 28, 28]}, {"name": "x", "shape": [2]}])), "spec.model.inputs"),
    ("inputs-dimension-zero", lambda s: (s["model"].pop("inputShape"), s["model"].update(inputs=[
        {"name": "x", "shape": [1, 0, 28]}])), "spec.model.inputs[0].shape"),
    ("inputs-dtype-unknown", lambda s: (s["model"].pop("inputShape"), s["model"].update(inputs=[
        {"name": "ids", "shape": [128], "dtype": "long"}])), "spec.model.inputs[0].dtype"),
    ("min-cosine-above-one", _set("verification.minCosine", 1.5), "spec.verification.minCosine"),
    ("custom-metric-without-its-function", _set("verification.metric", "custom"), "spec.verification.custom"),
    ("custom-metric-on-image-list-evaluation", _set("verification", {"metric": "custom", "custom": {"code": "s3://m/metric.py"}}),
     "spec.data.evaluation.format"),
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
    # What the API server would refuse in the Job the operator builds (issue 10's reproductions):
    # the CRD refuses it first, naming the QuantizationJob's field.
    ("toleration-seconds-without-no-execute", _set("scheduling.tolerations", [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}]),
     "spec.scheduling.tolerations[0]"),
    ("toleration-empty-key-with-equal", _set("scheduling.tolerations", [{"operator": "Equal", "value": "x"}]),
     "spec.scheduling.tolerations[0]"),
    ("toleration-exists-with-value", _set("scheduling.tolerations", [{"key": "k", "operator": "Exists", "value": "x"}]),
     "spec.scheduling.tolerations[0]"),
    ("toleration-operator-unknown", _set("scheduling.tolerations", [{"key": "k", "operator": "In"}]),
     "spec.scheduling.tolerations[0].operator"),
    ("affinity-operator-unknown", _set("scheduling.affinity", _node_affinity({"key": "gpu", "operator": "Equals", "values": ["a100"]})),
     f"{_NODE_TERMS}[0].matchExpressions[0].operator"),
    ("affinity-in-without-values", _set("scheduling.affinity", _node_affinity({"key": "gpu", "operator": "In", "values": []})),
     f"{_NODE_TERMS}[0].matchExpressions[0]"),
    ("affinity-exists-with-values", _set("scheduling.affinity", _node_affinity({"key": "gpu", "operator": "Exists", "values": ["x"]})),
     f"{_NODE_TERMS}[0].matchExpressions[0]"),
    ("affinity-gt-not-an-integer", _set("scheduling.affinity", _node_affinity({"key": "gpus", "operator": "Gt", "values": ["many"]})),
     f"{_NODE_TERMS}[0].matchExpressions[0]"),
    ("affinity-no-node-selector-terms", _set("scheduling.affinity", {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}), _NODE_TERMS),
    ("affinity-match-field-not-name", _set("scheduling.affinity", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "spec.unschedulable", "operator": "In", "values": ["x"]}]}]}}}),
     f"{_NODE_TERMS}[0].matchFields[0].key"),
    ("pod-affinity-empty-topology-key", _set("scheduling.affinity", {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": ""}]}}),
     "spec.scheduling.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"),
    ("pod-affinity-weight-zero", _set("scheduling.affinity", {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 0, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}}),
     "spec.scheduling.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight"),
    ("pod-affinity-selector-key-invalid", _set("scheduling.affinity", {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"-app": "x"}}, "topologyKey": "kubernetes.io/hostname"}]}}),
     "spec.scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchLabels"),
    ("node-selector-key-with-space", _set("scheduling.nodeSelector", {"has space": "x"}), "spec.scheduling.nodeSelector"),
    ("node-selector-value-too-long", _set("scheduling.nodeSelector", {"pool": "x" * 64}), "spec.scheduling.nodeSelector"),
    ("label-key-two-slashes", _set("podMetadata.labels", {"a/b/c": "x"}), "spec.podMetadata.labels"),
    ("label-value-leading-dash", _set("podMetadata.labels", {"team": "-lead"}), "spec.podMetadata.labels"),
    ("annotation-key-empty-prefix", _set("podMetadata.annotations", {"/x": "y"}), "spec.podMetadata.annotations"),
    ("annotations-over-a-pods-limit", _set("podMetadata.annotations", {"notes": "x" * 256 * 1024}), "spec.podMetadata.annotations"),
    ("priority-class-upper-case", _set("scheduling.priorityClassName", "UPPER"), "spec.scheduling.priorityClassName"),
    ("runtime-class-double-dot", _set("scheduling.runtimeClassName", "a..b"), "spec.scheduling.runtimeClassName"),
    ("queue-name-with-space", _set("scheduling.queueName", "a b"), "spec.scheduling.queueName"),
    ("secret-key-with-slash", _set("storage.credentialsSecret", {"name": "s3", "accessKeyIdKey": "a/b"}),
     "spec.storage.credentialsSecret.accessKeyIdKey"),
    ("secret-name-double-dot", _set("storage.credentialsSecret", {"name": "s3..creds"}), "spec.storage.credentialsSecret.name"),
    ("ca-key-dot-dot", _set("storage.caBundle", {"configMapName": "ca", "key": ".."}), "spec.storage.caBundle.key"),
    ("web-identity-without-role", _set("storage.credentials", {"webIdentity": {}}), "spec.storage.credentials.webIdentity.roleArn"),
    ("web-identity-role-not-an-arn", _set("storage.credentials", {"webIdentity": {"roleArn": "quantize"}}),
     "spec.storage.credentials.webIdentity.roleArn"),
    ("web-identity-empty-audience", _set("storage.credentials", {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/q",
                                                                              "audience": ""}}),
     "spec.storage.credentials.webIdentity.audience"),
    ("web-identity-and-secret", _set("storage", {"credentialsSecret": {"name": "s3"},
                                                 "credentials": {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/q"}}}),
     "not both"),
    ("gpu-resource-name-part-too-long", _set("resources.gpuResourceName", "nvidia.com/" + "g" * 64), "spec.resources.gpuResourceName"),
    ("gpu-resource-name-without-domain", _set("resources.gpuResourceName", "gpu"), "spec.resources.gpuResourceName"),
    ("ttl-beyond-int32", _set("runPolicy.ttlSecondsAfterFinished", 2147483648), "spec.runPolicy.ttlSecondsAfterFinished"),
]

# Cases only the API server refuses (the CRD's CEL rules from core/v1 pod validation): they concern
# the pod the operator builds, and the operator parses only specs the API server admitted, so the
# typed model does not repeat them (kubeslim_api/spec.py says why).
API_SERVER_ONLY = {
    "toleration-seconds-without-no-execute", "toleration-empty-key-with-equal", "toleration-exists-with-value",
    "affinity-in-without-values", "affinity-exists-with-values", "affinity-gt-not-an-integer", "annotations-over-a-pods-limit",
}
assert API_SERVER_ONLY <= {case_id for case_id, _, _ in INVALID_SPECS}, "API_SERVER_ONLY names a case that is gone"
MODEL_CHECKED_SPECS = [case for case in INVALID_SPECS if case[0] not in API_SERVER_ONLY]


def invalid_spec(mutate: Callable[[dict], None]) -> dict[str, Any]:
    spec = copy.deepcopy(VALID_SPEC)
    mutate(spec)
    return spec
