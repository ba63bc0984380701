"""The typed QuantizationJob spec (kubeslim.io/v1alpha1), shared by the operator and the job image.

The CRD in crds/ is the source of truth for what the API server accepts; this model parses an
already-admitted spec (or a local manifest for `kubeslim-job run`) once, fills the same defaults,
and re-checks the cross-field rules so a manifest that never met the API server fails the same way.
tests/unit/test_crd.py keeps the two in step field for field.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_serializer, model_validator

from .camel import CamelModel

Algo = Literal["KL", "hist", "mse", "avg", "abs_max", "emd", "ptf"]     # paddleslim quant_post_static algos
DEFAULT_QUANTIZABLE_OP_TYPES = ["conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2"]

# Kubernetes' name syntax (apimachinery's validation), spelled exactly as in the CRD's patterns
# and CEL rules, so a spec that never met the API server fails the same way.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUALIFIED_NAME = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
EXTENDED_RESOURCE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CONFIG_KEY = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"      # a Secret/ConfigMap key: not ".", "..", "..x"
INT32_MAX = 2**31 - 1
MAX_QUALIFIED_NAME = 253 + 1 + 63
MAX_POD_ANNOTATIONS = 255 * 1024       # a pod's 256 KiB, less room for the operator's own annotation


def _or_empty(pattern: str) -> str:
    return f"^({pattern[1:-1]})?$"


QualifiedName = Annotated[str, StringConstraints(max_length=MAX_QUALIFIED_NAME, pattern=QUALIFIED_NAME)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]
Labels = dict[QualifiedName, LabelValue]


class SpecError(ValueError):
    """A spec that cannot run. `field` is the dotted path in the CR (e.g. spec.model.builtin.weights)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Camel(CamelModel):
    # An unknown field is a typo in a manifest that never met the API server: reject it, naming it.
    # Frozen: a parsed spec is a value, read by every stage and handler and changed by none.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://") and len(uri) > len("s3://") and not uri[len("s3://"):].startswith("/")


class InferenceModel(_Camel):
    uri: str
    model_file: str = "model.pdmodel"
    params_file: str = "model.pdiparams"


class BuiltinModel(_Camel):
    architecture: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    weights: str | None = None
    num_classes: int = Field(1000, ge=1)


class CustomModel(_Camel):
    code: str | None = None
    module: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    factory: str = Field("build_model", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None


# Paddle's feed dtypes a model input may declare (paddle.static.data / InputSpec).
InputDtype = Literal["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"]
DYNAMIC = -1      # a dimension the model leaves open (Paddle's -1 / None)


class ModelInput(_Camel):
    """One named model input: a feed variable of the static program. `shape` is per sample (the
    batch dimension is always dynamic and left out), -1 where the model accepts any size."""
    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(max_length=8)
    dtype: InputDtype = "float32"

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d != DYNAMIC and d < 1 for d in value):
            raise ValueError("dimensions must be positive, or -1 for a dynamic one (the batch dimension is left out)")
        return value


class ModelSpec(_Camel):
    inference: InferenceModel | None = None
    builtin: BuiltinModel | None = None
    custom: CustomModel | None = None
    input_shape: list[int] | None = None
    inputs: list[ModelInput] | None = Field(None, min_length=1, max_length=32)

    @property
    def source(self) -> Literal["inference", "builtin", "custom"]:
        for name in ("inference", "builtin", "custom"):
            if getattr(self, name) is not None:
                return name  # type: ignore[return-value]
        raise SpecError("spec.model", "set exactly one of inference, builtin or custom")


class DatasetSpec(_Camel):
    uri: str
    format: Literal["imageList", "npz", "imagePrefix"] = "imageList"
    list_file: str | None = None


class CalibrationData(DatasetSpec):
    samples: int | None = Field(None, ge=1)


class EvaluationData(DatasetSpec):
    limit: int | None = Field(None, ge=1)


class Preprocess(_Camel):
    resize_short: int = Field(256, ge=1)
    crop: int = Field(224, ge=1)
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    channel_order: Literal["RGB", "BGR"] = "RGB"

    @model_serializer(mode="wrap")
    def _only_fields_set(self, handler):
        # Whether the user set a field decides whether it is checked against a model whose data is
        # not preprocessed (data.Prep); the operator passes the spec to the pod as a dump, so the
        # dump must keep "unset" unset rather than write the defaults in.
        out = handler(self)
        keep = self.model_fields_set | {type(self).model_fields[n].alias for n in self.model_fields_set}
        return {k: v for k, v in out.items() if k in keep}


class DataSpec(_Camel):
    calibration: CalibrationData
    evaluation: EvaluationData
    preprocess: Preprocess = Field(default_factory=Preprocess)


FallbackMode = Literal["onGateFailure", "always", "off"]


class AccuracyControl(_Camel):
    """Accuracy-aware quantization: rank the quantized layers by what each alone costs and keep the
    most sensitive in fp32, re-calibrating and re-verifying on the int8 backend, within a budget."""
    mode: FallbackMode = "onGateFailure"
    max_fp32_layers: int = Field(8, ge=1, le=64)
    max_seconds: int = Field(1800, ge=1)
    ranking_samples: int = Field(256, ge=1)


class QuantizationSpec(_Camel):
    algos: list[Algo] = Field(default_factory=lambda: ["hist"], min_length=1)
    batch_size: int = Field(32, ge=1)
    batch_nums: int = Field(10, ge=1)
    hist_percent: float = Field(0.9999, gt=0, le=1)
    bias_correction: bool = False
    round_type: Literal["round", "adaround"] = "round"
    weight_bits: int = Field(8, ge=2, le=16)
    activation_bits: int = Field(8, ge=2, le=16)
    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = "channel_wise_abs_max"
    activation_quantize_type: Literal["range_abs_max", "moving_average_abs_max", "abs_max"] = "range_abs_max"
    quantizable_op_types: list[str] = Field(default_factory=lambda: list(DEFAULT_QUANTIZABLE_OP_TYPES), min_length=1)
    skip_tensors: list[str] = Field(default_factory=list)
    onnx_format: bool = True
    accuracy_control: AccuracyControl = Field(default_factory=AccuracyControl)


Metric = Literal["top1", "top5", "agreement", "fidelity", "custom"]
CLASSIFIER_METRICS = ("top1", "top5", "agreement")     # read the first output as [N, classes] scores


class CustomMetric(_Camel):
    """Your own metric: `function(outputs, data) -> float` (higher is better) in a Python file
    from S3, called with one model's outputs on the evaluation set ({output name: array}) and the
    evaluation npz's arrays ({name: array}, labels or targets under any keys)."""
    code: str
    function: str = Field("evaluate", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class VerificationSpec(_Camel):
    # agreement: the fraction of evaluation images whose int8 top-1 class equals fp32's. It needs no
    # labels; the gate holds 1 - agreement (fp32 agrees with itself: 1.0) to maxAccuracyDrop.
    # fidelity: every output of int8 against fp32's (mean per-sample cosine); any model, no labels;
    # the gate holds the lowest output cosine to minCosine.
    # custom: verification.custom's function; the gate holds fp32 - int8 to maxAccuracyDrop.
    metric: Metric = "top1"
    max_accuracy_drop: float = Field(0.01, ge=0, le=1)
    min_cosine: float = Field(0.99, ge=0, le=1)
    custom: CustomMetric | None = None
    batch_size: int = Field(64, ge=1)
    backend: Literal["auto", "cpu", "gpu", "tensorrt"] = "auto"


# paddle2onnx 1.2.11 writes opsets 7..19; its dequantize_linear (the QDQ pairs of an int8 model)
# needs 13, where per-channel weight scales arrived.
ONNX_OPSETS = (13, 19)


class OnnxOutput(_Camel):
    enabled: bool = False
    opset_version: int = Field(ONNX_OPSETS[0], ge=ONNX_OPSETS[0], le=ONNX_OPSETS[1])
    max_accuracy_delta: float = Field(0.01, ge=0, le=1)


class OutputSpec(_Camel):
    uri: str
    onnx: OnnxOutput = Field(default_factory=OnnxOutput)


class CredentialsSecret(_Camel):
    name: str = Field(pattern=DNS_SUBDOMAIN)
    access_key_id_key: str = Field("AWS_ACCESS_KEY_ID", pattern=CONFIG_KEY)
    secret_access_key_key: str = Field("AWS_SECRET_ACCESS_KEY", pattern=CONFIG_KEY)


# An IAM role ARN in any AWS partition (aws, aws-cn, aws-us-gov), IAM's own character set for the path and name.
ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"


class WebIdentity(_Camel):
    """Workload identity: the pod gets a projected ServiceAccount token of `audience` and boto3
    exchanges it for the role's credentials (AssumeRoleWithWebIdentity), as EKS IRSA does."""
    role_arn: str = Field(max_length=2048, pattern=ROLE_ARN)
    audience: str = Field("sts.amazonaws.com", min_length=1, max_length=253, pattern=r"^\S+$")


class StorageCredentials(_Camel):
    web_identity: WebIdentity


class CABundle(_Camel):
    config_map_name: str = Field(pattern=DNS_SUBDOMAIN)
    key: str = Field("ca.crt", pattern=CONFIG_KEY)


class StorageSpec(_Camel):
    endpoint: str | None = Field(None, pattern=r"^https?://[^\s/]+(/.*)?$")
    region: str = "us-east-1"
    credentials_secret: CredentialsSecret | None = None
    credentials: StorageCredentials | None = None
    ca_bundle: CABundle | None = None
    verify_tls: bool = Field(True, alias="verifyTLS")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"

    @model_validator(mode="after")
    def _one_credential_source(self) -> "StorageSpec":
        if self.credentials_secret is not None and self.credentials is not None:
            raise ValueError("set spec.storage.credentialsSecret (static keys) or spec.storage.credentials.webIdentity "
                             "(a role for the pod's ServiceAccount token), not both")
        return self


class ResourcesSpec(_Camel):
    gpu: int = Field(1, ge=0)
    gpu_resource_name: str = Field("nvidia.com/gpu", pattern=EXTENDED_RESOURCE_NAME)
    cpu: str = Field("4", pattern=r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
    memory: str = Field("16Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu_number(cls, value: Any) -> Any:
        # The CRD takes int-or-string (cpu: 8); a pattern cannot apply to an int, so normalise first.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# core/v1 Toleration and Affinity, with the rules the API server applies to a pod (the CRD's CEL).

class Toleration(_Camel):
    key: str | None = Field(None, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME))
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63, pattern=LABEL_VALUE)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _pod_rules(self) -> "Toleration":
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds may be set only when effect is NoExecute")
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if not self.key and self.operator != "Exists":
            raise ValueError("operator must be Exists when key is empty (a toleration of every taint)")
        return self


def _values_fit_operator(operator: str, values: list[str] | None) -> None:
    n = len(values or [])
    if operator in ("In", "NotIn") and n == 0:
        raise ValueError("values must be non-empty when operator is In or NotIn")
    if operator in ("Exists", "DoesNotExist") and n:
        raise ValueError("values must be empty when operator is Exists or DoesNotExist")
    if operator in ("Gt", "Lt") and not (n == 1 and re.fullmatch(r"-?[0-9]+", values[0])):
        raise ValueError("values must be a single integer when operator is Gt or Lt")


class NodeSelectorRequirement(_Camel):
    key: str = Field(min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME))
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = None

    @model_validator(mode="after")
    def _values(self) -> "NodeSelectorRequirement":
        _values_fit_operator(self.operator, self.values)
        return self


class NodeFieldRequirement(_Camel):
    key: Literal["metadata.name"]
    operator: Literal["In", "NotIn"]
    values: list[Annotated[str, StringConstraints(max_length=253)]] | None = None

    @model_validator(mode="after")
    def _one_value(self) -> "NodeFieldRequirement":
        if len(self.values or []) != 1:
            raise ValueError("values must hold exactly one node name")
        return self


class NodeSelectorTerm(_Camel):
    match_expressions: list[NodeSelectorRequirement] | None = Field(None, max_length=32)
    match_fields: list[NodeFieldRequirement] | None = Field(None, max_length=32)


class NodeSelector(_Camel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=32)


class PreferredSchedulingTerm(_Camel):
    weight: int = Field(ge=1, le=100)
    preference: NodeSelectorTerm


class NodeAffinity(_Camel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(None, max_length=32)


class LabelSelectorRequirement(_Camel):
    key: str = Field(min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME))
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = None

    @model_validator(mode="after")
    def _values(self) -> "LabelSelectorRequirement":
        _values_fit_operator(self.operator, self.values)
        return self


class LabelSelector(_Camel):
    match_labels: Labels | None = Field(None, max_length=64)
    match_expressions: list[LabelSelectorRequirement] | None = Field(None, max_length=32)


LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME))]


class PodAffinityTerm(_Camel):
    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL)]] | None = None
    topology_key: str = Field(min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME))
    match_label_keys: list[LabelKey] | None = None
    mismatch_label_keys: list[LabelKey] | None = None

    @model_validator(mode="after")
    def _keys_need_a_selector(self) -> "PodAffinityTerm":
        if self.label_selector is None and (self.match_label_keys or self.mismatch_label_keys):
            raise ValueError("labelSelector is required when matchLabelKeys or mismatchLabelKeys is set")
        return self


class WeightedPodAffinityTerm(_Camel):
    weight: int = Field(ge=1, le=100)
    pod_affinity_term: PodAffinityTerm


class PodAffinity(_Camel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(None, max_length=32)
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(None, max_length=32)


class Affinity(_Camel):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


class SchedulingSpec(_Camel):
    node_selector: Labels = Field(default_factory=dict, max_length=64)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    affinity: Affinity = Field(default_factory=Affinity)
    priority_class_name: str = Field("", max_length=253, pattern=_or_empty(DNS_SUBDOMAIN))
    runtime_class_name: str = Field("", max_length=253, pattern=_or_empty(DNS_SUBDOMAIN))
    queue_name: str = Field("", max_length=63, pattern=LABEL_VALUE)


class PodMetadata(_Camel):
    labels: Labels = Field(default_factory=dict, max_length=64)
    annotations: dict[QualifiedName, str] = Field(default_factory=dict, max_length=64)

    @field_validator("annotations")
    @classmethod
    def _pod_annotation_limit(cls, value: dict[str, str]) -> dict[str, str]:
        if sum(len(k) + len(v) for k, v in value.items()) > MAX_POD_ANNOTATIONS:
            raise ValueError("annotations may hold at most 255 KiB of keys and values (a pod's limit is 256 KiB, the operator adds its own)")
        return value


class RunPolicy(_Camel):
    backoff_limit: int = Field(1, ge=0)
    active_deadline_seconds: int | None = Field(7200, ge=1)
    ttl_seconds_after_finished: int | None = Field(86400, ge=0, le=INT32_MAX)


class QuantizationJobSpec(_Camel):
    model: ModelSpec
    data: DataSpec
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    verification: VerificationSpec = Field(default_factory=VerificationSpec)
    output: OutputSpec
    storage: StorageSpec = Field(default_factory=StorageSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)
    run_policy: RunPolicy = Field(default_factory=RunPolicy)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "QuantizationJobSpec":
        # The same rules as the CRD's CEL, for manifests that never met the API server.
        sources = [n for n in ("inference", "builtin", "custom") if getattr(self.model, n) is not None]
        if len(sources) != 1:
            raise SpecError("spec.model", f"set exactly one of inference, builtin or custom (found: {', '.join(sources) or 'none'})")
        if self.model.input_shape is not None and self.model.inputs is not None:
            raise SpecError("spec.model.inputs", "set either inputShape (one image input, C, H, W) or inputs (named "
                                                 "inputs), not both")
        if sources[0] != "inference" and not self.model.input_shape and not self.model.inputs:
            raise SpecError("spec.model.inputShape", "required unless spec.model.inference is used, e.g. [3, 224, 224] "
                                                     "(or spec.model.inputs for a model with named or several inputs)")
        if self.model.inputs is not None:
            names = [i.name for i in self.model.inputs]
            if len(set(names)) != len(names):
                raise SpecError("spec.model.inputs", f"names an input twice ({', '.join(names)})")
        if self.model.input_shape is not None and (len(self.model.input_shape) != 3 or min(self.model.input_shape) < 1):
            raise SpecError("spec.model.inputShape", "must be three positive integers C, H, W, e.g. [3, 224, 224]")
        if self.model.custom is not None and (self.model.custom.code is None) == (self.model.custom.module is None):
            raise SpecError("spec.model.custom", "set exactly one of code (an s3:// Python file) or module (a module in the image)")
        for field, uri in self.s3_uris().items():
            if not _is_s3_uri(uri):
                raise SpecError(field, f"must be an s3://bucket/key URI, got {uri!r}")
        for name in ("calibration", "evaluation"):
            ds: DatasetSpec = getattr(self.data, name)
            if ds.format == "imageList" and not ds.list_file:
                raise SpecError(f"spec.data.{name}.listFile", "required when format is imageList (lines 'relative/path.jpg label')")
            if ds.format == "imagePrefix" and self.needs_labels(name):
                raise SpecError(f"spec.data.{name}.format", f"imagePrefix has no labels and {name} needs them; use "
                                                            "imageList ('relative/path.jpg label' lines) or npz with labels, "
                                                            "or spec.verification.metric agreement or fidelity")
        v = self.verification
        if (v.metric == "custom") != (v.custom is not None):
            raise SpecError("spec.verification.custom", "set custom (code, function) exactly when metric is custom")
        if v.custom is not None and self.data.evaluation.format != "npz":
            raise SpecError("spec.data.evaluation.format", "must be npz for spec.verification.custom: the metric function "
                                                           "gets the evaluation npz's arrays (labels, targets)")
        pp = self.data.preprocess
        if len(pp.mean) != len(pp.std):
            raise SpecError("spec.data.preprocess.std", "must have as many entries as mean")
        if any(s <= 0 for s in pp.std):
            raise SpecError("spec.data.preprocess.std", "entries must be > 0")
        if len(set(self.quantization.algos)) != len(self.quantization.algos):
            raise SpecError("spec.quantization.algos", "lists an algo twice")
        return self

    def s3_uris(self) -> dict[str, str]:
        """Every S3 URI in the spec, keyed by its field path."""
        uris = {
            "spec.data.calibration.uri": self.data.calibration.uri,
            "spec.data.evaluation.uri": self.data.evaluation.uri,
            "spec.output.uri": self.output.uri,
        }
        m = self.model
        if m.inference:
            uris["spec.model.inference.uri"] = m.inference.uri
        if m.builtin and m.builtin.weights:
            uris["spec.model.builtin.weights"] = m.builtin.weights
        if m.custom:
            if m.custom.code:
                uris["spec.model.custom.code"] = m.custom.code
            if m.custom.weights:
                uris["spec.model.custom.weights"] = m.custom.weights
        if self.verification.custom:
            uris["spec.verification.custom.code"] = self.verification.custom.code
        return uris

    def needs_labels(self, dataset: Literal["calibration", "evaluation"]) -> bool:
        """Whether a dataset's labels are read (and so required): the one place that decides it.
        Calibration only feeds images; evaluation scores top1/top5 against the labels, but the
        agreement and fidelity metrics compare int8 with fp32 and read none."""
        return dataset == "evaluation" and self.verification.metric in ("top1", "top5")

    @property
    def calibration_samples(self) -> int:
        return self.data.calibration.samples or self.quantization.batch_size * self.quantization.batch_nums


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = ["spec"]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(to_camel(str(item)) if "_" in str(item) else str(item))
    return ".".join(parts)


def parse_spec(raw: dict[str, Any]) -> QuantizationJobSpec:
    """Parse a CR's `spec` mapping; every failure is a SpecError naming the field."""
    try:
        return QuantizationJobSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, SpecError):
            raise ctx_err from None
        raise SpecError(_field_path(tuple(err["loc"])), err["msg"]) from None


def parse_manifest(doc: dict[str, Any]) -> tuple[dict[str, Any], QuantizationJobSpec]:
    """A whole QuantizationJob manifest (as `kubeslim-job run -f` reads it): (metadata, spec)."""
    if doc.get("kind") != "QuantizationJob":
        raise SpecError("kind", f"expected QuantizationJob, got {doc.get('kind')!r}")
    if "spec" not in doc:
        raise SpecError("spec", "missing")
    return doc.get("metadata") or {}, parse_spec(doc["spec"])
