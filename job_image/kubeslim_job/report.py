"""report.json and a self-contained report.html (PNG plots embedded as base64; also written as
files so they can be uploaded beside the model)."""
from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

from kubeslim_api.contract import Gate, Results, metric_value
from kubeslim_api.spec import QuantizationJobSpec

from .handoff import CalibrationFacts, ExportFacts, MeasuredCandidate

PLOTS = ("accuracy.png", "latency.png", "size.png")


def write(directory: str, spec: QuantizationJobSpec, facts: ExportFacts, calib: CalibrationFacts, results: Results,
          gate: Gate, rows: list[MeasuredCandidate], details: dict[str, Any],
          sensitivity: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Write the report files; returns {file name: content type}. `sensitivity`: the fallback's
    per-layer ranking (fallback.Sensitivity.dump()), when it ran."""
    os.makedirs(directory, exist_ok=True)
    doc = {
        "results": results.dump(),
        "gate": gate.dump(),
        "model": facts.dump(include={"source", "inputs", "outputs", "input_shape", "num_classes", "ops", "params",
                                     "size_bytes", "op_types"}),
        "calibration": calib.dump(include={"samples", "batch_size", "batch_nums", "seconds", "device"}),
        "quantization": spec.quantization.model_dump(by_alias=True),
        "verification": {**spec.verification.model_dump(by_alias=True), **details},
        "candidates": [r.dump() for r in rows],     # every measured field; `dir` is excluded by the model
    }
    if results.fallback is not None:
        doc["fallback"] = {**results.fallback.dump(), "sensitivity": sensitivity or []}
    with open(os.path.join(directory, "report.json"), "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
    pngs = _plots(results, gate, rows)
    if results.fallback is not None:
        pngs.update(_fallback_plots(results, gate, rows, sensitivity or []))
    for name, data in pngs.items():
        with open(os.path.join(directory, name), "wb") as fh:
            fh.write(data)
    with open(os.path.join(directory, "report.html"), "w", encoding="utf-8") as fh:
        fh.write(_html(doc, results, gate, pngs))
    return {"report.json": "application/json", "report.html": "text/html; charset=utf-8",
            **{n: "image/png" for n in pngs}}


def _label(r: MeasuredCandidate) -> str:
    label = f"{r.algo}+{r.fp32_layers} fp32" if r.fp32_layers else r.algo
    return f"{label}+{r.speed_fp32_layers} fp32 for speed" if r.speed_fp32_layers else label


def _gate_line(results: Results, gate: Gate) -> tuple[float, str]:
    """Where the gate sits on the metric's axis, and its label."""
    if gate.min_cosine is not None:
        return gate.min_cosine, f"gate (minCosine {gate.min_cosine})"
    return metric_value(results.fp32, gate.metric) - gate.max_accuracy_drop, f"gate (fp32 - {gate.max_accuracy_drop})"


def _value(m, metric: str) -> float:
    """The metric for a plot; a model without a value (nothing comparable) at 0."""
    value = metric_value(m, metric)
    return 0.0 if value is None else value


def _is_chosen(r: MeasuredCandidate, results: Results) -> bool:
    return results.int8 is not None and r.algo == results.int8.algo and r.fp32_layers == results.int8.fp32_layers


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _saver(plt, out: dict[str, bytes]):
    def save(fig, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out[name] = buf.getvalue()
    return save


def _plots(results: Results, gate: Gate, rows: list[MeasuredCandidate]) -> dict[str, bytes]:
    plt = _pyplot()
    metric = gate.metric
    ok = [r for r in rows if r.error is None]
    fp32 = results.fp32
    assert results.int8 is not None
    out: dict[str, bytes] = {}
    save = _saver(plt, out)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    algos = [_label(r) for r in ok]
    int8_vals = [_value(r, metric) for r in ok]
    fp32_val = _value(fp32, metric)
    gate_val, gate_label = _gate_line(results, gate)
    ax.bar(algos, int8_vals, color=["#2a9d8f" if _is_chosen(r, results) else "#8ab17d" for r in ok])
    ax.axhline(fp32_val, color="#264653", label=f"fp32 {fp32_val:.4f}")
    ax.axhline(gate_val, color="#e76f51", linestyle="--", label=gate_label)
    vals = int8_vals + [gate_val, fp32_val]
    lo, hi = min(vals), max(vals)
    ax.set_ylim(max(0.0, lo - (hi - lo) * 0.5 - 0.01), min(1.0, hi + (hi - lo) * 0.3 + 0.01))
    ax.set_ylabel(metric)
    ax.set_title(f"int8 {metric} per algo")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.legend(loc="lower right", fontsize=8)
    save(fig, "accuracy.png")

    best = next(r for r in ok if _is_chosen(r, results))
    for name, key, label in (("latency.png", "latency_ms", "ms per batch (p50)"), ("size.png", "size_bytes", "MiB")):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        scale = 1 / (1 << 20) if key == "size_bytes" else 1.0
        vals = [getattr(fp32, key) * scale] + [getattr(r, key) * scale for r in ok]
        ax.bar(["fp32"] + [f"int8 {_label(r)}" for r in ok], vals,
               color=["#264653"] + ["#2a9d8f" if r is best else "#8ab17d" for r in ok])
        ax.set_ylabel(label)
        ax.set_title(("latency" if key == "latency_ms" else "model size") + f" ({results.backend})")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        save(fig, name)
    return out


def _fallback_plots(results: Results, gate: Gate, rows: list[MeasuredCandidate],
                    sensitivity: list[dict[str, Any]]) -> dict[str, bytes]:
    """sensitivity.png: each layer's cost when quantized alone; fallback.png: accuracy and latency
    against the number of layers kept in fp32 (0 = the plain candidate the fallback started from)."""
    plt = _pyplot()
    out: dict[str, bytes] = {}
    save = _saver(plt, out)
    fb, metric = results.fallback, gate.metric
    assert fb is not None
    # classifier metrics rank by top-1 flips, fidelity by cosine loss (no flip rate)
    key, xlabel = (("logitDistance", "1 - output cosine with fp32 (layer int8 alone)") if metric == "fidelity" else
                   ("flipRate", "share of ranking samples whose top-1 changes (layer int8 alone)"))
    ranked = sorted((s for s in sensitivity if s.get(key) is not None), key=lambda s: -s[key])
    fig, ax = plt.subplots(figsize=(6, 0.8 + 0.3 * max(1, len(ranked))))
    names = [s["layer"] for s in ranked][::-1]
    ax.barh(names, [s[key] for s in ranked][::-1],
            color=["#e76f51" if n in fb.fp32_layers else "#8ab17d" for n in names])
    ax.set_xlabel(xlabel)
    ax.set_title("layer sensitivity (red: kept in fp32)")
    ax.tick_params(axis="y", labelsize=7)
    save(fig, "sensitivity.png")

    path = [r for r in rows if r.error is None and r.algo == fb.algo]
    path.sort(key=lambda r: r.fp32_layers or 0)
    xs = [r.fp32_layers or 0 for r in path]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, [_value(r, metric) for r in path], "o-", color="#2a9d8f", label=f"int8 {metric}")
    ax.axhline(_gate_line(results, gate)[0], color="#e76f51", linestyle="--", label="gate")
    ax.set_xlabel("layers kept in fp32")
    ax.set_ylabel(metric)
    ax2 = ax.twinx()
    ax2.plot(xs, [r.latency_ms for r in path], "s:", color="#264653", label="latency ms")
    ax2.set_ylabel("ms per batch (p50)")
    ax.set_xticks(xs)
    ax.legend(loc="lower left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.set_title(f"fallback from {fb.algo} ({results.backend})")
    save(fig, "fallback.png")
    return out


def _fallback_html(doc: dict[str, Any]) -> str:
    fb = doc.get("fallback")
    if not fb:
        return ""
    e = html.escape
    kept = ", ".join(fb.get("fp32Layers") or []) or "none"
    return (f"<h2>Accuracy-aware fallback</h2><p>Mode {e(fb['mode'])}, from {e(fb['algo'])} (drop "
            f"{_fmt(fb.get('plainAccuracyDrop'))}): {fb['rankedLayers']} layers ranked, {fb['steps']} steps, stopped: "
            f"{e(fb['stopReason'])}; gate {'passed' if fb['passed'] else 'not passed'}. Kept in fp32: <b>{e(kept)}</b>; "
            f"latency {e(_fmt(fb.get('latencyCost')))}x the plain int8 model's; {fb['seconds']:.1f} s.</p>")


def _speed_aware_html(r: dict[str, Any]) -> str:
    """spec.quantization.speedAware: each group of like layers timed in fp32 against all-int8, and
    what was kept."""
    sa = r.get("speedAware")
    if not sa:
        return ""
    e = html.escape
    rows = "".join(f"<tr><th>{e(g['group'])}</th><td>{g['layers']}</td><td>{e(_fmt(g['gain']))}</td>"
                   f"<td>{e(_fmt(g['fasterShare']))}</td><td>{'fp32' if g['keptFp32'] else 'int8'}</td></tr>"
                   for g in sa.get("groups", []))
    kept = ", ".join(sa.get("fp32Layers") or []) or "none"
    return (f"<h2>Speed-aware quantization</h2><p>{'Applied' if sa['applied'] else 'Not applied'} ({e(sa['reason'])}"
            f"{': ' + e(sa['message']) if sa.get('message') else ''}). Layers kept in fp32 because int8 ran them slower: "
            f"<b>{e(kept)}</b>; gain of the model with all of them in fp32 {e(_fmt(sa.get('gain')))} (1 - latency ratio to "
            f"all-int8); {sa['seconds']:.1f} s.</p><table><tr><th>group</th><th>layers</th><th>gain in fp32</th>"
            f"<th>share of pairs won</th><th>kept</th></tr>{rows}</table>")


def _html(doc: dict[str, Any], results: Results, gate: Gate, pngs: dict[str, bytes]) -> str:
    e = html.escape
    r = results.dump()
    verdict = "passed" if gate.passed else "FAILED"
    rows = "".join(
        "<tr>" + "".join(f"<td>{e(_fmt(c.get(k)))}</td>" for k in ("algo", "fp32Layers", "top1", "top5", "agreement"))
        + f"<td>{e(_fmt((c.get('fidelity') or {}).get('cosine')))}</td>"
        + "".join(f"<td>{e(_fmt(c.get(k)))}</td>" for k in
                  ("accuracyDrop", "latencyMs", "sizeBytes", "calibrationSeconds", "error"))
        + "</tr>" for c in doc["candidates"])
    imgs = "".join(f'<figure><img alt="{e(n)}" src="data:image/png;base64,{base64.b64encode(d).decode()}"></figure>'
                   for n, d in pngs.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kubeslim int8 report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}figure{{display:inline-block;margin:.5em}}</style>
</head><body>
<h1>int8 quantization report</h1>
<p>Backend <b>{e(r['backend'])}</b>. Best algo <b>{e(r['int8']['algo'])}</b>: {e(gate.metric)}
{e(_fmt(metric_value(results.int8, gate.metric)))} vs fp32 {e(_fmt(metric_value(results.fp32, gate.metric)))} (drop
{e(_fmt(r.get('accuracyDrop')))}, gate {e(_gate_line(results, gate)[1])}: <b>{verdict}</b>), speedup
{e(_fmt(r.get('speedup')))}x.</p>
{_fidelity_html(r)}
<h2>fp32</h2><pre>{e(json.dumps(r['fp32'], indent=1))}</pre>
{_fp16_html(r)}{_onnx_html(r, gate.metric)}{_fallback_html(doc)}{_speed_aware_html(r)}
<h2>Candidates</h2>
<table><tr><th>algo</th><th>fp32 layers</th><th>top1</th><th>top5</th><th>agreement with fp32</th><th>output cosine</th><th>drop</th><th>latency ms</th><th>size bytes</th>
<th>calibration s</th><th>error</th></tr>{rows}</table>
<h2>Plots</h2>{imgs}
<h2>Details</h2><pre>{e(json.dumps({k: doc[k] for k in ('model', 'calibration', 'quantization', 'verification')}, indent=1))}</pre>
</body></html>
"""


def _fidelity_html(r: dict[str, Any]) -> str:
    """The chosen int8 model's outputs against fp32's, one row per output."""
    fid = r["int8"].get("fidelity")
    if not fid:
        return ""
    e = html.escape
    rows = "".join(f"<tr><th>{e(o['name'])}</th>" + "".join(f"<td>{e(_fmt(o.get(k)))}</td>" for k in
                                                             ("cosine", "sqnrDb", "maxAbsError"))
                   + f"<td>{e('' if o.get('comparable', True) else 'not comparable: ' + o.get('reason', ''))}</td></tr>"
                   for o in fid.get("perOutput", []))
    return ("<h2>Output fidelity (int8 against fp32)</h2><table><tr><th>output</th><th>mean cosine</th><th>SQNR dB</th>"
            f"<th>max abs error</th><th></th></tr>{rows}</table>")


def _fp16_html(r: dict[str, Any]) -> str:
    """The TensorRT fp16 baseline (that backend only): what GPU users compare int8 with."""
    if not r.get("fp16"):
        return ""
    f, i8 = r["fp16"], r["int8"]
    return (f"<h2>int8 against TensorRT fp16</h2><p>fp16 {f.get('latencyMs')} ms, int8 {i8.get('latencyMs')} ms per batch: "
            f"int8 is <b>{html.escape(_fmt(r.get('speedupVsFp16')))}x</b> faster than fp16 "
            f"({html.escape(_fmt(r.get('speedup')))}x against fp32).</p><pre>{html.escape(json.dumps(f, indent=1))}</pre>")


def _onnx_html(r: dict[str, Any], metric: str) -> str:
    """spec.output.onnx: Paddle int8 and onnxruntime side by side, or why there is no model.onnx."""
    o = r.get("onnx")
    if not o:
        return ""
    e = html.escape
    head = (f"<h2>ONNX</h2><p><b>{e(o['reason'])}</b>: {e(o.get('message', ''))}</p>")
    if o.get("latencyMs") is None:      # not converted, or onnxruntime could not run it
        return head
    i8 = r["int8"]
    cells = "".join(f"<tr><th>{e(k)}</th><td>{e(_fmt(i8.get(k)))}</td><td>{e(_fmt(o.get(k)))}</td></tr>"
                    for k in ("top1", "top5", "latencyMs", "sizeBytes"))
    return (head + f"<table><tr><th></th><th>Paddle int8 ({e(r['backend'])})</th><th>{e(o.get('runtime', ''))}</th></tr>"
            f"{cells}<tr><th>{e(metric)} delta</th><td></td><td>{e(_fmt(o.get('accuracyDelta')))}</td></tr>"
            f"<tr><th>top-1 agreement with Paddle int8</th><td></td><td>{e(_fmt(o.get('agreement')))}</td></tr></table>")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
