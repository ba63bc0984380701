#!/usr/bin/env python3
"""Benchmark the devenv: cold build time per tool, image builds, warm start time, start-to-ready
per component (the real node included).

    python3 bench/bench_devenv.py [--runs 2] [--out bench/results/devenv.json]

Cold build times are the ones hack/build-tools.sh recorded (<cache>/<tool>-<version>/build.json)
when it built each tool; rebuilding on purpose would cost ~30 CPU-minutes, so this script does not.
Images: a cold build (`docker build --no-cache`, base and wheelhouse present) and a cached one of
each target into throw-away tags, and the import of the job image into the node's containerd.
Warm starts cycle the devenv itself (`devenv/devenv.sh down` + `up`; the real node is one per host,
so no second devenv can run beside it): a devenv in use is restarted, and left running at the end.
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVENV = Path(os.environ.get("KUBESLIM_DEVENV_DIR", REPO / ".devenv"))
TOOLS = {"kubernetes": "K8S_VERSION", "etcd": "ETCD_VERSION", "kwok": "KWOK_VERSION",
         "helm": "HELM_VERSION", "versitygw": "VERSITYGW_VERSION", "gitops-judges": "ARGOCD_VERSION",
         "kueue": "KUEUE_VERSION"}


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


def image_builds(info: dict) -> dict:
    """Cold and cached `docker build` of each target, and the job image's import, in bench tags."""
    images = dict(line.split("=", 1) for line in (DEVENV / "images.env").read_text().splitlines() if "=" in line)
    env = {**os.environ, "DOCKER_HOST": f"unix://{info['node']['docker']}", "DOCKER_BUILDKIT": "1"}
    docker = ["/usr/bin/docker"]
    base, wheelhouse = images["KUBESLIM_BASE_IMAGE"], images["KUBESLIM_WHEELHOUSE_IMAGE"]
    build_args = ["--network", "none", "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"WHEELHOUSE={wheelhouse}",
                  "--build-arg", "PIP_OFFLINE=1"]
    out: dict = {}
    for target in ("operator", "job-cpu"):
        tag = f"kubeslim.local/bench-{target}:bench"
        out[target] = {
            "cold_seconds": run([*docker, "build", "--no-cache", "--target", target, "-t", tag, *build_args, str(REPO)], env),
            "cached_seconds": run([*docker, "build", "--target", target, "-t", tag, *build_args, str(REPO)], env),
        }
    size = subprocess.run([*docker, "image", "inspect", "-f", "{{.Size}}", "kubeslim.local/bench-job-cpu:bench"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    ctr = ["ctr", "--address", info["node"]["containerd"], "-n", "k8s.io"]
    t0 = time.monotonic()
    save = subprocess.Popen([*docker, "save", "kubeslim.local/bench-job-cpu:bench"], env=env, stdout=subprocess.PIPE)
    subprocess.run([*ctr, "images", "import", "-"], stdin=save.stdout, check=True, capture_output=True)
    save.wait()
    out["job-cpu"]["import_seconds"] = round(time.monotonic() - t0, 2)
    out["job-cpu"]["size_bytes"] = int(size)
    subprocess.run([*ctr, "images", "rm", "kubeslim.local/bench-job-cpu:bench"], capture_output=True)
    subprocess.run([*docker, "rmi", "kubeslim.local/bench-operator:bench", "kubeslim.local/bench-job-cpu:bench"], env=env, capture_output=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench/results/devenv.json"))
    args = ap.parse_args()
    cache = Path(os.environ.get("KUBESLIM_CACHE", Path.home() / ".cache/kubeslim"))

    devenv = [str(REPO / "devenv/devenv.sh")]
    env = dict(os.environ)
    run([*devenv, "up"], env)  # builds missing tools and images first; not timed
    info = json.loads((DEVENV / "devenv.json").read_text())
    images = image_builds(info)
    print(f"[bench] images: {images}", file=sys.stderr)
    starts = []
    for i in range(args.runs):
        down = run([*devenv, "down"], env)
        up = run([*devenv, "up"], env)
        timings = json.loads((DEVENV / "timings.json").read_text())
        node = json.loads((DEVENV / "node" / "timings.json").read_text())
        # Kueue on the fresh devenv (devenv/kueue.sh): CRDs + webhooks applied, controller ready, its
        # webhook answering through the Service; then its down, which deletes all of it.
        kueue_up = run([str(REPO / "devenv/kueue.sh"), "up"], env)
        kueue = {"up_wall_seconds": kueue_up, **json.loads((DEVENV / "kueue" / "timings.json").read_text()),
                 "down_wall_seconds": run([str(REPO / "devenv/kueue.sh"), "down"], env)}
        starts.append({"run": i + 1, "up_wall_seconds": up, "down_wall_seconds": down,
                       "start_to_ready_seconds": timings["start_to_ready_seconds"], "real_node": node, "kueue": kueue})
        print(f"[bench] run {i + 1}: down {down}s (host state verified), up {up}s", file=sys.stderr)

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
        "images": images,
        "real_node_seconds_median": {k: round(statistics.median(s["real_node"][k] for s in starts), 2) for k in starts[0]["real_node"]},
        "kueue_seconds_median": {k: round(statistics.median(s["kueue"][k] for s in starts), 2)
                                 for k in starts[0]["kueue"] if k != "version"},
        "runs": starts,
        "notes": "warm start = devenv/devenv.sh up with binaries and images cached and no prior state, right after "
                 "devenv/devenv.sh down (which fails unless the host is as before); real_node: daemons = bridge + "
                 "containerd + dockerd up, kubelet_registered / node_ready counted from the kubelet's start; start_to_ready = seconds from the start of `up` until each component's health "
                 "endpoint answered (a process serving /healthz, not yet its work: kube-controller-manager answers before "
                 "the apiserver is up; default-serviceaccount = its controllers have done work and pods are admissible; "
                 "kwok-nodes-ready = the fake nodes are Ready). Cold build seconds come from build.json records "
                 "written by hack/build-tools.sh when it built each tool.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cold_build_seconds", "images", "warm_start_seconds_median",
                                            "real_node_seconds_median", "kueue_seconds_median",
                                            "start_to_ready_seconds_median")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
