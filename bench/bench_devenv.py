#!/usr/bin/env python3
"""Benchmark the devenv: cold build time per tool, warm start time, start-to-ready per component.

    python3 bench/bench_devenv.py [--runs 2] [--out bench/results/devenv.json]

Cold build times are the ones hack/build-tools.sh recorded (<cache>/<tool>-<version>/build.json)
when it built each tool; rebuilding on purpose would cost ~30 CPU-minutes, so this script does not.
Warm starts (binaries cached, no state) run in a throw-away devenv of their own (separate
directory and ports), so a devenv other people are using is left alone. Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"kubernetes": "K8S_VERSION", "etcd": "ETCD_VERSION", "kwok": "KWOK_VERSION",
         "helm": "HELM_VERSION", "versitygw": "VERSITYGW_VERSION"}
# The bench devenv's ports: the defaults (164xx) + 1000, so both can run side by side.
BENCH_PORTS = {"KUBESLIM_APISERVER_PORT": 17443, "KUBESLIM_ETCD_PORT": 17379, "KUBESLIM_ETCD_PEER_PORT": 17380,
               "KUBESLIM_KCM_PORT": 17257, "KUBESLIM_SCHEDULER_PORT": 17259, "KUBESLIM_KWOK_PORT": 17247,
               "KUBESLIM_S3_PORT": 17900}


def versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "hack/versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def build_times(cache: Path) -> dict[str, dict]:
    vers = versions()
    result = {}
    for tool, var in TOOLS.items():
        record = cache / f"{tool}-{vers[var]}" / "build.json"
        result[tool] = json.loads(record.read_text()) if record.is_file() else {
            "version": vers[var], "build_seconds": None, "note": f"no {record}: built before build times were recorded"}
    return result


def run(cmd: list[str], env: dict) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    return round(time.monotonic() - t0, 2)


def leftover_processes(devenv_dir: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(devenv_dir) + "/" in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(proc.name)
            except OSError:
                pass
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench/results/devenv.json"))
    args = ap.parse_args()
    cache = Path(os.environ.get("KUBESLIM_CACHE", Path.home() / ".cache/kubeslim"))

    starts = []
    with tempfile.TemporaryDirectory(prefix="kubeslim-bench-") as tmp:
        env = {**os.environ, **{k: str(v) for k, v in BENCH_PORTS.items()}, "KUBESLIM_DEVENV_DIR": f"{tmp}/devenv"}
        devenv = [str(REPO / "hack/devenv.sh")]
        run([*devenv, "up"], env)  # builds missing tools first; not timed
        run([*devenv, "down"], env)
        for i in range(args.runs):
            up = run([*devenv, "up"], env)
            timings = json.loads(Path(f"{tmp}/devenv/timings.json").read_text())
            down = run([*devenv, "down"], env)
            left = leftover_processes(Path(f"{tmp}/devenv"))
            starts.append({"run": i + 1, "up_wall_seconds": up, "down_wall_seconds": down,
                           "start_to_ready_seconds": timings["start_to_ready_seconds"],
                           "processes_left_after_down": left})
            print(f"[bench] run {i + 1}: up {up}s, down {down}s, left behind: {left or 'none'}", file=sys.stderr)

    builds = build_times(cache)
    components = sorted({c for s in starts for c in s["start_to_ready_seconds"]})
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cold_build_seconds": {t: b.get("build_seconds") for t, b in builds.items()},
        "cold_build_total_seconds": sum(b["build_seconds"] or 0 for b in builds.values()),
        "cold_build_records": builds,
        "warm_start_seconds_median": round(statistics.median(s["up_wall_seconds"] for s in starts), 2),
        "start_to_ready_seconds_median": {
            c: round(statistics.median(s["start_to_ready_seconds"][c] for s in starts if c in s["start_to_ready_seconds"]), 2)
            for c in components},
        "runs": starts,
        "notes": "warm start = hack/devenv.sh up with binaries cached and no prior state, in a separate devenv "
                 "(ports 17xxx); start_to_ready = seconds from the start of `up` until each component's health "
                 "endpoint answered (a process serving /healthz, not yet its work: kube-controller-manager answers before "
                 "the apiserver is up; default-serviceaccount = its controllers have done work and pods are admissible; "
                 "kwok-nodes-ready = the fake nodes are Ready). Cold build seconds come from build.json records "
                 "written by hack/build-tools.sh when it built each tool.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cold_build_seconds", "warm_start_seconds_median",
                                            "start_to_ready_seconds_median")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
