"""The job → operator result contract, version 1. Defined once, used by both sides.

Each pod stage (export, calibrate, verify) writes one JSON `StageResult` to its termination
message file (kubelet keeps at most 4096 bytes per container) and exits with one of the exit
codes below. The operator reads the message from the container's `state.terminated.message`;
`kubeslim-job run --result FILE` writes the verify stage's message to FILE.

Exit codes drive the Job's podFailurePolicy: BAD_INPUT and ACCURACY_GATE fail the Job at once
(retrying cannot help), TRANSIENT and any other non-zero code (crash, OOM kill = 137) are retried
up to spec.runPolicy.backoffLimit.

Version 1 grows only by optional fields (a reader ignores keys it does not know, and every new
field may be absent), so an operator and a job image of different builds still read each other:
the TensorRT fp16 baseline (`Results.fp16`, `speedupVsFp16`), the ONNX export
(`Results.onnx`, `Artifacts.onnx`) and the output fidelity (`ModelMetrics.fidelity`,
`Candidate.fidelity`, `Gate.minCosine`) came that way.
"""
from __future__ import annotations

import json
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, ValidationError

from .camel import CamelModel

CONTRACT_VERSION = 1
MAX_MESSAGE_BYTES = 4096
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
WORK_DIR = "/work"            # the emptyDir the stages share; the job's --work-dir default

EXIT_OK = 0
EXIT_BAD_INPUT = 3       # the spec, the data or the model is wrong: do not retry
EXIT_ACCURACY_GATE = 4   # the pipeline worked but int8 lost more than maxAccuracyDrop
EXIT_TRANSIENT = 75      # EX_TEMPFAIL: storage timeout, throttling: retry
NON_RETRYABLE_EXIT_CODES = (EXIT_BAD_INPUT, EXIT_ACCURACY_GATE)

# The pod's containers, in order (two init containers and one container), and the CLI's subcommands.
Stage = Literal["export", "calibrate", "verify"]
STAGES: tuple[Stage, ...] = get_args(Stage)


class _Camel(CamelModel):
    # A reader ignores keys it does not know: version 1 grows only by optional fields (see above).
    model_config = ConfigDict(extra="ignore")


class OutputFidelity(_Camel):
    """One model output of int8 against fp32's on the evaluation set. `comparable` is False (with
    `reason`) where the two cannot be matched element for element, e.g. an NMS output whose box
    count differs; its figures are then absent."""
    name: str
    comparable: bool
    cosine: float | None = None            # mean over samples of the cosine similarity of the flattened outputs
    sqnr_db: float | None = None           # 10 log10(sum fp32^2 / sum (fp32 - int8)^2) over the whole set; None: identical
    max_abs_error: float | None = None
    reason: str | None = None


class Fidelity(_Camel):
    """Every output of a model against fp32's. The summary is the worst comparable output: the
    lowest cosine and SQNR, the largest error (fp32 against itself: cosine 1, error 0, no SQNR)."""
    cosine: float | None = None            # None: no output was comparable
    sqnr_db: float | None = None
    max_abs_error: float | None = None
    per_output: list[OutputFidelity] = Field(default_factory=list)


class ModelMetrics(_Camel):
    top1: float | None = None              # None where the evaluation labels are not read (metric agreement)
    top5: float | None = None
    agreement: float | None = None         # fraction of images whose top-1 class equals fp32's (fp32: 1.0)
    latency_ms: float | None = None        # p50 per batch at verification.batchSize
    latency_p95_ms: float | None = None
    throughput: float | None = None        # images per second
    size_bytes: int | None = None
    fidelity: Fidelity | None = None       # every output against fp32's (fp32's: the reference itself)
    custom: float | None = None            # spec.verification.custom's value (metric custom)


def metric_value(m: Any, metric: str) -> float | None:
    """The value of spec.verification.metric for a model's metrics or a candidate (higher is
    better): top1/top5/agreement/custom as they are, fidelity as the worst output cosine."""
    if metric == "fidelity":
        fid = getattr(m, "fidelity", None)
        return fid.cosine if fid is not None else None
    return getattr(m, metric)


class Int8Metrics(ModelMetrics):
    algo: str
    fp32_layers: int | None = None         # layers kept in fp32 by the accuracy-aware fallback (None: none)
    speed_fp32_layers: int | None = None   # layers kept in fp32 by speed-aware quantization (None: none)


class Candidate(_Camel):
    algo: str
    fp32_layers: int | None = None         # a fallback step: this many of the most sensitive layers kept in fp32
    speed_fp32_layers: int | None = None   # speed-aware: this many layers of the slow groups kept in fp32 besides
    top1: float | None = None
    top5: float | None = None
    agreement: float | None = None
    accuracy_drop: float | None = None
    latency_ms: float | None = None
    size_bytes: int | None = None
    calibration_seconds: float | None = None
    error: str | None = None               # a candidate that failed to calibrate or run
    fidelity: Fidelity | None = None
    custom: float | None = None


class OnnxResult(_Camel):
    """spec.output.onnx: the chosen int8 model converted by paddle2onnx and scored by onnxruntime on
    the evaluation set. `exported` is whether model.onnx was uploaded; `reason` (kubeslim_api.reasons)
    says why not, `message` in a sentence."""
    exported: bool
    reason: str
    message: str = ""
    converter: str | None = None           # paddle2onnx version
    runtime: str | None = None             # onnxruntime version and execution provider
    opset_version: int | None = None
    top1: float | None = None
    top5: float | None = None
    accuracy_delta: float | None = None    # ONNX - Paddle int8, in the gate's metric
    agreement: float | None = None         # share of samples where ONNX and Paddle int8 agree on top-1
    latency_ms: float | None = None
    size_bytes: int | None = None
    unsupported_operators: list[str] | None = None


class Fallback(_Camel):
    """What the accuracy-aware fallback (spec.quantization.accuracyControl) did. Optional: readers
    that predate it ignore it."""
    mode: str                              # onGateFailure | always
    algo: str                              # the candidate it started from (the best plain one)
    plain_accuracy_drop: float | None      # that candidate's drop before any layer went back to fp32 (fidelity: 1 - cosine)
    ranked_layers: int                     # quantized layers ranked by sensitivity
    steps: int                             # fallback steps calibrated and verified
    passed: bool                           # the chosen model passes the gate
    stop_reason: str                       # GatePassed | MaxFp32Layers | MaxSeconds | NoMoreLayers
    fp32_layers: list[str] = Field(default_factory=list)   # kept in fp32 in the chosen model, most sensitive first
    latency_cost: float | None = None      # chosen latency / the plain candidate's (1.2 = 20 % slower)
    seconds: float = 0.0


class SpeedGroup(_Camel):
    """One group of like layers (kind and shape) timed kept in fp32 against all-int8."""
    group: str                             # e.g. "depthwise 3x3", "pointwise, 1-64 in-channels", "conv 1x1 on 1x1 maps"
    layers: int
    gain: float                            # 1 - median(fp32 variant / all-int8 latency): 0.1 = 10 % faster in fp32
    faster_share: float                    # the share of back-to-back timed pairs the fp32 variant won
    kept_fp32: bool


class SpeedAware(_Camel):
    """What speed-aware quantization (spec.quantization.speedAware) measured and kept. Optional:
    readers that predate it ignore it."""
    mode: str                              # auto
    applied: bool                          # the chosen int8 model has these layers in fp32
    reason: str                            # Faster | NoSlowerGroup | CombinedNotFaster | GateFailed (the model with them in fp32 was not chosen) | Failed
    groups: list[SpeedGroup] = Field(default_factory=list)
    fp32_layers: list[str] = Field(default_factory=list)   # the slow groups' layers
    gain: float | None = None              # the combined model's 1 - latency ratio to all-int8 (timed interleaved)
    message: str = ""
    seconds: float = 0.0


class Results(_Camel):
    """Exactly what the operator copies into status.results."""
    backend: str
    fp32: ModelMetrics
    int8: Int8Metrics | None = None
    accuracy_drop: float | None = None
    speedup: float | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    fp16: ModelMetrics | None = None       # TensorRT backend only: the fp32 model built as an fp16 engine
    speedup_vs_fp16: float | None = None
    onnx: OnnxResult | None = None
    fallback: Fallback | None = None
    speed_aware: SpeedAware | None = None


class Gate(_Camel):
    metric: str
    max_accuracy_drop: float
    passed: bool
    min_cosine: float | None = None        # metric fidelity: the lowest accepted output cosine


class Artifacts(_Camel):
    model: str | None = None
    params: str | None = None
    report: str | None = None
    report_json: str | None = None
    onnx: str | None = None


class StageResult(_Camel):
    version: int = CONTRACT_VERSION
    stage: Stage
    ok: bool
    reason: str = ""             # machine-readable (CamelCase), e.g. NoSuchKey, AccuracyGateFailed
    message: str = ""            # one human sentence naming the cause and the fix
    details: dict[str, Any] = Field(default_factory=dict)   # stage-specific facts (export op counts, calibration timings)
    results: Results | None = None
    gate: Gate | None = None
    artifacts: Artifacts | None = None


class BadResultMessage(ValueError):
    pass


# When a result must shrink to fit: the per-output fidelity rows kept (only the non-comparable
# ones, which explain a verdict; all rows stay in report.json), and the shortest the message is
# halved down to (below this it would no longer say what happened).
KEPT_PER_OUTPUT_ROWS = 4
MIN_SHORTENED_MESSAGE_CHARS = 40


def encode(result: StageResult, limit: int = MAX_MESSAGE_BYTES) -> str:
    """Compact JSON of at most `limit` bytes. Detail is shed before meaning: stage details first,
    then candidate rows, then the ONNX finding's sentence, then the message is shortened, never
    the verdict."""
    doc = result.dump()
    text = _compact(doc)
    if len(text.encode()) <= limit:
        return text
    doc.pop("details", None)
    text = _compact(doc)
    if len(text.encode()) > limit and doc.get("results", {}).get("candidates"):
        doc["results"]["candidates"] = [
            {**{k: c[k] for k in ("algo", "fp32Layers", "top1", "agreement", "custom", "accuracyDrop", "error") if k in c},
             **({"fidelity": {"cosine": c["fidelity"].get("cosine")}} if "fidelity" in c else {})}
            for c in doc["results"]["candidates"]
        ]
        text = _compact(doc)
    for key in ("fp32", "int8", "fp16"):
        fid = (doc.get("results", {}).get(key) or {}).get("fidelity")
        if len(text.encode()) > limit and fid and fid.get("perOutput"):
            # a model with many outputs: the per-output rows stay in report.json, the summary here
            fid["perOutput"] = [o for o in fid["perOutput"] if not o.get("comparable", True)][:KEPT_PER_OUTPUT_ROWS]
            text = _compact(doc)
    onnx = doc.get("results", {}).get("onnx")
    if len(text.encode()) > limit and onnx and onnx.get("message"):
        # the ONNX finding keeps its reason and figures; its sentence is spelled out in report.json
        onnx.pop("message")
        text = _compact(doc)
    while len(text.encode()) > limit and len(doc.get("message", "")) > MIN_SHORTENED_MESSAGE_CHARS:
        doc["message"] = doc["message"][: len(doc["message"]) // 2] + "…"
        text = _compact(doc)
    if len(text.encode()) > limit:
        raise BadResultMessage(f"result of stage {result.stage} does not fit in {limit} bytes")
    return text


def decode(text: str | None) -> StageResult:
    """Parse a termination message. Anything that is not a v1 StageResult is BadResultMessage."""
    if not text or not text.strip():
        raise BadResultMessage("empty termination message")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadResultMessage(f"termination message is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(doc, dict):
        raise BadResultMessage("termination message is not a JSON object")
    if doc.get("version") != CONTRACT_VERSION:
        raise BadResultMessage(f"unsupported result contract version {doc.get('version')!r} (this build reads {CONTRACT_VERSION})")
    try:
        return StageResult.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BadResultMessage(f"termination message field {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _compact(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
