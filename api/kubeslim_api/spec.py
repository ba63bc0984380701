"""The typed QuantizationJob spec (kubeslim.io/v1alpha1), shared by the operator and the job image,
and the one source of the CRD's spec schema.

`make generate` (kubeslim_api.crdgen) writes crds/ and the chart's copy from these models: types,
Literal enums, required fields, Field bounds and patterns become the structural schema, so pydantic
and the API server enforce them alike; what only the API server reads (description, CEL rules under
x-kubernetes-validations, list/map types, format) rides along as json_schema_extra. Adding a field
is one edit here plus `make generate`; tests/unit/test_crd.py fails while the committed CRD differs.

Python validators stay only where the API server's copy of a rule cannot serve: the cross-field
rules the job needs when it runs a local manifest no API server saw (`kubeslim-job run -f`), each
the twin of the CEL rule attached beside it (tests/invalid_specs.py runs one table against both).
The core/v1 rules on tolerations, affinity and pod annotations are CEL only: they concern the pod
the operator builds, and the operator only ever parses specs the API server admitted. Checked by one
side alone, on purpose: an S3 URI's bucket name (CEL only; pydantic wants just s3://bucket/key, as
S3-compatible stores take names AWS refuses) and a map key's length (neither: the CEL rule checks the
key's pattern, and the API server refuses a longer label key on the pod). An input named twice and an
algo listed twice are Python checks whose server side is the list-type map/set, not CEL.
"""
from __future__ import annotations

import copy

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_serializer, model_validator
from pydantic.alias_generators import to_camel

from .camel import CamelModel

Algo = Literal["KL", "hist", "mse", "avg", "abs_max", "emd", "ptf"]     # paddleslim quant_post_static algos
DEFAULT_QUANTIZABLE_OP_TYPES = ["conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2"]

# Markers for kubeslim_api.crdgen in json_schema_extra (x-kubeslim-*: read by the generator, never
# written to the CRD).
# NO_SERVER_DEFAULT: the Python default is not written into the CRD, so the API server leaves the
# field out (preprocess: the job must tell a field the user set from one left out; empty lists and
# maps would only add noise to every stored object).
NO_SERVER_DEFAULT = {"x-kubeslim-server-default": False}
# On a map's key type: the message of the CEL rule that checks every key against the key's pattern
# (a structural schema cannot constrain property names).
KEY_RULE_MESSAGE = "x-kubeslim-key-rule-message"

# Kubernetes' name syntax (apimachinery's validation), the patterns both pydantic and the CRD use.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUALIFIED_NAME = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
EXTENDED_RESOURCE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CONFIG_KEY = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"      # a Secret/ConfigMap key: not ".", "..", "..x"
# An s3://bucket/key URI: a bucket name of 3-63 lowercase letters, digits, dots and hyphens.
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
INT32_MAX = 2**31 - 1
MAX_QUALIFIED_NAME = 253 + 1 + 63
MAX_POD_ANNOTATIONS = 255 * 1024       # a pod's 256 KiB, less room for the operator's own annotation


def _or_empty(pattern: str) -> str:
    return f"^({pattern[1:-1]})?$"


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry; field_path points the API server's error at a child."""
    return {"rule": rule, **({"fieldPath": field_path} if field_path else {}), "message": message}


def _crd(description: str | None = None, *rules: dict[str, str], **schema: Any) -> dict[str, Any]:
    """json_schema_extra of a model: its description (for list items, which have no field of their
    own to carry one), its CEL rules and other CRD-only keywords (x-kubernetes-map-type)."""
    return {**({"description": description} if description else {}),
            **({"x-kubernetes-validations": list(rules)} if rules else {}), **schema}


ATOMIC = {"x-kubernetes-list-type": "atomic"}      # replaced whole on apply, as core/v1 declares these lists


def _check_s3_uri(uri: str) -> str:
    # Looser than the CRD's S3_URI (any bucket name): the job needs only an s3://bucket/key to read
    # a local manifest's data, and S3-compatible stores accept names AWS refuses.
    if not (uri.startswith("s3://") and len(uri) > len("s3://") and not uri[len("s3://"):].startswith("/")):
        raise ValueError(f"must be an s3://bucket/key URI, got {uri!r}")
    return uri


# Every URI the job reads: pydantic checks the s3:// form, the API server also the bucket name.
S3Uri = Annotated[str, AfterValidator(_check_s3_uri), Field(max_length=1024, json_schema_extra={"x-kubernetes-validations": [
    _cel(f"self.matches('{S3_URI}')", "must be an s3://bucket/key URI (bucket: 3-63 lowercase letters, digits, dots, hyphens)")]})]
# Map keys: the pattern alone is the CRD's rule (the API server refuses a longer prefix when it
# creates the pod, which the operator reports naming the field).
QualifiedNameKey = Annotated[str, StringConstraints(pattern=QUALIFIED_NAME), Field(json_schema_extra={
    KEY_RULE_MESSAGE: "keys must be qualified names: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, "
                      "'-', '_' or '.', beginning and ending with a letter or digit"})]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]
Labels = dict[QualifiedNameKey, LabelValue]
# A label key in a list (matchLabelKeys), where it may not be empty.
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME)),
                     Field(description="A label key.")]


class SpecError(ValueError):
    """A spec that cannot run. `field` is the dotted path in the CR (e.g. spec.model.builtin.weights)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# pydantic reports the unknown fields of every level at once; a second pass is for safety only.
_MAX_UNKNOWN_PASSES = 3


class _Camel(CamelModel):
    # An unknown field is a typo in a manifest that never met the API server: reject it, naming it.
    # Frozen: a parsed spec is a value, read by every stage and handler and changed by none.
    model_config = ConfigDict(extra="forbid", frozen=True)


# The messages of rules that are both CEL (API server) and Python (_cross_field_rules); the CEL
# message starts with the field path the Python SpecError carries separately.
_ONE_SOURCE = "set exactly one of inference, builtin or custom"
_SHAPE_OR_INPUTS = "set either inputShape (one image input, C, H, W) or inputs (named inputs), not both"
_CODE_OR_MODULE = "set exactly one of code (an s3:// Python file) or module (a module in the job image)"
_CUSTOM_IFF_METRIC = "set custom (code, function) exactly when metric is custom"
_NPZ_FOR_CUSTOM = "must be npz for spec.verification.custom (the metric function gets the evaluation npz's arrays)"


class InferenceModel(_Camel):
    uri: S3Uri = Field(description="s3:// prefix that holds modelFile and paramsFile.")
    model_file: str = Field("model.pdmodel", description="Program file name under uri.", max_length=255)
    params_file: str = Field("model.pdiparams", description="Parameters file name under uri.", max_length=255)


class BuiltinModel(_Camel):
    architecture: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$", max_length=63,
        description="A paddle.vision.models constructor name, e.g. mobilenet_v3_small, resnet50, lenet.")
    weights: S3Uri | None = Field(
        None,
        description="s3:// object of a state dict (paddle.save). Without it the model is randomly initialised.")
    num_classes: int = Field(1000, ge=1, description="Classifier outputs.")


class CustomModel(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(None, _cel(
        "has(self.code) != has(self.module)", f"spec.model.custom: {_CODE_OR_MODULE}")))

    code: S3Uri | None = Field(None, description="s3:// object of a Python file fetched at run time.")
    module: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", max_length=255,
        description="Dotted module path importable in the job image.")
    factory: str = Field(
        "build_model", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=255,
        description="Callable in code/module returning a paddle.nn.Layer.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=NO_SERVER_DEFAULT,
        description="JSON object passed to the factory as keyword arguments.")
    weights: S3Uri | None = Field(None, description="s3:// object of a state dict loaded into the factory's model.")


# Paddle's feed dtypes a model input may declare (paddle.static.data / InputSpec).
InputDtype = Literal["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"]
DYNAMIC = -1      # a dimension the model leaves open (Paddle's -1 / None)


# Twin rules: the job exports and feeds the model at these shapes, also from a local manifest.
_DIMENSIONS = "dimensions must be positive, or -1 for a dynamic one (the batch dimension is left out)"


class ModelInput(_Camel):
    """One named model input: a feed variable of the static program. `shape` is per sample (the
    batch dimension is always dynamic and left out), -1 where the model accepts any size."""
    name: str = Field(
        min_length=1, max_length=256,
        description="The feed variable's name, e.g. image, scale_factor, input_ids.")
    shape: list[Annotated[int, Field(ge=DYNAMIC, le=1048576)]] = Field(
        max_length=8, json_schema_extra={"x-kubernetes-validations": [_cel("self.all(d, d == -1 || d >= 1)", _DIMENSIONS)]},
        description="The shape of one sample, without the batch dimension (always dynamic); -1 for a dimension the model "
                    "leaves open, e.g. [3, 48, -1] for a text recognizer of any width. Data is used at the shapes it has, "
                    "never resized to fit.")
    dtype: InputDtype = Field(
        "float32",
        description="The feed's data type; npz arrays must have this kind (integer or float) and are cast within it (int32 "
                    "ids to int64, float64 to float32).")

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d != DYNAMIC and d < 1 for d in value):
            raise ValueError(_DIMENSIONS)
        return value


class ModelSpec(_Camel):
    # Twins of QuantizationJobSpec._cross_field_rules (the job reads the model from a local manifest too).
    model_config = ConfigDict(json_schema_extra=_crd(
        None,
        _cel("[has(self.inference), has(self.builtin), has(self.custom)].filter(x, x).size() == 1", f"spec.model: {_ONE_SOURCE}"),
        _cel("has(self.inference) || has(self.inputShape) || has(self.inputs)",
             "spec.model.inputShape is required unless spec.model.inference is used, e.g. [3, 224, 224] (or spec.model.inputs "
             "for a model with named or several inputs)"),
        _cel("!(has(self.inputShape) && has(self.inputs))", f"spec.model.inputs: {_SHAPE_OR_INPUTS}", ".inputs")))

    inference: InferenceModel | None = Field(
        None,
        description="An already exported static inference model; the export stage only validates it.")
    builtin: BuiltinModel | None = Field(
        None,
        description="An architecture from paddle.vision.models, with weights saved by paddle.save(state_dict).")
    custom: CustomModel | None = Field(
        None,
        description="User code: a Python file from S3 (code) or a module in a custom job image (module).")
    input_shape: list[Annotated[int, Field(ge=1, le=8192)]] | None = Field(
        None, max_length=3, min_length=3,
        description="C, H, W of one input; the batch dimension is dynamic. Required unless inference.")
    inputs: list[ModelInput] | None = Field(
        None, min_length=1, max_length=32, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="The model's inputs by name, for a model with several inputs (a detector's image and scale_factor, a "
                    "transformer's input_ids and token_type_ids), a non-image input or dynamic dimensions. Read from the "
                    "model (its feed variables) when not given; when given, each must match one of the model's feeds. "
                    "builtin and custom models are exported with exactly these inputs. inputShape is the shorthand for one "
                    "float32 image input. Calibration and evaluation data in format npz hold one array per input name "
                    "(first axis = samples).")

    @property
    def source(self) -> Literal["inference", "builtin", "custom"]:
        for name in ("inference", "builtin", "custom"):
            if getattr(self, name) is not None:
                return name  # type: ignore[return-value]
        raise SpecError("spec.model", _ONE_SOURCE)


class DatasetSpec(_Camel):
    # Twin of _cross_field_rules' listFile check.
    model_config = ConfigDict(json_schema_extra=_crd(None, _cel(
        "self.format != 'imageList' || has(self.listFile)",
        "listFile is required when format is imageList (lines 'relative/path.jpg label', relative to uri)")))

    uri: S3Uri = Field(description="s3:// prefix (imageList, imagePrefix) or object (npz).")
    format: Literal["imageList", "npz", "imagePrefix"] = Field(
        "imageList",
        description="imageList: a list file of 'relative/path label' lines plus image files; npz: arrays images (N,C,H,W or N,H,W,C) "
                    "and labels; imagePrefix: every .jpg/.jpeg/.png object under the uri prefix, in key order, with no list file "
                    "and no labels (calibration only).")
    list_file: str | None = Field(None, max_length=1024, description="imageList only: the list file, relative to uri.")


class CalibrationData(DatasetSpec):
    samples: int | None = Field(
        None, ge=1,
        description="Images to fetch and use. Default: quantization.batchSize * quantization.batchNums.")


class EvaluationData(DatasetSpec):
    limit: int | None = Field(None, ge=1, description="Use at most this many images (default: all).")


class Preprocess(_Camel):
    # Twin of _cross_field_rules' mean/std check; each defaults to 3 entries in the job, not on the server.
    model_config = ConfigDict(json_schema_extra=_crd(None, _cel(
        "(has(self.mean) ? size(self.mean) : 3) == (has(self.std) ? size(self.std) : 3)",
        "spec.data.preprocess: mean and std must have the same number of entries (each defaults to 3)")))

    resize_short: int = Field(
        256, ge=1, json_schema_extra=NO_SERVER_DEFAULT,
        description="Resize so the short side has this many pixels. Default 256.")
    crop: int = Field(
        224, ge=1, json_schema_extra=NO_SERVER_DEFAULT,
        description="Center crop size (square); must equal the model's H and W. Default 224.")
    mean: list[float] = Field(
        default_factory=lambda: [0.485, 0.456, 0.406], max_length=4, min_length=1, json_schema_extra=NO_SERVER_DEFAULT,
        description="Per-channel mean of pixel values scaled to [0, 1]. Default [0.485, 0.456, 0.406].")
    std: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.229, 0.224, 0.225], max_length=4, min_length=1, json_schema_extra=NO_SERVER_DEFAULT,
        description="Per-channel standard deviation (> 0). Default [0.229, 0.224, 0.225].")
    channel_order: Literal["RGB", "BGR"] = Field(
        "RGB", json_schema_extra=NO_SERVER_DEFAULT,
        description="Channel order the model expects. Default RGB.")

    @model_serializer(mode="wrap")
    def _only_fields_set(self, handler):
        # Whether the user set a field decides whether it is checked against a model whose data is
        # not preprocessed (data.Prep); the operator passes the spec to the pod as a dump, so the
        # dump must keep "unset" unset rather than write the defaults in.
        out = handler(self)
        keep = self.model_fields_set | {type(self).model_fields[n].alias for n in self.model_fields_set}
        return {k: v for k, v in out.items() if k in keep}


class DataSpec(_Camel):
    calibration: CalibrationData = Field(
        description="Images used to calibrate activation ranges. Labels are never read: an npz needs no labels array and "
                    "imageList lines may be bare paths.")
    evaluation: EvaluationData = Field(
        description="Images for fp32 vs int8 accuracy and latency: labelled, unless verification.metric is agreement (then "
                    "imagePrefix, an npz without labels or bare-path list lines do).")
    preprocess: Preprocess = Field(
        default_factory=Preprocess, json_schema_extra=NO_SERVER_DEFAULT,
        description="How image files and integer npz pixels become model input. A field left out takes the ImageNet default"
                    " named in its description; the API server does not write the defaults in, so the job knows which "
                    "fields were set. Float npz tensors are model-ready and are not preprocessed: for them only the fields "
                    "set here are checked against the model.")


FallbackMode = Literal["onGateFailure", "always", "off"]


class AccuracyControl(_Camel):
    """Accuracy-aware quantization: rank the quantized layers by what each alone costs and keep the
    most sensitive in fp32, re-calibrating and re-verifying on the int8 backend, within a budget."""
    mode: FallbackMode = Field(
        "onGateFailure",
        description="onGateFailure: only when the best candidate fails the gate, stopping at the first step that passes; "
                    "always: also when it passes, measuring every step up to maxFp32Layers and choosing the fewest fp32 "
                    "layers that pass; off: never.")
    max_fp32_layers: int = Field(8, ge=1, le=64, description="The most layers kept in fp32 (each one costs int8 speed).")
    max_seconds: int = Field(
        1800, ge=1,
        description="Time budget for ranking and fallback steps; a step is not started past it. Ranking costs one "
                    "calibration per quantized layer where that fits a quarter of it, else about one from recorded "
                    "activations; a step costs one verification.")
    ranking_samples: int = Field(
        256, ge=1,
        description="Evaluation samples (the first ones) the layers are ranked on; labels are not needed for ranking.")


class QuantizationSpec(_Camel):
    algos: list[Algo] = Field(
        default_factory=lambda: ["hist"], min_length=1, max_length=7, json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Calibration algorithms to try: KL, hist, mse, avg, abs_max, emd, ptf.")
    parallelism: int = Field(
        1, ge=1, le=8, json_schema_extra={"format": "int32"},
        description="Pods calibrating algos at once. 1: the algos run one after the other in one pod. Above 1 with "
                    "several algos: an Indexed Job, one pod per algo (this many at a time) after one export, then a final "
                    "pod verifies every candidate, chooses as a sequential sweep does and uploads; each pod holds "
                    "spec.resources.")
    batch_size: int = Field(32, ge=1, le=4096, description="Calibration batch size.")
    batch_nums: int = Field(10, ge=1, le=100000, description="Calibration batches.")
    hist_percent: float = Field(0.9999, gt=0, le=1, description="Percentile for the hist algo.")
    bias_correction: bool = Field(False, description="Apply bias correction after quantization.")
    round_type: Literal["round", "adaround"] = Field("round", description="Weight rounding.")
    weight_bits: int = Field(8, ge=2, le=16, description="Bits for weights.")
    activation_bits: int = Field(8, ge=2, le=16, description="Bits for activations.")
    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = Field(
        "channel_wise_abs_max",
        description="Weight quantizer.")
    activation_quantize_type: Literal["range_abs_max", "moving_average_abs_max", "abs_max"] = Field(
        "range_abs_max",
        description="Activation quantizer.")
    quantizable_op_types: list[Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=lambda: list(DEFAULT_QUANTIZABLE_OP_TYPES), min_length=1, max_length=64,
        description="Paddle op types to quantize.")
    skip_tensors: list[Annotated[str, StringConstraints(max_length=255)]] = Field(
        default_factory=list, max_length=1024,
        description="Tensor names to leave in fp32.")
    onnx_format: bool = Field(
        True,
        description="quantize_linear/dequantize_linear ops with int8 weights (true) or fake-quant ops (false).")
    accuracy_control: AccuracyControl = Field(
        default_factory=AccuracyControl,
        description="Accuracy-aware quantization. When the best candidate misses the gate (mode onGateFailure), or always, "
                    "the quantized layers are ranked by how much each one alone changes the int8 model's top-1 predictions "
                    "on the first rankingSamples evaluation samples (on the int8 backend, or from recorded activations "
                    "where that does not fit the budget), then the most sensitive are kept in fp32 (the best candidate "
                    "with their weights back in fp32, re-verified on the whole evaluation set): 1, 2, 4, ... of them, then "
                    "a bisection for the fewest that pass (always: 1, 2, 3, ... up to maxFp32Layers), until the gate "
                    "passes or the budget runs out. The candidates table shows every step; status.results.fallback names "
                    "the fp32 layers and their latency cost.")
    speed_aware: Literal["auto", "off"] = Field(
        "auto",
        description="auto: after the choice (and any accuracy fallback) the quantized layers are grouped by kind and shape "
                    "(depthwise kxk, pointwise by input-channel band, fully connected, ...), the model with each group kept"
                    " in fp32 is timed against all-int8 on the serving backend (back-to-back pairs), and the groups "
                    "measured slower in int8 stay fp32 when the model with all of them is faster and still passes the gate;"
                    " status.results.speedAware lists the groups, the fp32 layers and the measured gain. off: every "
                    "quantizable layer int8, as chosen.")


Metric = Literal["top1", "top5", "agreement", "fidelity", "custom"]
CLASSIFIER_METRICS = ("top1", "top5", "agreement")     # read the first output as [N, classes] scores


class CustomMetric(_Camel):
    """Your own metric: `function(outputs, data) -> float` (higher is better) in a Python file
    from S3, called with one model's outputs on the evaluation set ({output name: array}) and the
    evaluation npz's arrays ({name: array}, labels or targets under any keys)."""
    code: S3Uri = Field(description="s3:// object of the Python file.")
    function: str = Field("evaluate", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The function's name in the file.")


class VerificationSpec(_Camel):
    # Twin of _cross_field_rules' metric/custom check.
    model_config = ConfigDict(json_schema_extra=_crd(None, _cel(
        "has(self.custom) == (has(self.metric) && self.metric == 'custom')", f"spec.verification.custom: {_CUSTOM_IFF_METRIC}",
        ".custom")))

    # agreement: the fraction of evaluation images whose int8 top-1 class equals fp32's. It needs no
    # labels; the gate holds 1 - agreement (fp32 agrees with itself: 1.0) to maxAccuracyDrop.
    # fidelity: every output of int8 against fp32's (mean per-sample cosine); any model, no labels;
    # the gate holds the lowest output cosine to minCosine.
    # custom: verification.custom's function; the gate holds fp32 - int8 to maxAccuracyDrop.
    metric: Metric = Field(
        "top1",
        description="What the gate and the best-candidate choice use. custom: the value of your own function "
                    "(spec.verification.custom), gated on fp32 - int8 <= maxAccuracyDrop. top1/top5: accuracy against the "
                    "evaluation labels. agreement: the fraction of evaluation images whose int8 top-1 class equals fp32's; "
                    "it reads no labels (evaluation data may be unlabelled, e.g. imagePrefix), and top1/top5 are then not "
                    "reported. These three read the model's first output as [N, classes] scores. fidelity: for any model "
                    "(detector, OCR, segmentation, transformer), every int8 output is compared with fp32's on the "
                    "evaluation inputs (mean per-sample cosine similarity, SQNR, max abs error; "
                    "status.results.int8.fidelity); the gate holds the lowest output cosine to minCosine; it reads no "
                    "labels. fidelity is reported with every metric.")
    max_accuracy_drop: float = Field(
        0.01, ge=0, le=1,
        description="Largest accepted fp32 - int8 drop in metric, as an absolute fraction (0.01 = one point). For agreement"
                    " (fp32 agrees with itself: 1.0) it is the largest accepted share of images whose top-1 class changes: "
                    "0.01 requires agreement >= 0.99.")
    min_cosine: float = Field(
        0.99, ge=0, le=1,
        description="metric fidelity: the lowest accepted cosine similarity of an int8 output with fp32's (mean over "
                    "evaluation samples; every comparable output must reach it). Ignored by the other metrics.")
    custom: CustomMetric | None = Field(
        None,
        description="Your own metric (metric custom), e.g. a detector's mAP or an OCR hmean: a Python file from S3 run in "
                    "the job pod; function(outputs, data) is called once per model (fp32 and each int8 candidate) with "
                    "outputs = {output name: array over the evaluation set} and data = {name: array} of the evaluation npz "
                    "(labels or targets under any keys), and returns a number, higher is better, that the choice, the gate "
                    "and status.results (custom) use. A function that raises or returns no number fails the run with reason"
                    " MetricError naming the file and line.")
    batch_size: int = Field(64, ge=1, le=4096, description="Inference batch size for accuracy and latency.")
    backend: Literal["auto", "cpu", "gpu", "tensorrt"] = Field(
        "auto",
        description="auto: TensorRT int8 on a GPU, oneDNN int8 on CPU.")


# paddle2onnx 1.2.11 writes opsets 7..19; its dequantize_linear (the QDQ pairs of an int8 model)
# needs 13, where per-channel weight scales arrived.
ONNX_OPSETS = (13, 19)


class OnnxOutput(_Camel):
    enabled: bool = Field(False, description="Export and verify model.onnx.")
    opset_version: int = Field(
        ONNX_OPSETS[0], ge=ONNX_OPSETS[0], le=ONNX_OPSETS[1],
        description="ONNX opset (13..19: the QDQ ops need 13; paddle2onnx 1.2 writes up to 19).")
    max_accuracy_delta: float = Field(
        0.01, ge=0, le=1,
        description="Largest accepted difference between the ONNX model's verification.metric under onnxruntime and the "
                    "Paddle int8 model's, as an absolute fraction; beyond it model.onnx is not uploaded.")


class OutputSpec(_Camel):
    uri: S3Uri = Field(description="s3:// prefix for the best int8 model, report.json, report.html and plots.")
    onnx: OnnxOutput = Field(
        default_factory=OnnxOutput,
        description="Also export the chosen int8 model to ONNX (QDQ) with paddle2onnx, check it with onnxruntime on the "
                    "evaluation set and upload it as model.onnx beside the Paddle files. A model paddle2onnx cannot "
                    "convert, or whose ONNX accuracy strays from Paddle's, gets the OnnxExported=False condition with the "
                    "reason; the run still succeeds.")


class CredentialsSecret(_Camel):
    name: str = Field(pattern=DNS_SUBDOMAIN, description="Secret name.", max_length=253)
    access_key_id_key: str = Field(
        "AWS_ACCESS_KEY_ID", pattern=CONFIG_KEY, max_length=253,
        description="Key of the access key id in the Secret (letters, digits, '-', '_', '.').")
    secret_access_key_key: str = Field(
        "AWS_SECRET_ACCESS_KEY", pattern=CONFIG_KEY, max_length=253,
        description="Key of the secret access key in the Secret (letters, digits, '-', '_', '.').")


# An IAM role ARN in any AWS partition (aws, aws-cn, aws-us-gov), IAM's own character set for the path and name.
ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"


class WebIdentity(_Camel):
    """Workload identity: the pod gets a projected ServiceAccount token of `audience` and boto3
    exchanges it for the role's credentials (AssumeRoleWithWebIdentity), as EKS IRSA does."""
    role_arn: str = Field(
        max_length=2048, pattern=ROLE_ARN,
        description="IAM role ARN, e.g. arn:aws:iam::123456789012:role/quantize; its trust policy must admit the job pods' "
                    "ServiceAccount.")
    audience: str = Field(
        "sts.amazonaws.com", min_length=1, max_length=253, pattern=r"^\S+$",
        description="Audience of the projected token; the chart's admission policy admits only job.webIdentityAudiences.")


class StorageCredentials(_Camel):
    web_identity: WebIdentity = Field(
        description="The role to assume with the job pod's ServiceAccount token (AssumeRoleWithWebIdentity; EKS IRSA and "
                    "compatible).")


# Twin rules: the job's storage client picks one source, also from a local manifest.
_ONE_CREDENTIAL_SOURCE = ("set spec.storage.credentialsSecret (static keys) or spec.storage.credentials.webIdentity "
                          "(a role for the pod's ServiceAccount token), not both")


class CABundle(_Camel):
    config_map_name: str = Field(pattern=DNS_SUBDOMAIN, description="ConfigMap name.", max_length=253)
    key: str = Field("ca.crt", pattern=CONFIG_KEY, description="Key of the PEM bundle in the ConfigMap.", max_length=253)


class StorageSpec(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(None, _cel(
        "!(has(self.credentialsSecret) && has(self.credentials))", _ONE_CREDENTIAL_SOURCE)))

    endpoint: str | None = Field(
        None, pattern=r"^https?://[^\s/]+(/.*)?$", max_length=1024,
        description="S3 endpoint URL, e.g. http://minio.storage:9000. Omit for AWS.")
    region: str = Field("us-east-1", description="S3 region.", max_length=63)
    credentials_secret: CredentialsSecret | None = Field(
        None,
        description="A Secret in this namespace with the access keys. Omit to use the pod's ambient identity (IRSA, "
                    "instance profile).")
    credentials: StorageCredentials | None = Field(
        None,
        description="Workload identity instead of a Secret: boto3 exchanges a projected ServiceAccount token for an IAM "
                    "role's credentials.")
    ca_bundle: CABundle | None = Field(
        None,
        description="A ConfigMap in this namespace with the CA that signed the endpoint's certificate.")
    verify_tls: bool = Field(True, alias="verifyTLS", description="Verify the endpoint's TLS certificate.")
    addressing_style: Literal["auto", "path", "virtual"] = Field("auto", description="S3 bucket addressing.")

    @model_validator(mode="after")
    def _one_credential_source(self) -> "StorageSpec":
        if self.credentials_secret is not None and self.credentials is not None:
            raise ValueError(_ONE_CREDENTIAL_SOURCE)
        return self


class ResourcesSpec(_Camel):
    gpu: int = Field(1, ge=0, le=16, description="GPUs (0 runs on CPU).")
    gpu_resource_name: str = Field(
        "nvidia.com/gpu", pattern=EXTENDED_RESOURCE_NAME, max_length=253,
        description="Extended resource name of the GPU: domain/name, the name at most 63 characters.")
    cpu: str = Field(
        "4", pattern=r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$", json_schema_extra={"x-kubernetes-int-or-string": True},
        description="CPU request and limit, e.g. 4 or 3500m.")
    memory: str = Field(
        "16Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="Memory request and limit, e.g. 16Gi.")

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu_number(cls, value: Any) -> Any:
        # The CRD takes int-or-string (cpu: 8); a pattern cannot apply to an int, so normalise first.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# core/v1 Toleration and Affinity with the rules the API server applies to a pod, as CEL only: they
# concern the pod the operator builds, and the operator parses only specs the API server admitted.

class Toleration(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(
        None,
        _cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "tolerationSeconds may be set only when effect is NoExecute", ".tolerationSeconds"),
        _cel("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
             "value must be empty when operator is Exists", ".value"),
        _cel("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
             "operator must be Exists when key is empty (a toleration of every taint)", ".operator")))

    key: str | None = Field(
        None, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME),
        description="Taint key; empty with operator Exists matches all taints.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, max_length=63, pattern=LABEL_VALUE, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = Field(
        None,
        description="Taint effect to match; empty matches all.")
    toleration_seconds: int | None = Field(
        None, json_schema_extra={"format": "int64"},
        description="NoExecute only: how long the pod stays bound.")


# The values rules of core/v1 NodeSelectorRequirement and metav1 LabelSelectorRequirement.
_VALUES_FOR_IN = _cel("!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
                      "values must be non-empty when operator is In or NotIn", ".values")
_NO_VALUES_FOR_EXISTS = _cel("!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
                             "values must be empty when operator is Exists or DoesNotExist", ".values")


class NodeSelectorRequirement(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(None, _VALUES_FOR_IN, _NO_VALUES_FOR_EXISTS, _cel(
        "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
        "values must be a single integer when operator is Gt or Lt", ".values")))

    key: str = Field(
        min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME),
        description="The node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="How the key relates to the values.")
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        None, json_schema_extra=ATOMIC,
        description="In/NotIn: one or more; Exists/DoesNotExist: none; Gt/Lt: one integer.")


class NodeFieldRequirement(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(None, _cel(
        "has(self.values) && size(self.values) == 1", "values must hold exactly one node name", ".values")))

    key: Literal["metadata.name"] = Field(description="The node field: metadata.name.")
    operator: Literal["In", "NotIn"] = Field(description="In or NotIn.")
    values: list[Annotated[str, StringConstraints(max_length=253)]] | None = Field(
        None, json_schema_extra=ATOMIC,
        description="Exactly one node name.")


class NodeSelectorTerm(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd("Requirements that are ANDed (core/v1 NodeSelectorTerm).",
                                                     **{"x-kubernetes-map-type": "atomic"}))

    match_expressions: list[NodeSelectorRequirement] | None = Field(
        None, max_length=32, json_schema_extra=ATOMIC,
        description="Requirements on node labels.")
    match_fields: list[NodeFieldRequirement] | None = Field(
        None, max_length=32, json_schema_extra=ATOMIC,
        description="Requirements on node fields (only metadata.name).")


class NodeSelector(_Camel):
    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=32, json_schema_extra=ATOMIC,
        description="The terms are ORed; at least one.")


class PreferredSchedulingTerm(_Camel):
    weight: int = Field(
        ge=1, le=100, json_schema_extra={"format": "int32"},
        description="1-100, added to a node's score when it matches.")
    preference: NodeSelectorTerm


class NodeAffinity(_Camel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None,
        description="Node selector terms, one of which a node must match (core/v1 NodeSelector).")
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(
        None, max_length=32, json_schema_extra=ATOMIC,
        description="Weighted node selector terms the scheduler prefers (core/v1 PreferredSchedulingTerm).")


class LabelSelectorRequirement(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(None, _VALUES_FOR_IN, _NO_VALUES_FOR_EXISTS))

    key: str = Field(
        min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME),
        description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="How the key relates to the values.")
    values: list[LabelValue] | None = Field(
        None, json_schema_extra=ATOMIC,
        description="In/NotIn: one or more label values; Exists/DoesNotExist: none.")


class LabelSelector(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(None, **{"x-kubernetes-map-type": "atomic"}))

    match_labels: Labels | None = Field(None, max_length=64, description="Labels a pod must have.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        None, max_length=32, json_schema_extra=ATOMIC,
        description="Requirements on pod labels, ANDed.")


class PodAffinityTerm(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(
        "Pods to be near (or away from) and the topology that defines near (core/v1 PodAffinityTerm).",
        _cel("has(self.labelSelector) || ((!has(self.matchLabelKeys) || size(self.matchLabelKeys) == 0) && "
             "(!has(self.mismatchLabelKeys) || size(self.mismatchLabelKeys) == 0))",
             "labelSelector is required when matchLabelKeys or mismatchLabelKeys is set", ".labelSelector")))

    label_selector: LabelSelector | None = Field(None, description="Pods this term selects (core/v1 LabelSelector).")
    namespace_selector: LabelSelector | None = Field(
        None,
        description="Namespaces whose pods this term selects (core/v1 LabelSelector); {} is all.")
    namespaces: list[Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL)]] | None = Field(
        None, json_schema_extra=ATOMIC,
        description="Namespace names whose pods this term selects (default: this namespace).")
    topology_key: str = Field(
        min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=_or_empty(QUALIFIED_NAME),
        description="Node label whose value defines 'near', e.g. topology.kubernetes.io/zone.")
    match_label_keys: list[LabelKey] | None = Field(
        None, json_schema_extra=ATOMIC,
        description="Label keys whose values are taken from the incoming pod and ANDed to labelSelector.")
    mismatch_label_keys: list[LabelKey] | None = Field(
        None, json_schema_extra=ATOMIC,
        description="Label keys whose values from the incoming pod must not match (ANDed to labelSelector).")


class WeightedPodAffinityTerm(_Camel):
    weight: int = Field(
        ge=1, le=100, json_schema_extra={"format": "int32"},
        description="1-100, added to a node's score when it matches.")
    pod_affinity_term: PodAffinityTerm


class PodAffinity(_Camel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        None, max_length=32, json_schema_extra=ATOMIC,
        description="Terms every node must satisfy (core/v1 PodAffinityTerm).")
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(
        None, max_length=32, json_schema_extra=ATOMIC,
        description="Weighted terms the scheduler prefers (core/v1 WeightedPodAffinityTerm).")


class Affinity(_Camel):
    node_affinity: NodeAffinity | None = Field(None, description="Node affinity scheduling rules (core/v1 NodeAffinity).")
    pod_affinity: PodAffinity | None = Field(
        None,
        description="Rules to run the pod near pods with given labels (core/v1 PodAffinity).")
    pod_anti_affinity: PodAffinity | None = Field(
        None,
        description="Rules to keep the pod away from pods with given labels (core/v1 PodAntiAffinity).")


class SchedulingSpec(_Camel):
    node_selector: Labels = Field(
        default_factory=dict, max_length=64, json_schema_extra=NO_SERVER_DEFAULT,
        description="Node labels the pod requires (label keys and values).")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, json_schema_extra={**NO_SERVER_DEFAULT, **ATOMIC},
        description="Tolerations added to the pod (GPU nodes are usually tainted): core/v1 Tolerations.")
    affinity: Affinity = Field(
        default_factory=Affinity, json_schema_extra=NO_SERVER_DEFAULT,
        description="A core/v1 Affinity, copied onto the pod.")
    priority_class_name: str = Field(
        "", max_length=253, pattern=_or_empty(DNS_SUBDOMAIN),
        description="PriorityClass of the pod (a DNS subdomain name).")
    runtime_class_name: str = Field(
        "", max_length=253, pattern=_or_empty(DNS_SUBDOMAIN),
        description="RuntimeClass of the pod, e.g. nvidia (a DNS subdomain name).")
    queue_name: str = Field(
        "", max_length=63, pattern=LABEL_VALUE,
        description="Kueue LocalQueue: sets kueue.x-k8s.io/queue-name on the Job (a label value).")


class PodMetadata(_Camel):
    model_config = ConfigDict(json_schema_extra=_crd(None, _cel(
        f"!has(self.annotations) || self.annotations.map(k, size(k) + size(self.annotations[k])).sum() <= {MAX_POD_ANNOTATIONS}",
        "annotations may hold at most 255 KiB of keys and values (a pod's limit is 256 KiB, the operator adds its own)", ".annotations")))

    labels: Labels = Field(
        default_factory=dict, max_length=64, json_schema_extra=NO_SERVER_DEFAULT,
        description="Labels for the pods (for cost allocation, network policies, ...): label keys and values.")
    annotations: dict[QualifiedNameKey, str] = Field(
        default_factory=dict, max_length=64, json_schema_extra=NO_SERVER_DEFAULT,
        description="Annotations for the pods (keys are qualified names like label keys).")


class RunPolicy(_Camel):
    backoff_limit: int = Field(
        1, ge=0, le=10, json_schema_extra={"format": "int32"},
        description="Retries of a failed pod (bad-input failures are never retried).")
    active_deadline_seconds: int | None = Field(
        7200, ge=1, json_schema_extra={"format": "int64"},
        description="Wall-clock limit of the Job.")
    ttl_seconds_after_finished: int | None = Field(
        86400, ge=0, le=INT32_MAX, json_schema_extra={"format": "int32"},
        description="Delete the finished Job and its pods after this long; results stay in this object's status.")


class QuantizationJobSpec(_Camel):
    # On the spec, since they join data.evaluation with verification; twins of _cross_field_rules
    # and needs_labels.
    model_config = ConfigDict(json_schema_extra=_crd(
        None,
        _cel("!has(self.verification) || !has(self.verification.custom) || self.data.evaluation.format == 'npz'",
             f"spec.data.evaluation.format: {_NPZ_FOR_CUSTOM}", ".data.evaluation.format"),
        _cel("self.data.evaluation.format != 'imagePrefix' || (has(self.verification) && has(self.verification.metric) && "
             "self.verification.metric in ['agreement', 'fidelity'])",
             "spec.data.evaluation.format: imagePrefix has no labels and evaluation needs them; use imageList or npz with labels, "
             "or spec.verification.metric agreement or fidelity", ".data.evaluation.format")))

    model: ModelSpec = Field(description="The fp32 model: exactly one of inference, builtin or custom.")
    data: DataSpec = Field(description="Calibration and evaluation images in S3, and how to preprocess them.")
    quantization: QuantizationSpec = Field(
        default_factory=QuantizationSpec,
        description="PaddleSlim quant_post_static settings; several algos make a sweep, the best candidate wins.")
    verification: VerificationSpec = Field(
        default_factory=VerificationSpec,
        description="fp32 vs int8 comparison with Paddle Inference and the accuracy gate.")
    output: OutputSpec = Field(description="Where the best int8 model and the report go.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="How the job reaches S3.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec,
        description="What the job's pod requests and is limited to.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Where the job's pod may run.")
    pod_metadata: PodMetadata = Field(
        default_factory=PodMetadata,
        description="Labels and annotations copied onto the job's pods.")
    run_policy: RunPolicy = Field(
        default_factory=RunPolicy,
        description="Applies to the child Job and its pods, never to this QuantizationJob.")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "QuantizationJobSpec":
        # Twins of the CEL rules above and on the nested models, for manifests that never met the API
        # server (kubeslim-job run -f); inputs named twice and an algo listed twice are the API
        # server's list-type map/set checks.
        sources = [n for n in ("inference", "builtin", "custom") if getattr(self.model, n) is not None]
        if len(sources) != 1:
            raise SpecError("spec.model", f"{_ONE_SOURCE} (found: {', '.join(sources) or 'none'})")
        if self.model.input_shape is not None and self.model.inputs is not None:
            raise SpecError("spec.model.inputs", _SHAPE_OR_INPUTS)
        if sources[0] != "inference" and not self.model.input_shape and not self.model.inputs:
            raise SpecError("spec.model.inputShape", "required unless spec.model.inference is used, e.g. [3, 224, 224] "
                                                     "(or spec.model.inputs for a model with named or several inputs)")
        if self.model.inputs is not None:
            names = [i.name for i in self.model.inputs]
            if len(set(names)) != len(names):
                raise SpecError("spec.model.inputs", f"names an input twice ({', '.join(names)})")
        if self.model.custom is not None and (self.model.custom.code is None) == (self.model.custom.module is None):
            raise SpecError("spec.model.custom", _CODE_OR_MODULE)
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
            raise SpecError("spec.verification.custom", _CUSTOM_IFF_METRIC)
        if v.custom is not None and self.data.evaluation.format != "npz":
            raise SpecError("spec.data.evaluation.format", _NPZ_FOR_CUSTOM)
        pp = self.data.preprocess
        if len(pp.mean) != len(pp.std):
            raise SpecError("spec.data.preprocess.std", "must have as many entries as mean")
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


def parse_spec(raw: dict[str, Any], *, drop_unknown: bool = False) -> QuantizationJobSpec:
    """Parse a CR's `spec` mapping; every failure is a SpecError naming the field.

    drop_unknown: the operator's mode. The API server prunes whatever its CRD does not know, so a
    field unknown here is one a NEWER CRD added (the CRD is upgraded before this operator, as
    Argo CD and Flux do, and every object gets that CRD's defaults): refusing it would fail every
    QuantizationJob, running ones too, until the operator is upgraded. A manifest read by
    `kubeslim-job run -f` met no API server, so there an unknown field is a typo and is refused."""
    try:
        return QuantizationJobSpec.model_validate(_without_unknown(raw) if drop_unknown else raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, SpecError):
            raise ctx_err from None
        raise SpecError(_field_path(tuple(err["loc"])), err["msg"]) from None


def _without_unknown(raw: dict[str, Any]) -> dict[str, Any]:
    """raw less every field the spec model does not know, found the way pydantic reports them."""
    raw = copy.deepcopy(raw)
    for _ in range(_MAX_UNKNOWN_PASSES):
        try:
            QuantizationJobSpec.model_validate(raw)
            return raw
        except ValidationError as exc:
            unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
            if not unknown:
                return raw
            for loc in unknown:
                parent: Any = raw
                for key in loc[:-1]:
                    parent = parent[key]
                parent.pop(loc[-1], None)
    return raw


def parse_manifest(doc: dict[str, Any]) -> tuple[dict[str, Any], QuantizationJobSpec]:
    """A whole QuantizationJob manifest (as `kubeslim-job run -f` reads it): (metadata, spec)."""
    if doc.get("kind") != "QuantizationJob":
        raise SpecError("kind", f"expected QuantizationJob, got {doc.get('kind')!r}")
    if "spec" not in doc:
        raise SpecError("spec", "missing")
    return doc.get("metadata") or {}, parse_spec(doc["spec"])
