"""What the stages hand on: to the next stage (files in the work dir) and to the CLI (a typed outcome).

export writes `ExportFacts` to work/export.json, calibrate writes `CalibrationFacts` to
work/calibration.json; the later stages read them back with `WorkDir.load`. Each stage's `run`
returns its outcome (`ExportFacts`, `CalibrationFacts`, `Verification`), and the CLI turns it into
the contract's `StageResult` with `to_result()`. The files keep the camelCase keys they have always
had, so a work dir left by one run of the image reads the same in the next.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import ConfigDict, Field

from kubeslim_api import reasons
from kubeslim_api.camel import CamelModel
from kubeslim_api.contract import Artifacts, Candidate, Gate, ModelMetrics, Results, Stage, StageResult, metric_value
from kubeslim_api.spec import ModelInput, QuantizationJobSpec

if TYPE_CHECKING:
    from .storage import Storage
    from .workdir import WorkDir


class StageOutcome(Protocol):
    def to_result(self) -> StageResult: ...


class StageRunner(Protocol):
    """The `run` of each stage module."""

    def __call__(self, spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> StageOutcome: ...


class _Camel(CamelModel):
    # Written and read by the same image within one pod: an unknown key is a bug, not a newer writer.
    model_config = ConfigDict(extra="forbid")


class Handoff(_Camel):
    """A file one stage writes into the work dir for the next."""
    FILE: ClassVar[str]
    PRODUCED_BY: ClassVar[Stage]


class OutputFacts(_Camel):
    """One fetch target of the static program: its shape (batch dimension first; -1 where it
    varies) as the model declares it, or as a probe run gave it where every input shape is fixed."""
    name: str
    shape: list[int]
    dtype: str


class ExportFacts(Handoff):
    """work/export.json: the fp32 model as loaded once as a static program."""
    FILE: ClassVar[str] = "export.json"
    PRODUCED_BY: ClassVar[Stage] = "export"

    source: str
    inputs: list[ModelInput]           # the feeds, in the model's order; per-sample shapes, -1 dynamic
    outputs: list[OutputFacts]
    input_shape: list[int] | None = None   # the image input's C, H, W, where the model has one
    num_classes: int | None = None     # where the first output is [N, classes] scores
    ops: int
    op_types: dict[str, int]           # the 12 most common
    params: int
    size_bytes: int                    # model.pdmodel + model.pdiparams
    seconds: float = 0.0               # these two: set by export.run once the model is inspected
    bytes_read: int = 0

    def to_result(self) -> StageResult:
        return StageResult(
            stage="export", ok=True, reason=reasons.SUCCEEDED,
            message=(f"exported {self.source} model: inputs {', '.join(f'{i.name} {i.dtype} {i.shape}' for i in self.inputs)}; "
                     f"outputs {', '.join(f'{o.name} {o.shape}' for o in self.outputs)}"
                     + (f" ({self.num_classes} classes)" if self.num_classes else "")
                     + f", {self.ops} ops, {self.params} parameters"),
            details=self.dump(include={"source", "inputs", "outputs", "input_shape", "num_classes", "ops", "params",
                                       "size_bytes"}))


class CalibratedCandidate(_Camel):
    """One algo's quant_post_static run: where its model is, or the error that stopped it."""
    algo: str
    calibration_seconds: float
    size_bytes: int | None = None
    quant_ops: int | None = None
    dir: str | None = None             # relative to the work dir
    error: str | None = None


class CalibrationFacts(Handoff):
    """work/calibration.json: the calibration samples and every candidate."""
    FILE: ClassVar[str] = "calibration.json"
    PRODUCED_BY: ClassVar[Stage] = "calibrate"

    samples: int
    batch_size: int
    batch_nums: int
    bytes_read: int
    bytes_used: int
    fetch_seconds: float
    candidates: list[CalibratedCandidate]
    seconds: float
    device: str = "cpu"          # calibrate.calibration_device(): "gpu:0" or "cpu"

    def to_result(self) -> StageResult:
        good = [c.algo for c in self.candidates if c.error is None]
        return StageResult(
            stage="calibrate", ok=True, reason=reasons.SUCCEEDED,
            message=f"calibrated {len(good)}/{len(self.candidates)} candidates ({', '.join(good)}) on {self.samples} samples "
                    f"(device {self.device})",
            details={**self.dump(include={"samples", "bytes_read", "bytes_used", "device"}),
                     "candidates": [c.dump(include={"algo", "calibration_seconds", "size_bytes", "error"})
                                    for c in self.candidates]})


class Measurement(ModelMetrics):
    """One model measured by verify: the contract's metrics, the count of top-1 hits (a detail) and
    the top-1 class of every evaluation sample (to compare two models sample by sample; never
    serialised)."""
    correct: int | None          # None where the labels were not read (metric agreement)
    predictions: list[int] = Field(default_factory=list, exclude=True, repr=False)


class MeasuredCandidate(Candidate):
    """An int8 candidate as verify measured it. As a contract `Candidate` (in `Results.candidates`)
    it serialises to the contract's fields only; the report shows all of them but `dir`."""
    latency_p95_ms: float | None = None
    throughput: float | None = None
    correct: int | None = None
    dir: str | None = Field(None, exclude=True)
    predictions: list[int] = Field(default_factory=list, exclude=True, repr=False)


class Verification(_Camel):
    """verify's outcome: what the operator copies into the CR and the stage's details."""
    results: Results
    gate: Gate
    artifacts: Artifacts
    details: dict[str, Any]

    def to_result(self) -> StageResult:
        r, g = self.results, self.gate
        i8 = r.int8
        assert i8 is not None     # verify raises before it has no candidate
        digits = 6 if g.metric == "fidelity" else 4     # a cosine's loss shows in the 4th-6th decimal
        message = (f"int8 {i8.algo}: {g.metric} {metric_value(i8, g.metric):.{digits}f} vs fp32 "
                   f"{metric_value(r.fp32, g.metric):.{digits}f} (drop {r.accuracy_drop:.{digits}f}), "
                   f"{r.speedup}x faster on {r.backend}"
                   + (f" ({r.speedup_vs_fp16}x against TensorRT fp16)" if r.speedup_vs_fp16 is not None else "")
                   + f"; model at {self.artifacts.model}"
                   + (f"; ONNX at {self.artifacts.onnx}" if self.artifacts.onnx
                      else f"; no ONNX ({r.onnx.reason})" if r.onnx is not None else ""))
        return StageResult(stage="verify", ok=True, reason=reasons.SUCCEEDED, message=message, details=self.details,
                           results=r, gate=g, artifacts=self.artifacts)
