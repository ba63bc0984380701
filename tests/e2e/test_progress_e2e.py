"""status.progress on the real node: the job pod (no API credential) prints progress lines, the
operator from the chart reads them through pods/log, and `kubectl get qj` shows PROGRESS moving
while a stage runs. Every status version is watched: progress alone is written at most once per
5 s, and Argo CD and kstatus judge each running version as in progress."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from tests.gitops import argocd_health, kstatus

pytestmark = pytest.mark.timeout(900)

NAME = "progress"
# 1024 calibration digits x (hist twice, avg, mse): a calibrate stage of tens of seconds on the
# node's 1-CPU pod (the demo's 256 took about 25 s), long enough for several progress writes at
# one per 5 s.
SAMPLES = 1024
WRITE_WINDOW = 5.0          # the chart's KUBESLIM_STATUS_PROGRESS_SECONDS (the operator's default)
JITTER = 0.5                # client-side receive times of two watch events


def table_columns(text: str) -> list[dict[str, str]]:
    """`kubectl get` table rows by header name; cells cut at the header's offsets, since an empty
    cell (STAGE once Succeeded) leaves no word for split()."""
    header, *rows = text.splitlines()
    names = header.split()
    starts = [header.index(n) for n in names]
    out = []
    for row in rows:
        cells = [row[a:b].strip() for a, b in zip(starts, starts[1:] + [len(row) + 1])]
        out.append(dict(zip(names, cells)))
    return out


class Watch:
    """Every version of one QuantizationJob, as `kubectl get -w` receives it, with the receive time."""

    def __init__(self, cmd: list[str]):
        self.events: list[tuple[float, dict]] = []
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder, buf = json.JSONDecoder(), ""
        assert self._proc.stdout is not None
        for chunk in self._proc.stdout:
            buf += chunk
            while buf.strip():
                try:
                    doc, end = decoder.raw_decode(buf.lstrip())
                except json.JSONDecodeError:
                    break                           # an object still arriving
                buf = buf.lstrip()[end:]
                obj = doc.get("object", doc)
                if obj.get("kind") == "QuantizationJob":
                    self.events.append((time.monotonic(), obj))

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=10)


def test_progress_moves_while_a_stage_runs(operator_release, e2e_namespace, digits_manifest, kubectl, devenv):
    doc = digits_manifest(NAME, **{"data.calibration.samples": SAMPLES})
    kubectl("-n", e2e_namespace, "apply", "-f", "-", input=json.dumps(doc))
    # After the create: a watch of a name that does not exist yet ends at once (NotFound).
    watch = Watch([devenv.kubectl, "--kubeconfig", str(devenv.kubeconfig), "-n", e2e_namespace, "get", "qj", NAME,
                   "-w", "-o", "json", "--output-watch-events"])
    try:
        seen: list[tuple[str, str, str]] = []             # (PHASE, STAGE, PROGRESS) as kubectl get shows them
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            (row,) = table_columns(kubectl("-n", e2e_namespace, "get", "qj", NAME).stdout)
            seen.append((row["PHASE"], row["STAGE"], row["PROGRESS"]))
            if row["PHASE"] in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        time.sleep(2)                                        # the last watch event
    finally:
        watch.stop()

    assert seen[-1][0] == "Succeeded" and seen[-1][2] == "100", seen[-1]
    calibrating = [int(p) for phase, stage, p in seen if stage == "Calibrating" and p.isdigit()]
    moving = sorted({p for p in calibrating if 0 < p < 100})
    assert len(moving) >= 2, f"PROGRESS did not move while calibrating: {calibrating}"
    assert calibrating == sorted(calibrating), f"PROGRESS went back within the stage: {calibrating}"

    # Every version the API server stored: what changed, when, and how GitOps tools judged it.
    versions = [(t, o) for t, o in watch.events if o.get("status")]
    assert versions, "the watch saw no status"
    progress_only_gaps = []
    for (t0, a), (t1, b) in zip(versions, versions[1:]):
        sa, sb = a["status"], b["status"]
        if sa == sb:
            continue
        same = {k: v for k, v in sa.items() if k not in ("progress", "conditions")} == \
               {k: v for k, v in sb.items() if k not in ("progress", "conditions")}
        if same and sa.get("progress") != sb.get("progress"):
            progress_only_gaps.append(round(t1 - t0, 2))
    assert progress_only_gaps, "no write changed progress alone"
    assert min(progress_only_gaps) >= WRITE_WINDOW - JITTER, progress_only_gaps

    running = [o for _, o in versions if o["status"].get("phase") == "Running" and o["status"].get("progress")]
    assert running
    for obj in running:
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert argocd_health(obj)[0] == "Progressing" and kstatus(obj) == "InProgress"
    # (before its plan the stage downloads the data: 0 %, nothing counted yet)
    calib = [o["status"]["progress"] for o in running if o["status"]["progress"].get("stage") == "Calibrating"
             and "total" in o["status"]["progress"]]
    # hist takes every batch twice, avg and mse once: 4 passes of SAMPLES / batchSize batches
    batches = -(-SAMPLES // doc["spec"]["quantization"]["batchSize"])
    assert calib and all(p["unit"] == "batches" and p["total"] == 4 * batches for p in calib), calib
    print(f"\nprogress-only writes {len(progress_only_gaps)}, seconds apart: {progress_only_gaps}; "
          f"kubectl get qj PROGRESS while Calibrating: {calibrating}")
