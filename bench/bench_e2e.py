"""make bench-e2e: time from `kubectl apply` to Succeeded for the demo's QuantizationJob (one algo
and a four-algo sweep) on the devenv's real node, and where the time goes: operator, Job
controller, scheduler, container start before each stage, the three stages, and the status
report. Then the four-algo sweep with spec.quantization.parallelism 1 and 4 against one algo, every
pod at SWEEP_RESOURCES (issue 17 item 4: the parallel sweep within 1.3 x one algo), with when each
index ran and how many pods ran at once. Writes bench/results/e2e.json.

Times are taken by this process polling the API every 50 ms (object timestamps have one-second
resolution); what the kubelet reports reaches the API after its PLEG relist (up to ~1 s), so
container-start splits carry that much. Runs with the operator image installed by Helm on the
real node and the job image built from the Dockerfile, exactly as `make demo` does."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client, config

from kubeslim_api.contract import STAGES
from kubeslim_dev import demo, devenv

from bench_pipeline import _cpu_model  # the CPU line every benchmark prints

REPO = Path(__file__).resolve().parents[1]
NS, RELEASE_NS, BUCKET = "kubeslim-bench-e2e", "kubeslim-bench-e2e-system", "kubeslim-bench"
ENV = devenv.s3_env()
DEVENV = devenv.info()


def sh(*args: str, **kw) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def kubectl(*args: str, input: str | None = None) -> str:
    return sh(DEVENV["bin"]["kubectl"], "--kubeconfig", str(REPO / ".devenv" / "kubeconfig"), *args, input=input)


def setup() -> None:
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": NS},
              "stringData": {k: ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
    kubectl("apply", "-f", "-", input=json.dumps(secret))
    sh(DEVENV["bin"]["helm"], "--kubeconfig", str(REPO / ".devenv" / "kubeconfig"), "upgrade", "--install", "kubeslim-bench",
       str(REPO / "helm" / "kubeslim"), "-n", RELEASE_NS, "--create-namespace", "-f", str(REPO / "devenv" / "chart-values.yaml"),
       "-f", str(REPO / ".devenv" / "values-images.yaml"),
       "--set", f"operator.watchNamespaces={{{NS}}}", "--wait", "--timeout", "180s")
    demo.seed(devenv.s3_client(ENV), BUCKET, "digits")


# The sweep comparison (issue 17 item 4): every pod of its three runs at this size, so that four fit
# the real node's 2 CPUs at once beside the operator's 100m (the demo's own 1 CPU fits one).
SWEEP_RESOURCES = {"gpu": 1, "cpu": "450m", "memory": "2Gi"}
SWEEP_ALGOS = ["hist", "avg", "mse", "abs_max"]
INDEX = "batch.kubernetes.io/job-completion-index"


def manifest(name: str, algos: list[str], parallelism: int = 1, resources: dict | None = None) -> dict:
    doc = demo.example_manifest(name, BUCKET, ENV["AWS_ENDPOINT_URL"])
    doc["metadata"]["namespace"] = NS
    doc["spec"]["quantization"]["algos"] = algos
    doc["spec"]["quantization"]["parallelism"] = parallelism
    if resources:
        doc["spec"]["resources"] = resources
    return doc


def run_one(name: str, algos: list[str], batch: client.BatchV1Api, core: client.CoreV1Api, custom: client.CustomObjectsApi,
            parallelism: int = 1, resources: dict | None = None) -> dict:
    kubectl("-n", NS, "delete", "qj", name, "--ignore-not-found", "--cascade=foreground", "--wait=true")
    marks: dict[str, float] = {}
    running_at_once = 0
    per_index: dict[int, dict[str, float]] = {}

    def mark(key: str) -> None:
        marks.setdefault(key, time.monotonic())

    t0 = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(manifest(name, algos, parallelism, resources)))
    marks["applied"] = time.monotonic()
    deadline, next_progress = t0 + 900, t0 + 10
    print(f"{name}: {len(algos)} algo(s), parallelism {parallelism}", flush=True)
    while time.monotonic() < deadline:
        qj = custom.get_namespaced_custom_object("kubeslim.io", "v1alpha1", NS, "quantizationjobs", name)
        jobs = batch.list_namespaced_job(NS, label_selector=f"kubeslim.io/quantizationjob-uid={qj['metadata']['uid']}").items
        if jobs:
            mark("job_created")
            pods = core.list_namespaced_pod(NS, label_selector=f"batch.kubernetes.io/job-name={jobs[0].metadata.name}").items
            # An Indexed Job's pods: when each index ran, and how many ran at once.
            running_at_once = max(running_at_once, sum(p.status.phase == "Running" for p in pods))
            for p in pods:
                if INDEX in (p.metadata.labels or {}):
                    at = per_index.setdefault(int(p.metadata.labels[INDEX]), {})
                    at.setdefault("created_s", round(time.monotonic() - marks["applied"], 2))
                    if p.status.phase == "Succeeded":
                        at.setdefault("succeeded_s", round(time.monotonic() - marks["applied"], 2))
            if pods and not per_index:
                pod = pods[0]
                mark("pod_created")
                if pod.spec.node_name:
                    mark("pod_scheduled")
                statuses = {s.name: s for s in (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])}
                for stage in STAGES:
                    s = statuses.get(stage)
                    if s and (s.state.running or s.state.terminated):
                        mark(f"{stage}_started")
                    if s and s.state.terminated:
                        mark(f"{stage}_finished")
                if pod.status.phase in ("Succeeded", "Failed"):
                    mark("pod_finished")
        status = qj.get("status") or {}
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            mark("status_final")
            break
        if time.monotonic() >= next_progress:
            next_progress += 10
            pr = status.get("progress") or {}
            counted = f"{pr.get('step') or ''} {pr['done']}/{pr['total']} {pr.get('unit') or ''}" if "total" in pr else ""
            print(f"  {name}: {time.monotonic() - t0:5.0f} s {phase or '-'} {status.get('stage') or ''} "
                  f"{pr.get('percent', '')}% {counted}"[:160], flush=True)
        time.sleep(0.05)
    st = qj.get("status") or {}
    print(f"{name}: {st.get('phase')} {st.get('reason') or ''} after {time.monotonic() - t0:.1f} s", flush=True)

    def span(a: str, b: str) -> float | None:
        return round(marks[b] - marks[a], 2) if a in marks and b in marks else None

    splits = {
        "operator_create_job_s": span("applied", "job_created"),
        "job_controller_create_pod_s": span("job_created", "pod_created"),
        "scheduling_s": span("pod_created", "pod_scheduled"),
        # Sandbox, network and the first container; then each next container after the last exits.
        "container_start_s": {"export": span("pod_scheduled", "export_started"),
                              "calibrate": span("export_finished", "calibrate_started"),
                              "verify": span("calibrate_finished", "verify_started")},
        "export_s": span("export_started", "export_finished"),
        "calibrate_s": span("calibrate_started", "calibrate_finished"),
        "verify_s": span("verify_started", "verify_finished"),
        "operator_report_status_s": span("verify_finished", "status_final"),
    }
    overhead = [splits["operator_create_job_s"], splits["operator_report_status_s"], splits["scheduling_s"]]
    if per_index:
        return {"algos": algos, "parallelism": parallelism, "resources": resources, "phase": st.get("phase"),
                "reason": st.get("reason"), "apply_to_final_s": span("applied", "status_final"),
                "pods_running_at_once_max": running_at_once, "indexes": {str(i): per_index[i] for i in sorted(per_index)},
                "job_created_s": span("applied", "job_created"),
                "int8": (st.get("results") or {}).get("int8"),
                "candidates_top1": {c["algo"]: c.get("top1") for c in (st.get("results") or {}).get("candidates") or []}}
    return {
        "algos": algos, "parallelism": parallelism, "resources": resources, "phase": st.get("phase"), "reason": st.get("reason"),
        "apply_to_final_s": span("applied", "status_final"),
        "splits": splits,
        "operator_and_scheduling_overhead_s": round(sum(x for x in overhead if x is not None), 2),
        "fp32_top1": (st.get("results") or {}).get("fp32", {}).get("top1"),
        "int8": (st.get("results") or {}).get("int8"),
        "candidates_top1": {c["algo"]: c.get("top1") for c in (st.get("results") or {}).get("candidates") or []},
        "backend": (st.get("results") or {}).get("backend"),
    }


def sweep_runs(batch: client.BatchV1Api, core: client.CoreV1Api, custom: client.CustomObjectsApi) -> dict:
    """One algo, then the 4-algo sweep with parallelism 1 and 4, all at SWEEP_RESOURCES: the target
    is the parallel sweep within 1.3 x one algo's apply -> Succeeded."""
    runs = {"one_algo": run_one("bench-sweep-one", SWEEP_ALGOS[:1], batch, core, custom, 1, SWEEP_RESOURCES),
            "parallelism_1": run_one("bench-sweep-p1", SWEEP_ALGOS, batch, core, custom, 1, SWEEP_RESOURCES),
            "parallelism_4": run_one("bench-sweep-p4", SWEEP_ALGOS, batch, core, custom, 4, SWEEP_RESOURCES)}
    one, p1, p4 = (runs[k]["apply_to_final_s"] for k in ("one_algo", "parallelism_1", "parallelism_4"))
    ratio = round(p4 / one, 3) if p4 and one else None
    return {"runs": runs, "parallelism_4_over_one_algo": ratio,
            "parallelism_4_over_parallelism_1": round(p4 / p1, 3) if p4 and p1 else None,
            "same_choice": runs["parallelism_1"]["int8"] is not None and runs["parallelism_4"]["int8"] is not None
            and runs["parallelism_1"]["int8"]["algo"] == runs["parallelism_4"]["int8"]["algo"],
            "target_ratio": 1.3, "met": ratio is not None and ratio <= 1.3 and runs["parallelism_4"]["phase"] == "Succeeded"}


def main() -> int:
    setup()
    config.load_kube_config(str(REPO / ".devenv" / "kubeconfig"))
    batch, core, custom = client.BatchV1Api(), client.CoreV1Api(), client.CustomObjectsApi()
    runs = {"one_algo": run_one("bench-one", ["hist"], batch, core, custom),
            "four_algos": run_one("bench-four", SWEEP_ALGOS, batch, core, custom)}
    sweep = sweep_runs(batch, core, custom)
    result = {
        "benchmark": "e2e", "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform()},
        "runs": runs,
        "parallel_sweep": sweep,
        "node": {"name": DEVENV["node"]["name"], "kind": "real (kubelet + containerd)",
                 "images": dict(l.split("=", 1) for l in (REPO / ".devenv" / "images.env").read_text().splitlines() if "=" in l)},
        "targets": {"apply_to_succeeded_s": 45, "container_start_per_stage_s": 3, "operator_and_scheduling_overhead_s": 3},
        "met": {
            f"{k}_within_45s": (r["apply_to_final_s"] or 1e9) <= 45 and r["phase"] == "Succeeded" for k, r in runs.items()
        } | {
            "container_start_within_3s_per_stage": all(v is not None and v <= 3 for r in runs.values()
                                                       for v in r["splits"]["container_start_s"].values()),
            "overhead_within_3s": runs["one_algo"]["operator_and_scheduling_overhead_s"] <= 3,
        },
    }
    out = REPO / "bench" / "results" / "e2e.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
