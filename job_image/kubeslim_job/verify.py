"""Stage 3: measure fp32 and every int8 candidate with Paddle Inference, choose, gate, publish.

One evaluation set (the first `limit` samples) is fetched once into work/data/evaluation and
streamed batch by batch through every model (inference.py: the backends, the one inference loop,
what a measurement holds, output fidelity). With metric fidelity the summary's cosine (the worst
output's) is what the choice and the gate use: cosine >= minCosine; top1/top5/agreement are then
computed only for a model whose first output is [N, classes] scores (ExportFacts.num_classes).

Best candidate: highest spec metric, ties broken by lower latency. Gate (gate.py): fp32 - best <=
maxAccuracyDrop (fidelity: best cosine >= minCosine). Every int8 candidate's `agreement` (the share of evaluation images whose top-1
class equals fp32's; fp32's own is 1.0) is reported; with metric agreement it is also what the
choice and the gate use (1 - agreement <= maxAccuracyDrop), and the labels are not read, so
top1/top5 are absent. With spec.output.onnx.enabled and a passed gate, the best model also goes
through onnx_export (paddle2onnx, then onnxruntime on the same evaluation set) and model.onnx is
uploaded beside it when it converts and scores within maxAccuracyDelta of Paddle's int8. On
success the best model goes to output.uri (model.pdmodel, model.pdiparams) with report.json,
report.html and the plots; on a failed gate only the report is uploaded (a model that failed its
gate must not be picked up by a deploy pipeline watching output.uri).

`run` is the list of named steps in STEPS, each reading and extending one `Verifying` state, in
that order: a new step (a choice by speed, say) goes into the list where its inputs are ready.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from kubeslim_api import reasons
from kubeslim_api.contract import Artifacts, Gate, Int8Metrics, OnnxResult, Results, SpeedAware, metric_value
from kubeslim_api.spec import CLASSIFIER_METRICS, OnnxOutput, QuantizationJobSpec, VerificationSpec

from . import custom_metric, data, fallback, onnx_export, progress, report, speed_aware
from .errors import BadInput, GateFailed, candidate_errors, last_line
from .gate import drop_of, judge, knob, miss
from .handoff import CalibrationFacts, ExportFacts, MeasuredCandidate, Measurement, Verification
from .inference import GPU_TENSORRT, OutputStore, cpu_threads, latencies, measure, pick_backend, score
from .storage import Storage, join_uri
from .workdir import MODEL_FILE, PARAMS_FILE, WorkDir


@dataclass
class Verifying:
    """What the steps of one verify run share; each step fills in its part, in STEPS' order."""
    spec: QuantizationJobSpec
    storage: Storage
    work: WorkDir
    facts: ExportFacts
    calib: CalibrationFacts
    started: float                                   # perf_counter at the start, for details.seconds
    backend: str = ""
    evalset: data.TensorFile | None = None
    load_stats: data.LoadStats | None = None
    classify: bool = True                            # the first output is [N, classes] scores
    fp32_outputs: OutputStore | None = None          # fp32's outputs: every int8 model's fidelity reference
    custom: Callable | None = None                   # spec.verification.custom, with metric custom
    fp32: Measurement | None = None
    fp16: Measurement | None = None                  # TensorRT's fp16 engine of the fp32 model (GPU only)
    rows: list[MeasuredCandidate] = field(default_factory=list)   # every int8 model measured, in order
    best: MeasuredCandidate | None = None
    drop: float | None = None
    gate: Gate | None = None
    fallback_outcome: fallback.Outcome | None = None   # spec.quantization.accuracyControl's steps, when it ran
    speed_outcome: SpeedAware | None = None          # spec.quantization.speedAware's timings and choice, when it ran
    onnx: OnnxResult | None = None
    results: Results | None = None
    details: dict = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=Artifacts)

    @property
    def v(self) -> VerificationSpec:
        return self.spec.verification

    @property
    def best_dir(self) -> str:
        return os.path.join(self.work.root, self.best.dir)

    def measure_int8(self, row: MeasuredCandidate, model_dir: str) -> MeasuredCandidate:
        """`row` with the int8 model in model_dir measured against fp32 on the whole evaluation set,
        or with the error that stopped it."""
        # metric custom: the model's outputs are kept for the user's function, in work/outputs/<its dir, dashed>
        kept_as = os.path.relpath(model_dir, self.work.root).replace(os.sep, "-")
        try:
            store = OutputStore(self.work.path("outputs", kept_as)) if self.custom is not None else None
            m = measure(model_dir, self.backend, True, self.evalset, self.v.batch_size, reference=self.fp32,
                        classify=self.classify, outputs=self.fp32_outputs, keep=store)
            m = self.with_custom(m, store, f"int8 {os.path.basename(model_dir)}")
        except BadInput:
            raise                   # the user's metric failed: MetricError, not this model's failure
        except Exception as exc:
            return row.model_copy(update={"error": f"inference failed: {last_line(exc)}"})
        return row.model_copy(update={**dict(m), "accuracy_drop": drop_of(self.fp32, m, self.v.metric)})

    def with_custom(self, m: Measurement, store: OutputStore | None, model: str) -> Measurement:
        """`m` with spec.verification.custom's value on the outputs in `store` (metric custom)."""
        return m if self.custom is None else m.model_copy(update={"custom": self.custom(store.joined(), model)})

    def verification(self) -> Verification:
        return Verification(results=self.results, gate=self.gate, artifacts=self.artifacts, details=self.details)


def load_evaluation(r: Verifying) -> None:
    """The backend, the evaluation set (fetched once), spec.verification.custom, the progress plan."""
    spec, v = r.spec, r.v
    r.backend = pick_backend(v.backend)
    prep = data.prep_for(spec.data.preprocess, r.facts.inputs)
    r.evalset, r.load_stats = data.load(r.storage, spec.data.evaluation, "spec.data.evaluation",
                                        spec.data.evaluation.limit, prep, r.work.eval, r.facts.num_classes,
                                        spec.needs_labels("evaluation"), inputs=r.facts.inputs)
    r.classify = r.facts.num_classes is not None
    r.fp32_outputs = OutputStore(r.work.path("outputs", "fp32"))
    if v.metric == "custom":
        r.custom = custom_metric.load(spec, r.storage, r.work, r.evalset.n, [i.name for i in r.facts.inputs])
    models = (1 + (r.backend == GPU_TENSORRT) + spec.output.onnx.enabled
              + sum(c.error is None for c in r.calib.candidates))
    progress.plan(progress.evaluation_batches(r.evalset.n, v.batch_size, models), "batches", step="fp32")


def measure_fp32(r: Verifying) -> None:
    """fp32: the reference every int8 model is compared with; a declared classifier whose first
    output is no [N, classes] is refused for a classifier metric, else scored as any model."""
    v = r.v
    r.fp32 = r.with_custom(measure(r.work.fp32, r.backend, False, r.evalset, v.batch_size, classify=r.classify,
                                   outputs=r.fp32_outputs), r.fp32_outputs, "fp32")
    if r.classify and r.fp32.agreement is None:
        if v.metric in CLASSIFIER_METRICS:
            raise BadInput("BadModel", f"the first output ({r.facts.outputs[0].name}) does not give one row of class "
                                       f"scores per evaluation sample; spec.verification.metric {v.metric} needs "
                                       "[N, classes]. For a detector or any other model use metric fidelity (or custom)")
        r.classify = False


def measure_fp16(r: Verifying) -> None:
    """On TensorRT, the fp32 model as an fp16 engine too: what GPU users compare int8 with."""
    if r.backend == GPU_TENSORRT:
        r.fp16 = measure(r.work.fp32, r.backend, False, r.evalset, r.v.batch_size, fp16=True, reference=r.fp32,
                         classify=r.classify, outputs=r.fp32_outputs)


def measure_candidates(r: Verifying) -> None:
    """Every calibrated int8 candidate; one that fails to run is a row with its error."""
    for c in r.calib.candidates:
        row = MeasuredCandidate(algo=c.algo, calibration_seconds=c.calibration_seconds, dir=c.dir, error=c.error)
        if c.error is None:
            progress.step(c.algo)
            row = r.measure_int8(row, os.path.join(r.work.root, c.dir))
        r.rows.append(row)


def choose_best(r: Verifying) -> None:
    """The best candidate by the metric, and the gate's verdict on it."""
    r.best = choose(r.rows, r.v.metric)
    if r.best is None:
        raise BadInput("CalibrationFailed", "no int8 candidate could be measured: " + candidate_errors(r.rows))
    r.drop, r.gate = judge(r.fp32, r.best, r.v)


def fall_back(r: Verifying) -> None:
    """spec.quantization.accuracyControl: the most sensitive layers in fp32, step by step."""
    if not fallback.wanted(r.spec.quantization.accuracy_control, r.gate.passed):
        return
    r.fallback_outcome = fallback.run(r.spec, r.work, r.facts, r.calib, r.evalset, r.backend, r.fp32, r.best, r.gate,
                              r.measure_int8)
    r.rows += r.fallback_outcome.rows
    r.best = r.fallback_outcome.best or choose(r.rows, r.v.metric)
    r.drop, r.gate = judge(r.fp32, r.best, r.v)


def export_onnx(r: Verifying) -> None:
    """spec.output.onnx: the best model as ONNX, checked by onnxruntime, when its gate passed."""
    if r.spec.output.onnx.enabled and r.gate.passed:
        r.onnx = verify_onnx(r.spec.output.onnx, r.best, r.best_dir, r.evalset, r.v.metric, r.v.batch_size, r.fp32,
                             r.fp32_outputs, r.classify)


def collect_results(r: Verifying) -> None:
    """The contract's Results and the stage's details."""
    r.results = Results(
        backend=r.backend,
        fp32=r.fp32,                   # a Measurement and MeasuredCandidates: they serialise as the contract's types
        int8=Int8Metrics.model_validate(r.best, from_attributes=True),
        accuracy_drop=r.drop,
        speedup=speedup(r.fp32, r.best),
        candidates=r.rows,
        fp16=r.fp16,
        speedup_vs_fp16=speedup(r.fp16, r.best) if r.fp16 is not None else None,
        onnx=r.onnx,
        fallback=r.fallback_outcome.summary if r.fallback_outcome else None,
        speed_aware=r.speed_outcome,
    )
    r.details = {"evalSamples": r.evalset.n, "bytesRead": r.load_stats.bytes_read, "bytesUsed": r.load_stats.bytes_used,
                 "fp32Correct": r.fp32.correct, "bestCorrect": r.best.correct, "threads": cpu_threads()}


def publish(r: Verifying) -> None:
    """The report always; the model (and model.onnx) only when the gate passed."""
    out, fb = r.spec.output.uri, r.fallback_outcome
    files = report.write(r.work.report, r.spec, r.facts, r.calib, r.results, r.gate, r.rows, r.details,
                         sensitivity=[x.dump() for x in fb.sensitivity] if fb else None)
    if r.gate.passed:
        for name in (MODEL_FILE, PARAMS_FILE):
            _upload(r, os.path.join(r.best_dir, name), name, "application/octet-stream")
        r.artifacts.model, r.artifacts.params = join_uri(out, MODEL_FILE), join_uri(out, PARAMS_FILE)
    if r.onnx is not None and r.onnx.exported:
        _upload(r, os.path.join(r.best_dir, onnx_export.MODEL_ONNX), onnx_export.MODEL_ONNX, "application/octet-stream")
        r.artifacts.onnx = join_uri(out, onnx_export.MODEL_ONNX)
    for name, ctype in files.items():
        _upload(r, os.path.join(r.work.report, name), name, ctype)
    r.artifacts.report, r.artifacts.report_json = join_uri(out, "report.html"), join_uri(out, "report.json")


def _upload(r: Verifying, path: str, name: str, content_type: str) -> None:
    r.storage.upload(path, join_uri(r.spec.output.uri, name), "spec.output.uri", content_type)


def enforce_gate(r: Verifying) -> None:
    """A failed gate fails the stage, with everything measured attached."""
    r.details["seconds"] = round(time.perf_counter() - r.started, 3)
    if r.gate.passed:
        return
    best, fb = r.best, r.fallback_outcome
    tried = (f" even with {best.fp32_layers} of the most sensitive layers in fp32" if best.fp32_layers else "") + \
        (f" (fallback stopped: {fb.summary.stop_reason})" if fb else "")
    raise GateFailed(reasons.GATE_FAILED,
                     f"the best int8 candidate ({best.algo}){tried} {miss(r.fp32, best, r.v, r.drop)}; try other "
                     "algos, more calibration samples, skipTensors, a larger spec.quantization.accuracyControl "
                     f"budget, or {knob(r.v)}").with_results(r.results, r.gate, r.artifacts, r.details)


# The pipeline, in order. Each step reads what the steps before it filled in.
STEPS: list[Callable[[Verifying], None]] = [
    load_evaluation,
    measure_fp32,
    measure_fp16,
    measure_candidates,
    choose_best,
    fall_back,
    speed_aware.apply,
    export_onnx,
    collect_results,
    publish,
    enforce_gate,
]


def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> Verification:
    state = Verifying(spec=spec, storage=storage, work=work, facts=work.load(ExportFacts),
                      calib=work.load(CalibrationFacts), started=time.perf_counter())
    for step in STEPS:
        step(state)
    return state.verification()

def speedup(baseline: Measurement, model: Measurement | MeasuredCandidate) -> float | None:
    return round(baseline.latency_ms / model.latency_ms, 3) if baseline.latency_ms and model.latency_ms else None


def verify_onnx(cfg: OnnxOutput, best: MeasuredCandidate, best_dir: str, evalset: data.TensorFile, metric: str,
                batch_size: int, fp32: Measurement, fp32_outputs: OutputStore | None = None,
                classify: bool = True) -> OnnxResult:
    """The best int8 model through paddle2onnx into best_dir/model.onnx, then scored and timed by
    onnxruntime on the same evaluation set and judged against Paddle's int8 numbers."""
    conv = onnx_export.convert(best_dir, cfg.opset_version)
    if conv.failure is not None:
        return conv.failure
    try:
        infer = onnx_export.session(conv.path, cpu_threads())
        s = score(infer, evalset, batch_size, np.asarray(fp32.predictions), classify=classify, against=fp32_outputs)
        lat = float(np.percentile(latencies(lambda: infer(s.batch)), 50))
    except Exception as exc:    # onnxruntime refusing the file is a finding about the file, not a crash
        return onnx_export.runtime_failed(conv, exc)
    # agreement, like Paddle int8's, is with fp32's top-1
    return onnx_export.judge(conv, cfg, metric, paddle=best, onnx_value=metric_value(s, metric), top1=s.top1, top5=s.top5,
                             predictions=s.predictions, latency_ms=round(lat, 4))


def choose(candidates: list[MeasuredCandidate], metric: str) -> MeasuredCandidate | None:
    """Highest metric; ties (within 1e-9) go to the lower latency; a candidate without a value
    (fidelity: nothing comparable) last."""
    ok = [c for c in candidates if c.error is None]
    if not ok:
        return None

    def key(c: MeasuredCandidate):
        value = metric_value(c, metric)
        return (value is None, -round(value or 0.0, 9), c.latency_ms or float("inf"))
    return min(ok, key=key)

