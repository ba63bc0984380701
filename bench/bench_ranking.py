"""Benchmark of the fallback's layer ranking from recorded activations (kubeslim_job.ranking)
-> bench/results/ranking.json.

Per network: one calibration (hist, as the fallback's plain candidate), then rank_layers over the
ranking samples; its seconds against that calibration's (target, issue 17 item 2: at most two
calibrations' time however many layers). The per-layer ranking of fallback.py costs one
calibration per layer; that figure is layers x the calibration's seconds, an estimate (not run).

- resnet50 at 3x224x224 (bench-pipeline's seeded weights and synthetic images): 16 calibration
  images (batch 8 x 2, as bench-pipeline), 32 ranking images;
- the outlier digits CNN of kubeslim_dev.outliers: 256 calibration digits, 256 ranking digits;
  whether the layer that reads the outlier channel ranks first (the one to keep in fp32).

    bench/bench_ranking.py
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

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

from bench_calibration import calibrate, export_model  # noqa: E402
from bench_pipeline import _cpu_model  # noqa: E402

OUT = REPO / "bench" / "results" / "ranking.json"
OP_TYPES = ["conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2"]


class Batches:
    """The one method of data.TensorFile that rank_layers reads: ({feed: batch}, labels) batches."""

    def __init__(self, feed: str, x: np.ndarray):
        self.feed, self.x = feed, x

    def batches(self, batch_size: int):
        for i in range(0, len(self.x), batch_size):
            yield {self.feed: self.x[i:i + batch_size]}, None


def ranked(fp32: Path, int8: Path, samples: Batches, batch: int) -> tuple[list, float]:
    from kubeslim_job import fallback, ranking

    with fallback._program(str(fp32 / "model.pdmodel")) as program:
        layers = fallback.quantizable_layers(program, OP_TYPES, [])
    t0 = time.perf_counter()
    errors = ranking.rank_layers(str(fp32), str(int8), layers, OP_TYPES, samples, batch)
    return errors, round(time.perf_counter() - t0, 2)


def row(name: str, calibration_s: float, errors: list, ranking_s: float, **extra) -> dict:
    out = {"network": name, "layers": len(errors), "calibrationSeconds": calibration_s, "rankingSeconds": ranking_s,
           "rankingOverCalibration": round(ranking_s / calibration_s, 2),
           "perLayerRankingEstimateSeconds": round(len(errors) * calibration_s, 1),
           "top": [{"layer": e.layer, "relativeError": e.relative_error} for e in errors[:5]], **extra}
    print(f"{name}: {out['layers']} layers, calibration {calibration_s} s, ranking {ranking_s} s "
          f"({out['rankingOverCalibration']}x), per-layer ranking ~{out['perLayerRankingEstimateSeconds']} s", flush=True)
    return out


def resnet50_row(tmp: Path) -> dict:
    (tmp / "resnet50").mkdir()
    fp32, x = export_model(tmp / "resnet50", 48, "resnet50")
    calib, evaluation = x[:16], x[16:]
    calibrate(fp32, calib[:8], "avg", 8, tmp / "resnet50" / "warmup")
    calibration_s = calibrate(fp32, calib, "hist", 8, tmp / "resnet50" / "int8")
    errors, ranking_s = ranked(fp32, tmp / "resnet50" / "int8", Batches("x", evaluation), 8)
    return row("resnet50", calibration_s, errors, ranking_s, calibrationImages=16, rankingImages=len(evaluation))


def outlier_row(tmp: Path) -> dict:
    from kubeslim_dev import digits, outliers

    d = digits.load()
    _, model, _ = outliers.trained(d)
    fp32 = tmp / "outlier" / "fp32"
    outliers.save_inference(model, str(fp32 / "model"))
    calibration_s = calibrate(fp32, digits.to_tensor(d["train_x"][:256]), "hist", 32, tmp / "outlier" / "int8", "image")
    errors, ranking_s = ranked(fp32, tmp / "outlier" / "int8", Batches("image", digits.to_tensor(d["test_x"][:256])), 32)
    outlier = outliers.conv2_weight(str(fp32 / "model.pdmodel"))
    return row("outlier digits CNN", calibration_s, errors, ranking_s, outlierLayer=outlier,
               outlierRanksFirst=errors[0].layer == outlier, calibrationImages=256, rankingImages=256)


def main() -> None:
    import paddle

    from kubeslim_job import fast_thresholds

    fast_thresholds.install()        # the calibrations run as the calibrate stage runs them
    cpu = _cpu_model()
    print(f"CPU: {cpu}; {os.cpu_count()} cpus; paddle {paddle.__version__}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="kubeslim-bench-rank-"))
    try:
        rows = [outlier_row(tmp), resnet50_row(tmp)]
        doc = {"rows": rows,
               "targets": {f"ranking<=2xCalibration:{r['network']}": r["rankingOverCalibration"] <= 2.0 for r in rows}
               | {"outlierRanksFirst": rows[0]["outlierRanksFirst"]},
               "machine": {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
                           "paddle": paddle.__version__}}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"CPU: {cpu}\nwrote {OUT}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
