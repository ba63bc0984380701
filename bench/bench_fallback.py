"""Benchmark of accuracy-aware quantization (`make bench-fallback`) -> bench/results/fallback.json.

Against the devenv S3 (`make devenv` first), on the outlier-channel digits CNN of
kubeslim_dev.outliers (trained here, not timed): the real `kubeslim-job run` CLI three times on the
same model and data (256 calibration digits, hist; 540 held-out digits; gate 0.02 top-1):

- accuracyControl off: plain PTQ's accuracy (the gate fails);
- onGateFailure (the default): the accuracy after fallback, the layers kept in fp32, the latency
  cost against plain int8, the fallback's own seconds and the run's wall time;
- always, maxFp32Layers 2: the whole accuracy / latency curve against the number of fp32 layers.

and on resnet50 (issue 17 item 2: does a real-size network's fallback finish within 600 s on 2
cores?): paddle.vision's resnet50 through the same CLI with bench_pipeline's seeded weights and
synthetic images (16 calibration images, avg; 32 evaluation images, metric agreement, gate
maxAccuracyDrop 0.01, which plain PTQ of these weights misses), accuracyControl onGateFailure with
its default maxFp32Layers 8 and maxSeconds 1800: the ranking (54 layers: from recorded
activations, ranking.py), every step's fp32 layer count, agreement and calibration seconds (from
its report.json), the rest (ranking and verifications) and the fallback's total.

    bench/bench_fallback.py [--only digits|resnet50]

speedAware is off in these runs: they time the fallback alone.

Latency is timed with the job's default budget (KUBESLIM_LATENCY_SECONDS unset), 2 threads.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from kubeslim_dev import devenv, digits, outliers  # noqa: E402

OUT = REPO / "bench" / "results" / "fallback.json"
GATE = 0.02


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["digits", "resnet50"], help="run one part, keep the other's figures in fallback.json")
    args = ap.parse_args()
    try:
        env_s3 = devenv.s3_env()
    except FileNotFoundError as exc:
        sys.exit(f"{exc.filename} is missing: start the devenv first (make devenv)")
    s3 = devenv.s3_client(env_s3)
    previous = json.loads(OUT.read_text()) if args.only and OUT.exists() else {}
    doc = digits_part(s3, env_s3) if args.only in (None, "digits") else {k: v for k, v in previous.items() if k != "resnet50"}
    doc["resnet50"] = resnet50_part(s3, env_s3) if args.only in (None, "resnet50") else previous.get("resnet50")
    doc["host"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "int8": int8_instructions()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


def int8_instructions() -> list[str]:
    """The CPU's int8 dot-product instruction sets (what oneDNN's int8 speed depends on)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]


def resnet50_part(s3, env_s3: dict[str, str]) -> dict:
    import bench_pipeline as bp     # its seeded weights and synthetic images (bench/ is this script's path)

    bucket = f"bench-fallback-r50-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            calib_images, classes = bp.synthetic_images(1, 16)
            bp.seeded_weights("resnet50", calib_images, classes, Path(tmp) / "resnet50.pdparams")
            s3.upload_file(str(Path(tmp) / "resnet50.pdparams"), bucket, "nets/resnet50.pdparams")
        bp.upload_images(s3, bucket, "nets/calibration", calib_images)
        bp.upload_images(s3, bucket, "nets/evaluation", bp.synthetic_images(2, bp.NET_EVAL_IMAGES)[0])
        b = f"s3://{bucket}"
        spec = {
            "model": {"builtin": {"architecture": "resnet50", "weights": f"{b}/nets/resnet50.pdparams", "numClasses": 1000},
                      "inputShape": bp.NET_SHAPE},
            "data": {"calibration": {"uri": f"{b}/nets/calibration/", "format": "imagePrefix"},
                     "evaluation": {"uri": f"{b}/nets/evaluation/", "format": "imagePrefix"}},
            "quantization": {"algos": ["avg"], "batchSize": 8, "batchNums": 2, "speedAware": "off",
                             "accuracyControl": {"mode": "onGateFailure"}},
            "verification": {"metric": "agreement", "maxAccuracyDrop": 0.01, "batchSize": bp.NET_BATCH, "backend": "cpu"},
            "output": {"uri": f"{b}/out/"},
            "storage": {"addressingStyle": "path"},
        }
        out = _run_cli("resnet50", {"apiVersion": "kubeslim.io/v1alpha1", "kind": "QuantizationJob",
                                    "metadata": {"name": "resnet50"}, "spec": spec}, env_s3)
        # the report keeps what the result leaves out: each step's calibration seconds
        report = json.loads(s3.get_object(Bucket=bucket, Key="out/report.json")["Body"].read())
    finally:
        devenv.remove_bucket(s3, bucket)
    fb = out["fallback"]
    print(f"resnet50: {json.dumps(out['summary'])}", flush=True)
    steps = [c for c in report["candidates"] if c.get("fp32Layers")]
    step_calibration = sum(c.get("calibrationSeconds") or 0.0 for c in steps)
    return {
        "model": "paddle.vision resnet50, seeded weights (bench_pipeline.seeded_weights), 3x224x224",
        "calibration": "16 synthetic images, avg", "evaluation": f"{bp.NET_EVAL_IMAGES} synthetic images, agreement <= 0.01",
        "fallback_seconds": fb.get("seconds"), "within_600_s": fb.get("seconds") is not None and fb["seconds"] <= 600,
        "ranked_layers": fb.get("rankedLayers"), "steps": fb.get("steps"), "stop_reason": fb.get("stopReason"),
        "passed": fb.get("passed"), "plain_agreement_drop": fb.get("plainAccuracyDrop"),
        "step_fp32_layers": [c.get("fp32Layers") for c in steps],
        "step_calibration_seconds": [c.get("calibrationSeconds") for c in steps],
        "step_agreement": [c.get("agreement") for c in steps],
        # the rest of the fallback's seconds: the ranking and each step's verification
        "ranking_and_verification_seconds": round(fb["seconds"] - step_calibration, 1) if fb.get("seconds") else None,
        "wall_s": out["summary"]["wall_s"],
        "run": out,
    }


def digits_part(s3, env_s3: dict[str, str]) -> dict:
    bucket = f"bench-fallback-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    try:
        seeded = outliers.seed(s3, bucket, "outlier", calib_samples=256)
        runs = {}
        for name, ctl in (("off", {"mode": "off"}), ("onGateFailure", {}),
                          ("always", {"mode": "always", "maxFp32Layers": 2})):
            runs[name] = run(name, seeded, bucket, ctl, env_s3)
            print(f"{name}: {json.dumps(runs[name]['summary'])}", flush=True)
    finally:
        devenv.remove_bucket(s3, bucket)
    on = runs["onGateFailure"]["summary"]
    doc = {
        "model": "digits CNN with one massive-activation channel (kubeslim_dev.outliers)",
        "outlier": {"channel": seeded["channel"], "gain": round(seeded["gain"], 2), "layer": seeded["outlier_layer"],
                    "ratio_to_largest_other_channel": outliers.OUTLIER_RATIO},
        "gate_max_accuracy_drop": GATE,
        "fp32_top1": on["fp32_top1"],
        "plain_ptq_top1": runs["off"]["summary"]["int8_top1"],
        "plain_ptq_gate_passed": runs["off"]["summary"]["gate_passed"],
        "fallback_top1": on["int8_top1"],
        "fallback_gate_passed": on["gate_passed"],
        "fp32_layers_kept": on["fp32_layers"],
        "latency_cost": on["latency_cost"],
        "speedup_vs_fp32_plain": runs["off"]["summary"]["speedup"],
        "speedup_vs_fp32_fallback": on["speedup"],
        "fallback_seconds": on["fallback_seconds"],
        "run_seconds": {k: v["summary"]["wall_s"] for k, v in runs.items()},
        "runs": runs,
    }
    return doc


def run(name: str, seeded: dict, bucket: str, ctl: dict, env_s3: dict[str, str]) -> dict:
    m = digits.manifest(name, seeded["model"], seeded["calibration"], seeded["evaluation"],
                        f"s3://{bucket}/out/{name}/", ["hist"], batch_size=32, batch_nums=8, max_drop=GATE,
                        **{"quantization.accuracyControl": ctl, "quantization.speedAware": "off"})
    return _run_cli(name, m, env_s3)


def _run_cli(name: str, m: dict, env_s3: dict[str, str]) -> dict:
    """`kubeslim-job run` on the manifest m: the result's figures, or exit naming the failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBESLIM_"))}
    env.update(env_s3)
    env["PYTHONPATH"] = str(REPO / "job_image")
    with tempfile.TemporaryDirectory() as tmp:
        mf, res = Path(tmp) / "job.yaml", Path(tmp) / "result.json"
        mf.write_text(json.dumps(m))
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "kubeslim_job.cli", "run", "-f", str(mf), "--result", str(res),
                               "--work-dir", str(Path(tmp) / "work")], env=env, capture_output=True, text=True)
        wall = round(time.monotonic() - t0, 2)
        if not res.exists():
            sys.exit(f"{name}: no result (exit {proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(res.read_text())
    r = result.get("results") or {}
    fb = r.get("fallback") or {}
    return {
        "exit_code": proc.returncode,
        "summary": {
            "wall_s": wall, "gate_passed": (result.get("gate") or {}).get("passed"),
            "fp32_top1": r.get("fp32", {}).get("top1"), "int8_top1": (r.get("int8") or {}).get("top1"),
            "speedup": r.get("speedup"), "fp32_layers": fb.get("fp32Layers"), "latency_cost": fb.get("latencyCost"),
            "fallback_seconds": fb.get("seconds"), "stop_reason": fb.get("stopReason"),
        },
        "fallback": fb,
        "candidates": r.get("candidates"),
        "fp32": r.get("fp32"),
    }


if __name__ == "__main__":
    main()
