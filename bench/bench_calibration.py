"""Benchmark of calibration speed per algo (`make bench-calibration`) -> bench/results/calibration.json.

paddle.vision's mobilenet_v3_small at 3x224x224 (the seeded weights and synthetic images of
bench_pipeline.py, so activations look like a fitted network's) calibrated by PaddleSlim's
quant_post_static with avg, hist and KL on the same samples (32: batch 16 x 2, as in
bench-pipeline), in one process, once with Paddle's own KL/hist functions ("paddle") and once with
kubeslim_job.fast_thresholds installed ("kubeslim", what the calibrate stage runs). One avg run
first warms Paddle up and is not counted. kubeslim's runs are repeated (--repeats, rounds over the
three algos) and the fastest of each kept, since the 2x target is a ratio of kubeslim's own
figures and this machine is shared; Paddle's run once (its KL alone takes minutes). For each algo:
seconds per mode, the speedup, and whether both modes' int8 models carry the same activation
thresholds (they must, within 1e-6 relative: same histograms, same search). The model files
themselves differ byte for byte between any two runs in one process (generated variable names).

Target (issue 17 item 3): with kubeslim, hist and KL each within 2x avg's time.

    bench/bench_calibration.py [--samples 32] [--batch 16] [--repeats 3]
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "job_image"))

from bench_pipeline import NET_SHAPE, _cpu_model, seeded_weights, synthetic_images  # noqa: E402

OUT = REPO / "bench" / "results" / "calibration.json"
ARCHITECTURE = "mobilenet_v3_small"
ALGOS = ["avg", "hist", "KL"]
MODEL, PARAMS = "model.pdmodel", "model.pdiparams"


def export_model(tmp: Path, samples: int, architecture: str = ARCHITECTURE) -> tuple[Path, np.ndarray]:
    """The fp32 inference model (fitted as in bench-pipeline) and its preprocessed calibration batch."""
    import paddle

    images, classes = synthetic_images(seed=11, n=samples)
    weights = tmp / "weights.pdparams"
    seeded_weights(architecture, images, classes, weights)
    model = getattr(paddle.vision.models, architecture)(num_classes=1000)
    model.set_state_dict(paddle.load(str(weights)))
    model.eval()
    fp32 = tmp / "fp32"
    paddle.jit.save(model, str(fp32 / "model"), input_spec=[paddle.static.InputSpec([None, *NET_SHAPE], "float32", "x")])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    h, w = NET_SHAPE[1:]
    top, left = (images[0].shape[0] - h) // 2, (images[0].shape[1] - w) // 2
    x = np.stack([((im[top:top + h, left:left + w] / 255.0 - mean) / std).transpose(2, 0, 1) for im in images])
    return fp32, x.astype(np.float32)


def calibrate(fp32: Path, x: np.ndarray, algo: str, batch: int, out: Path, feed: str = "x") -> float:
    """quant_post_static as the calibrate stage calls it (DataLoader feed, fresh scope); seconds."""
    import paddle
    from paddleslim.quant import quant_post_static

    from kubeslim_job.calibrate import array_loader

    paddle.enable_static()
    try:
        loader = array_loader(x, feed, batch)
        scope = paddle.static.Scope()
        t0 = time.perf_counter()
        with paddle.static.scope_guard(scope):
            quant_post_static(executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=str(fp32),
                              quantize_model_path=str(out), data_loader=loader, model_filename=MODEL,
                              params_filename=PARAMS, save_model_filename=MODEL, save_params_filename=PARAMS,
                              batch_size=batch, batch_nums=-(-len(x) // batch), scope=scope, algo=algo,
                              onnx_format=True)
        return round(time.perf_counter() - t0, 2)
    finally:
        paddle.disable_static()


def same_thresholds(a: Path, b: Path) -> bool:
    """Whether two int8 models quantize the same activations with thresholds equal within 1e-6."""
    from kubeslim_job.ranking import activation_thresholds

    ta, tb = activation_thresholds(str(a)), activation_thresholds(str(b))
    return bool(ta) and ta.keys() == tb.keys() and all(abs(ta[k] - tb[k]) <= 1e-6 * abs(ta[k]) for k in ta)


def main() -> None:
    import paddle

    from kubeslim_job import fast_thresholds

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=32, help="calibration images (the same for every algo)")
    ap.add_argument("--batch", type=int, default=16, help="quantization batch size")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each algo with kubeslim's functions (fastest kept)")
    args = ap.parse_args()
    cpu = _cpu_model()
    print(f"CPU: {cpu}; {os.cpu_count()} cpus; paddle {paddle.__version__}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="kubeslim-bench-calib-"))
    try:
        fp32, x = export_model(tmp, args.samples)
        calibrate(fp32, x, "avg", args.batch, tmp / "warmup")
        seconds: dict[str, dict[str, float]] = {"paddle": {}, "kubeslim": {}}
        with fast_thresholds.paddle_originals():
            for algo in ALGOS:
                seconds["paddle"][algo] = calibrate(fp32, x, algo, args.batch, tmp / "paddle" / algo)
                print(f"paddle   {algo:4s} {seconds['paddle'][algo]:8.2f} s", flush=True)
        if not fast_thresholds.install():
            raise SystemExit(f"fast_thresholds not installed: {fast_thresholds.unverified()} changed")
        runs: dict[str, list[float]] = {algo: [] for algo in ALGOS}
        for _ in range(args.repeats):
            for algo in ALGOS:
                runs[algo].append(calibrate(fp32, x, algo, args.batch, tmp / "kubeslim" / algo))
                print(f"kubeslim {algo:4s} {runs[algo][-1]:8.2f} s", flush=True)
        seconds["kubeslim"] = {algo: min(r) for algo, r in runs.items()}
        fast = seconds["kubeslim"]
        rows = [{"algo": algo, "paddleSeconds": seconds["paddle"][algo], "kubeslimSeconds": fast[algo],
                 "speedup": round(seconds["paddle"][algo] / fast[algo], 2),
                 "kubeslimOverAvg": round(fast[algo] / fast["avg"], 2),
                 "paddleOverAvg": round(seconds["paddle"][algo] / seconds["paddle"]["avg"], 2),
                 "kubeslimRuns": runs[algo],
                 "sameThresholds": same_thresholds(tmp / "paddle" / algo, tmp / "kubeslim" / algo)}
                for algo in ALGOS]
        doc = {"network": ARCHITECTURE, "inputShape": NET_SHAPE, "samples": args.samples, "batchSize": args.batch,
               "rows": rows,
               "targets": {f"{r['algo']}<=2xAvg": r["kubeslimOverAvg"] <= 2.0 for r in rows if r["algo"] != "avg"}
               | {f"sameThresholds:{r['algo']}": r["sameThresholds"] for r in rows},
               "machine": {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
                           "paddle": paddle.__version__}}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(doc, indent=2) + "\n")
        for r in rows:
            print(f"{r['algo']:4s} paddle {r['paddleSeconds']:7.2f} s ({r['paddleOverAvg']}x avg), kubeslim "
                  f"{r['kubeslimSeconds']:6.2f} s ({r['kubeslimOverAvg']}x avg), {r['speedup']}x faster, "
                  f"same thresholds: {r['sameThresholds']}")
        print(f"CPU: {cpu}\nwrote {OUT}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
