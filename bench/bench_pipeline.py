"""Benchmark of the job pipeline (`make bench-pipeline`) -> bench/results/pipeline.json.

Against the devenv S3 (.devenv/s3.env; `make devenv` first), on scikit-learn digits and the small
CNN of kubeslim_dev.digits (trained here, not timed), each stage run as its own process the way the
pod runs it (so every stage pays its imports):

- wall time per stage and in total for one algo (hist) and for four (hist, avg, mse, abs_max);
  calibration 320 samples (batchSize 32 x batchNums 10), evaluation 540 held-out PNGs (imageList);
- S3 bytes read against the bytes of the samples used, per dataset (npz calibration by Range GETs,
  imageList evaluation incl. the list file);
- peak RSS of the verify stage for a 1k- and a 10k-image evaluation set (the same 10k npz, limit
  1000 vs none).

Targets (issue 4, 2 cores): one algo <= 60 s end to end; four algos <= 2x one; bytes read <= 1.2x
bytes used; peak RSS at 10k within 10% of 1k.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "job_image"))

from kubeslim_dev import devenv, digits  # noqa: E402

OUT = REPO / "bench" / "results" / "pipeline.json"
FOUR = ["hist", "avg", "mse", "abs_max"]


def s3_env() -> dict[str, str]:
    try:
        return devenv.s3_env()
    except FileNotFoundError as exc:
        sys.exit(f"{exc.filename} is missing: start the devenv first (make devenv)")


# Linux records the pre-exec hiwater RSS of a forked child in its ru_maxrss, so a stage forked from
# this (paddle-loaded) process would report our RSS. A small launcher forks the stage instead and
# reports the stage's own peak.
_LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, st, ru = os.wait4(p.pid, 0); "
             "open(sys.argv[1], 'w').write(str(ru.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(st))")


def stage_rss(command: str, spec: dict, work: Path, env: dict[str, str]) -> tuple[float, int, dict]:
    """Run one pod stage as its own process: wall seconds (imports included), peak RSS in bytes and
    its result message."""
    msg = work.parent / f"{work.name}-{command}.msg"
    rss_file = work.parent / f"{work.name}-{command}.rss"
    env = {**env, "KUBESLIM_SPEC": json.dumps(spec)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(rss_file), sys.executable, "-m", "kubeslim_job.cli",
                           command, "--work-dir", str(work), "--termination-log", str(msg)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{command} failed ({proc.returncode}): "
                 f"{msg.read_text() if msg.exists() else proc.stderr.decode()[-3000:]}")
    return wall, int(rss_file.read_text()) * 1024, json.loads(msg.read_text())


def pipeline(spec: dict, work: Path, env: dict[str, str]) -> dict:
    stages = {}
    for name in ("export", "calibrate", "verify"):
        wall, rss, result = stage_rss(name, spec, work, env)
        stages[name] = {"seconds": round(wall, 3), "peakRssBytes": rss, "details": result.get("details", {})}
        if name == "verify":
            final = result
    total = sum(s["seconds"] for s in stages.values())
    r = final["results"]
    return {
        "algos": spec["quantization"]["algos"],
        "stages": {k: {"seconds": v["seconds"], "peakRssBytes": v["peakRssBytes"]} for k, v in stages.items()},
        "totalSeconds": round(total, 3),
        "results": {"backend": r["backend"], "fp32": r["fp32"], "int8": r["int8"], "speedup": r.get("speedup"),
                    "candidates": r["candidates"]},
        "_details": {k: v["details"] for k, v in stages.items()},
    }


def main() -> None:
    import boto3
    import paddle
    from botocore.config import Config

    env_s3 = s3_env()
    s3 = boto3.client("s3", endpoint_url=env_s3["AWS_ENDPOINT_URL"], aws_access_key_id=env_s3["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env_s3["AWS_SECRET_ACCESS_KEY"],
                      region_name=env_s3.get("AWS_DEFAULT_REGION", "us-east-1"),
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBESLIM_"))}
    env.update(env_s3)
    env["PYTHONPATH"] = str(REPO / "job_image")

    tmp = Path(tempfile.mkdtemp(prefix="kubeslim-bench-"))
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    try:
        print("setup: training the digits CNN and uploading data ...", file=sys.stderr, flush=True)
        d = digits.load()
        cnn = digits.train(digits.small_cnn(), d)
        paddle.save(cnn.state_dict(), str(tmp / "cnn.pdparams"))
        s3.upload_file(str(tmp / "cnn.pdparams"), bucket, "models/cnn.pdparams")
        s3.put_object(Bucket=bucket, Key="code/small_cnn.py", Body=digits.SMALL_CNN_SOURCE.encode())
        s3.put_object(Bucket=bucket, Key="data/test.npz", Body=digits.npz_bytes(d["test_x"], d["test_y"], "NHWC"))
        s3.put_object(Bucket=bucket, Key="data/train.npz", Body=digits.npz_bytes(d["train_x"], d["train_y"], "NCHW"))
        digits.upload_image_list(s3, bucket, "data/train-png", d["train_x"][:320], d["train_y"][:320])
        digits.upload_image_list(s3, bucket, "data/test-png", d["test_x"], d["test_y"])
        reps = -(-10000 // len(d["test_y"]))
        big_x, big_y = np.tile(d["test_x"], (reps, 1, 1))[:10000], np.tile(d["test_y"], reps)[:10000]
        s3.put_object(Bucket=bucket, Key="data/test-10k.npz", Body=digits.npz_bytes(big_x, big_y))
        b = f"s3://{bucket}"
        model = {"custom": {"code": f"{b}/code/small_cnn.py", "weights": f"{b}/models/cnn.pdparams"}}
        calib_npz = {"uri": f"{b}/data/train.npz", "format": "npz"}
        calib_png = {"uri": f"{b}/data/train-png/", "format": "imageList", "listFile": "list.txt"}
        eval_png = {"uri": f"{b}/data/test-png/", "format": "imageList", "listFile": "list.txt"}
        eval_npz = {"uri": f"{b}/data/test.npz", "format": "npz"}

        def spec_for(algos, calib, evaluation, out):
            return digits.manifest("bench", model, calib, evaluation, f"{b}/out/{out}/", algos,
                                   batch_size=32, batch_nums=10)["spec"]

        print("one algo ...", file=sys.stderr, flush=True)
        one = pipeline(spec_for(["hist"], calib_npz, eval_png, "one"), tmp / "one", env)
        print("four algos ...", file=sys.stderr, flush=True)
        four = pipeline(spec_for(FOUR, calib_png, eval_npz, "four"), tmp / "four", env)

        def bytes_row(fmt: str, details: dict) -> dict:
            return {"format": fmt, "samples": details.get("samples") or details.get("evalSamples"),
                    "bytesRead": details["bytesRead"], "bytesUsed": details["bytesUsed"],
                    "ratio": round(details["bytesRead"] / details["bytesUsed"], 4)}

        io_rows = {
            "calibration-npz": bytes_row("npz", one["_details"]["calibrate"]),
            "calibration-imageList": bytes_row("imageList", four["_details"]["calibrate"]),
            "evaluation-imageList": bytes_row("imageList", one["_details"]["verify"]),
            "evaluation-npz": bytes_row("npz", four["_details"]["verify"]),
        }

        print("peak RSS 1k vs 10k ...", file=sys.stderr, flush=True)
        rss = {}
        for label, limit in (("1k", 1000), ("10k", None)):
            work = tmp / f"rss-{label}"
            shutil.copytree(tmp / "one", work, ignore=shutil.ignore_patterns("evaluation"))
            ev = {"uri": f"{b}/data/test-10k.npz", "format": "npz", **({"limit": limit} if limit else {})}
            wall, peak, result = stage_rss("verify", spec_for(["hist"], calib_npz, ev, f"rss-{label}"), work, env)
            det = result["details"]
            rss[label] = {"evalSamples": det["evalSamples"], "peakRssBytes": peak, "seconds": round(wall, 3),
                          "bytesRead": det["bytesRead"], "bytesUsed": det["bytesUsed"]}
        io_rows["evaluation-npz-1k-of-10k"] = {"format": "npz", "samples": rss["1k"]["evalSamples"],
                                               "bytesRead": rss["1k"]["bytesRead"], "bytesUsed": rss["1k"]["bytesUsed"],
                                               "ratio": round(rss["1k"]["bytesRead"] / rss["1k"]["bytesUsed"], 4)}
        rss_ratio = rss["10k"]["peakRssBytes"] / rss["1k"]["peakRssBytes"]
        ratio_four = four["totalSeconds"] / one["totalSeconds"]
        max_bytes_ratio = max(r["ratio"] for r in io_rows.values())
        for p in (one, four):
            p.pop("_details")
        doc = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "paddle": paddle.__version__,
                        "s3": "devenv versitygw (loopback)"},
            "workload": {"dataset": "sklearn digits 8x8 upscaled to 28x28 (1797 images)", "model": "small CNN (custom code)",
                         "calibrationSamples": 320, "evaluationSamples": 540, "verificationBatchSize": 64,
                         "latencySecondsPerModel": float(os.environ.get("KUBESLIM_LATENCY_SECONDS", "1.5"))},
            "oneAlgo": one,
            "fourAlgos": four,
            "fourOverOne": round(ratio_four, 3),
            "s3Bytes": io_rows,
            "peakRss": {**rss, "ratio10kOver1k": round(rss_ratio, 4)},
            "targets": {
                "oneAlgoTotalSeconds<=60": one["totalSeconds"] <= 60,
                "fourAlgos<=2xOne": ratio_four <= 2.0,
                "bytesRead<=1.2xBytesUsed": max_bytes_ratio <= 1.2,
                "peakRss10k<=1.1x1k": rss_ratio <= 1.1,
            },
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps({k: doc[k] for k in ("fourOverOne", "targets")}, indent=2))
        print(f"one algo: {one['totalSeconds']} s {one['stages']}; four: {four['totalSeconds']} s; wrote {OUT}")
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
