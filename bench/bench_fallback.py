"""Benchmark of accuracy-aware quantization (`make bench-fallback`) -> bench/results/fallback.json.

Against the devenv S3 (`make devenv` first), on the outlier-channel digits CNN of
kubeslim_dev.outliers (trained here, not timed): the real `kubeslim-job run` CLI three times on the
same model and data (256 calibration digits, hist; 540 held-out digits; gate 0.02 top-1):

- accuracyControl off: plain PTQ's accuracy (the gate fails);
- onGateFailure (the default): the accuracy after fallback, the layers kept in fp32, the latency
  cost against plain int8, the fallback's own seconds and the run's wall time;
- always, maxFp32Layers 2: the whole accuracy / latency curve against the number of fp32 layers.

Latency is timed with the job's default budget (KUBESLIM_LATENCY_SECONDS unset), 2 threads.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

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
    try:
        env_s3 = devenv.s3_env()
    except FileNotFoundError as exc:
        sys.exit(f"{exc.filename} is missing: start the devenv first (make devenv)")
    s3 = devenv.s3_client(env_s3)
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
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
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
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


def run(name: str, seeded: dict, bucket: str, ctl: dict, env_s3: dict[str, str]) -> dict:
    m = digits.manifest(name, seeded["model"], seeded["calibration"], seeded["evaluation"],
                        f"s3://{bucket}/out/{name}/", ["hist"], batch_size=32, batch_nums=8, max_drop=GATE,
                        **{"quantization.accuracyControl": ctl})
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
