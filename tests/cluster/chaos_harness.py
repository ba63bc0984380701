"""The chaos suite's workload, its recorder and its verdicts (tests/cluster/test_chaos*.py).

Workload: QuantizationJobs on the devenv's kwok nodes, each generation told (through the pod
annotations the kwok Stages read, devenv/kwok/stages/pod.yaml) to finish in its own way — ok, gate
failed, bad input, OOM, crash — with a result that names the QuantizationJob and generation, so a
status copied from another run's pod shows up as wrong.

Recorder: watches (not polls) the QuantizationJobs and Jobs of the namespace from the test process,
so every status write the operator makes is seen, in order, with the time it was seen.

Verdicts (`analyse`, pure): duplicate Jobs per generation, lost runs (no final status for the last
generation), wrong final statuses, backwards transitions, a Retrying that nothing retries,
convergence after the last disturbance, and the lag between a Job concluding and its final status.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import socket
import struct
import threading
import time
from typing import Any, Callable

import pytest

from kubeslim_api.contract import Artifacts, Gate, StageResult, encode

from kubeslim_operator.constants import LABEL_GENERATION, LABEL_OWNER_UID

from operator_harness import REPO, RESULTS, fake

# small: inside `make test` (about a minute per file); full: `make chaos` (bench/results/chaos.json).
SCALE = os.environ.get("KUBESLIM_CHAOS_SCALE", "small")
full_only = pytest.mark.skipif(SCALE != "full", reason="make chaos only (KUBESLIM_CHAOS_SCALE=full)")

RESULTS_FILE = REPO / "bench" / "results" / "chaos.json"

OK, GATE, BAD_INPUT, OOM, CRASH = "ok", "gate", "bad-input", "oom", "crash"
OUTCOMES = (OK, GATE, BAD_INPUT, OOM, CRASH)
FINAL = ("Succeeded", "Failed")
RANK = {"Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}

# Pods ask for no GPU: the 16 fake GPUs are shared with every other test on the devenv, and a
# queue for them would turn the run into a scheduling test.
RESOURCES = {"gpu": 0, "cpu": "100m", "memory": "128Mi"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one generation of one QuantizationJob is told to do."""
    outcome: str
    backoff: int          # spec.runPolicy.backoffLimit
    duration: int         # seconds its pod runs before it finishes

    @property
    def retries(self) -> bool:
        """Whether the Job starts a second pod: crash and OOM count against backoffLimit; bad input
        and a failed gate exit 3 / 4, which the podFailurePolicy turns into FailJob."""
        return self.outcome in (CRASH, OOM) and self.backoff > 0


def model_uri(name: str, gen: int) -> str:
    return f"s3://models/{name}/g{gen}/model.pdmodel"


def weights_uri(name: str, gen: int) -> str:
    return f"s3://models/{name}/g{gen}/w.pdparams"


def crash_marker(name: str, gen: int) -> str:
    return f"RuntimeError: crash of {name} g{gen}"


def annotations(name: str, gen: int, plan: Plan) -> dict[str, str]:
    """The kwok Stage annotations that make the pod of `name`'s generation `gen` end as planned."""
    artifacts = Artifacts(model=model_uri(name, gen), report=f"s3://models/{name}/g{gen}/report.html")
    duration = f"{plan.duration}s"
    if plan.outcome == OK:
        msg = encode(StageResult(stage="verify", ok=True, results=RESULTS, artifacts=artifacts,
                                 gate=Gate(metric="top1", max_accuracy_drop=0.01, passed=True)))
        return fake(exit_code=0, message=msg, container="verify", duration=duration)
    if plan.outcome == GATE:
        msg = encode(StageResult(stage="verify", ok=False, reason="AccuracyGateFailed",
                                 message="int8 lost 0.0044 of top1, more than maxAccuracyDrop 0.001",
                                 results=RESULTS, artifacts=artifacts,
                                 gate=Gate(metric="top1", max_accuracy_drop=0.001, passed=False)))
        return fake(exit_code=4, message=msg, container="verify", duration=duration)
    if plan.outcome == BAD_INPUT:
        msg = encode(StageResult(stage="export", ok=False, reason="NoSuchKey",
                                 message=f"{weights_uri(name, gen)} does not exist; upload it or fix spec.model.builtin.weights"))
        return fake(exit_code=3, message=msg, container="export", duration=duration)
    if plan.outcome == OOM:
        return fake(exit_code=137, reason="OOMKilled", container="calibrate", duration=duration)
    if plan.outcome == CRASH:
        return fake(exit_code=1, message=f"Traceback (most recent call last):\n{crash_marker(name, gen)}",
                    container="calibrate", duration=duration)
    raise ValueError(f"unknown outcome {plan.outcome!r}")


def spec_of(name: str, gen: int, plan: Plan) -> dict[str, Any]:
    """The spec fields a plan sets (merged into operator_harness.BASE_SPEC)."""
    return {"resources": RESOURCES, "runPolicy": {"backoffLimit": plan.backoff, "activeDeadlineSeconds": 600},
            "podMetadata": {"annotations": annotations(name, gen, plan)}}


def wrong(name: str, gen: int, plan: Plan, status: dict[str, Any]) -> str | None:
    """Why a final status is not what `plan` makes generation `gen` end with; None if it is."""
    phase, reason, msg = status.get("phase"), status.get("reason") or "", status.get("message") or ""
    model = (status.get("artifacts") or {}).get("model")
    expect: dict[str, tuple[str, str, Callable[[], bool]]] = {
        OK: ("Succeeded", "", lambda: model == model_uri(name, gen) and (status.get("results") or {}).get("accuracyDrop") == 0.0044),
        GATE: ("Failed", "AccuracyGateFailed", lambda: model == model_uri(name, gen)),
        BAD_INPUT: ("Failed", "NoSuchKey", lambda: weights_uri(name, gen) in msg),
        OOM: ("Failed", "OOMKilled", lambda: ("attempt 2" in msg) == plan.retries),
        CRASH: ("Failed", "StageFailed", lambda: crash_marker(name, gen) in msg and ("attempt 2" in msg) == plan.retries),
    }
    want_phase, want_reason, detail_ok = expect[plan.outcome]
    if status.get("observedGeneration") != gen:
        return f"observedGeneration {status.get('observedGeneration')}, want {gen}"
    if (phase, reason) != (want_phase, want_reason):
        return f"{phase}/{reason}, want {want_phase}/{want_reason} ({plan.outcome}): {msg[:300]}"
    if not detail_ok():
        return f"{phase}/{reason} with the wrong details for {plan.outcome}: model={model} message={msg[:200]}"
    return None


def random_plan(rng: random.Random, max_duration: int) -> Plan:
    return Plan(rng.choice(OUTCOMES), rng.choice((0, 1)), rng.randint(0, max_duration))


def record(section: str, figures: dict) -> None:
    """Print a run's figures; a full run also keeps them in bench/results/chaos.json."""
    print(json.dumps({section: figures}, indent=1))
    if SCALE != "full":
        return
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from bench_pipeline import _cpu_model      # the model and its int8 instruction sets, as every benchmark prints

    doc = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    doc.update({"benchmark": "chaos", "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model()}, section: figures})
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(doc, indent=2) + "\n")


# -- recording ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Seen:
    t: float              # time.monotonic() when the watch delivered it
    type: str             # ADDED / MODIFIED / DELETED (or LISTED after a re-list)
    obj: dict[str, Any]


class Recorder:
    """Watches one namespaced resource in a thread: every event with the time it arrived. Survives
    an API server restart: it resumes from the last resourceVersion, or lists again if that is gone."""

    def __init__(self, k8s, namespace: str, group: str, version: str, plural: str):
        from kubernetes import client
        self.api = client.CustomObjectsApi(k8s)
        self.args = (group, version, namespace, plural)
        self.seen: list[Seen] = []
        self.relists = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{plural}")

    def start(self) -> "Recorder":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _list(self) -> str:
        listing = self.api.list_namespaced_custom_object(*self.args)
        now = time.monotonic()
        for item in listing.get("items", []):
            self.seen.append(Seen(now, "LISTED", item))
        return listing["metadata"]["resourceVersion"]

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                w = watch.Watch()
                for ev in w.stream(self.api.list_namespaced_custom_object, *self.args, resource_version=rv,
                                   timeout_seconds=5, allow_watch_bookmarks=True):
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        rv = None if obj.get("code") == 410 else rv
                        self.relists += obj.get("code") == 410
                        break
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        self.seen.append(Seen(time.monotonic(), ev["type"], obj))
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    rv, self.relists = None, self.relists + 1
                time.sleep(0.5)
            except Exception:          # the API server is away (restart, outage): try again
                time.sleep(0.5)


# -- verdicts -------------------------------------------------------------------------------------

def _concluded(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return round(values[lo] + (values[hi] - values[lo]) * (k - lo), 3)


def backwards_steps(statuses: list[dict[str, Any]], may_retry: Callable[[int], bool]) -> list[str]:
    """Status transitions that take back what an earlier status said, for one QuantizationJob, in
    the order the watch delivered them: an older observedGeneration after a newer one, a final
    status of a generation changed afterwards, or a step back (Running → Pending) that is not a
    retry the plan allows."""
    out: list[str] = []
    top_gen = 0
    rank: dict[int, int] = {}
    final: dict[int, tuple[str, str]] = {}
    for st in statuses:
        gen, phase, reason = st.get("observedGeneration"), st.get("phase"), st.get("reason") or ""
        if gen is None or phase is None:
            if top_gen:
                out.append(f"status emptied after generation {top_gen}")
            continue
        if gen < top_gen:
            out.append(f"observedGeneration {gen} after {top_gen}")
            continue
        top_gen = gen
        if gen in final:
            if (phase, reason) != final[gen]:
                out.append(f"g{gen}: {final[gen][0]}/{final[gen][1]} → {phase}/{reason}")
            continue
        r = RANK.get(phase, 0)
        if r < rank.get(gen, 0) and not (reason == "Retrying" and may_retry(gen)):
            out.append(f"g{gen}: back to {phase}/{reason}")
        rank[gen] = max(r, rank.get(gen, 0))
        if phase in FINAL:
            final[gen] = (phase, reason)
    return out


def retry_allowed(plan: Plan, message: str) -> bool:
    """Whether a Retrying status ("Attempt N failed …; the Job retries.") is true for this plan:
    the pod's failure counts against backoffLimit and N does not exceed it."""
    m = re.match(r"Attempt (\d+) failed", message or "")
    return plan.retries and m is not None and int(m.group(1)) <= plan.backoff


def job_index(qj_seen: list[Seen], job_seen: list[Seen]) -> tuple[dict[tuple[str, int], set[str]], dict[tuple[str, int], float]]:
    """(name, generation) → the uids of every Job seen for it, and → when its Job was first seen concluded."""
    owners = {s.obj["metadata"]["uid"]: s.obj["metadata"]["name"] for s in qj_seen}
    jobs_of: dict[tuple[str, int], set[str]] = {}
    concluded_at: dict[tuple[str, int], float] = {}
    for s in job_seen:
        labels = s.obj["metadata"].get("labels") or {}
        owner = owners.get(labels.get(LABEL_OWNER_UID, ""))
        if owner is None:
            continue
        key = (owner, int(labels.get(LABEL_GENERATION, 0)))
        jobs_of.setdefault(key, set()).add(s.obj["metadata"]["uid"])
        if _concluded(s.obj):
            concluded_at.setdefault(key, s.t)
    return jobs_of, concluded_at


def analyse(plans: dict[str, dict[int, Plan]], qj_seen: list[Seen], job_seen: list[Seen], events: list[dict[str, Any]],
            outages: list[tuple[float, float]]) -> dict[str, Any]:
    """The figures of one chaos run. `plans`: name → generation → plan (the last generation is the
    one that must end); `outages`: (start, end) of every time the operator was down or cut off
    (time.monotonic()), the last one ending the disturbances."""
    statuses: dict[str, list[dict[str, Any]]] = {n: [] for n in plans}
    final_at: dict[tuple[str, int], float] = {}
    for s in qj_seen:
        name = s.obj["metadata"]["name"]
        if name not in plans or s.type == "DELETED":
            continue
        st = s.obj.get("status") or {}
        if not statuses[name] or statuses[name][-1] != st:
            statuses[name].append(st)
        if st.get("phase") in FINAL and st.get("observedGeneration") is not None:
            final_at.setdefault((name, st["observedGeneration"]), s.t)
    jobs_of, concluded_at = job_index(qj_seen, job_seen)
    last_disturbance = max((end for _, end in outages), default=0.0)

    def while_up(t0: float, t1: float) -> bool:
        return not any(start < t1 and end > t0 for start, end in outages)

    duplicates = {f"{n}/g{g}": len(uids) for (n, g), uids in jobs_of.items() if len(uids) > 1}
    lost: list[str] = []
    wrong_final: dict[str, str] = {}
    backwards: dict[str, list[str]] = {}
    spurious: list[str] = []
    lags: list[float] = []
    lags_up: list[float] = []
    last_final = 0.0
    for name, by_gen in plans.items():
        gen = max(by_gen)
        last = statuses[name][-1] if statuses[name] else {}
        if last.get("observedGeneration") != gen or last.get("phase") not in FINAL:
            lost.append(f"{name}: g{last.get('observedGeneration')} {last.get('phase')}/{last.get('reason')}")
        else:
            why = wrong(name, gen, by_gen[gen], last)
            if why:
                wrong_final[name] = why
            last_final = max(last_final, final_at.get((name, gen), 0.0))
            if (name, gen) in concluded_at and (name, gen) in final_at:
                t0, t1 = concluded_at[(name, gen)], final_at[(name, gen)]
                lags.append(t1 - t0)
                if while_up(t0, t1):
                    lags_up.append(t1 - t0)
        steps = backwards_steps(statuses[name], lambda g, p=by_gen: g in p and p[g].retries)
        if steps:
            backwards[name] = steps
        for st in statuses[name]:
            g = st.get("observedGeneration")
            if st.get("reason") == "Retrying" and not (g in by_gen and retry_allowed(by_gen[g], st.get("message") or "")):
                spurious.append(f"{name}/g{g}: {st.get('message')}")
    for ev in events:
        name = (ev.get("involvedObject") or {}).get("name")
        if ev.get("reason") == "Retrying" and name in plans and not any(
                retry_allowed(p, ev.get("message") or "") for p in plans[name].values()):
            spurious.append(f"{name}: event {ev.get('message')}")

    def stats(values: list[float]) -> dict[str, Any]:
        return {"n": len(values), "p50": _pct(values, .5), "p95": _pct(values, .95), "max": _pct(values, 1.0)}

    return {
        "jobs": len(plans),
        "generations": sum(len(p) for p in plans.values()),
        "outcomes": {o: sum(1 for p in plans.values() if p[max(p)].outcome == o) for o in OUTCOMES},
        "duplicates": len(duplicates), "duplicate_detail": duplicates,
        "lost": len(lost), "lost_detail": lost,
        "wrong": len(wrong_final), "wrong_detail": wrong_final,
        "backwards": sum(len(v) for v in backwards.values()), "backwards_detail": backwards,
        "spurious_retrying": len(spurious), "spurious_retrying_detail": spurious,
        "convergence_after_last_disturbance_s": round(max(0.0, last_final - last_disturbance), 3) if not lost else None,
        "status_lag_after_job_concluded_s": {"all": stats(lags), "operator_up": stats(lags_up)},
    }


# -- outages --------------------------------------------------------------------------------------

class TcpProxy:
    """A TCP forwarder the test can cut: `cut()` resets every open connection and closes the
    listening port (connections are refused, as from a stopped server); `restore()` opens the same
    port again. TLS passes through untouched, so a client keeps verifying the real server."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0):
        self.upstream, self.host, self.port = upstream, host, port
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.cuts = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "TcpProxy":
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(128)
        self.port = ls.getsockname()[1]
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return                       # closed by cut()
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not ls:      # cut while connecting
                    client.close(), server.close()
                    return
                self._conns |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)         # pass the EOF on
        except OSError:
            pass
        with self._lock:
            self._conns.discard(src)
            peer_done = dst not in self._conns
        if peer_done or self._listener is None:
            for s in (src, dst):
                s.close()

    def cut(self) -> None:
        with self._lock:
            ls, self._listener = self._listener, None
            conns = set(self._conns)
        if ls is not None:
            ls.close()
        for s in conns:
            try:
                # Linger 0: the close that follows sends RST, not FIN — what a client sees when
                # the server's host goes away. SHUT_RD wakes the pump blocked in recv to do it.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self.cuts += 1

    def restore(self) -> None:
        assert self._listener is None, "not cut"
        self.start()

    def close(self) -> None:
        if self._listener is not None:
            self.cut()


# -- a flaky S3 -----------------------------------------------------------------------------------

class Toxiproxy:
    """toxiproxy-server (hack/build-tools.sh toxiproxy, pinned in hack/versions.env), driven through
    its REST API: one TCP proxy whose toxics add latency, reset connections, stall them and cut them
    after a number of bytes — the faults of a network between the pods and S3."""

    def __init__(self, binary: str, log_path: str):
        self.binary, self.log_path = binary, log_path
        self.api = ""
        self.proc: Any = None

    def start(self) -> "Toxiproxy":
        import subprocess

        with socket.socket() as s:          # a free port for the API (toxiproxy has no port 0 for it)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([self.binary, "-host", "127.0.0.1", "-port", str(port)],
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        self.api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._request("GET", "/version")
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"toxiproxy-server did not answer on {self.api} (log: {self.log_path})") from None
                time.sleep(0.1)

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        import urllib.request

        req = urllib.request.Request(self.api + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
        return json.loads(text) if text.strip() else None

    def proxy(self, name: str, listen: str, upstream: str) -> str:
        """A TCP proxy from `listen` (host:port, port 0 for any) to `upstream`; its listening host:port."""
        return self._request("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})["listen"]

    def add(self, proxy: str, name: str, kind: str, stream: str, toxicity: float = 1.0, **attributes: int) -> None:
        """A toxic on every new link of `proxy` with probability `toxicity`; `stream` downstream (S3 → pod) or upstream."""
        self._request("POST", f"/proxies/{proxy}/toxics", {"name": name, "type": kind, "stream": stream,
                                                           "toxicity": toxicity, "attributes": attributes})

    def remove(self, proxy: str, name: str) -> None:
        self._request("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[dict]:
        return self._request("GET", f"/proxies/{proxy}/toxics")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()


# S3 error documents the fault proxy answers with: what a struggling S3 sends.
_S3_ERRORS = {500: ("InternalError", "We encountered an internal error. Please try again."),
              503: ("ServiceUnavailable", "Please reduce your request rate.")}
# Hop-by-hop headers: they describe one connection, not the request, and are not forwarded.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


class FaultyS3:
    """An HTTP proxy in front of S3 that answers some requests itself with a 500 or 503 S3 error
    (toxiproxy works on TCP and has no HTTP-status toxic, so the 5xx answers are ours). Which
    requests: every write's first attempt (so every upload is retried) and, of the rest, a seeded
    share `rate`; `rate` 1.0 is an S3 that only fails. Request bodies are read before the answer,
    so the client sees a clean 5xx, not a broken pipe. Counts what it did, by method."""

    def __init__(self, upstream: tuple[str, int], rate: float, seed: int, host: str = "127.0.0.1"):
        import http.server

        self.upstream, self.rate, self.rng = upstream, rate, random.Random(seed)
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self._written: set[tuple[str, str]] = set()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"          # keep-alive, and Expect: 100-continue handled

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, client_address: None     # a client reset mid-request: expected here
        self.address = f"{host}:{self.server.server_address[1]}"
        self._local = threading.local()

    def start(self) -> "FaultyS3":
        threading.Thread(target=self.server.serve_forever, daemon=True, name="faulty-s3").start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def set_rate(self, rate: float) -> None:
        with self.lock:
            self.rate = rate

    def _fault(self, method: str, path: str) -> int | None:
        key = (method, path.split("?", 1)[0])
        with self.lock:
            self.requests[method] = self.requests.get(method, 0) + 1
            first_write = method in ("PUT", "POST") and key not in self._written
            if first_write:
                self._written.add(key)
            if first_write or self.rng.random() < self.rate:
                self.faults[method] = self.faults.get(method, 0) + 1
                return self.rng.choice((500, 503))
        return None

    def _handle(self, h: Any) -> None:
        import http.client

        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            raise NotImplementedError("a chunked request body (boto3 sends Content-Length to an http:// endpoint)")
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else None
        status = self._fault(h.command, h.path)
        if status is not None:
            code, text = _S3_ERRORS[status]
            doc = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{text}</Message>'
                   f"<Resource>{h.path.split('?', 1)[0]}</Resource></Error>").encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(doc)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(doc)
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            # The client's Host header goes on unchanged: its SigV4 signature covers it.
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self._local.conn = None
            h.close_connection = True          # the client sees its connection dropped, as from S3
            return
        h.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                h.send_header(k, v)
        h.send_header("Content-Length", (resp.getheader("Content-Length") or "0") if h.command == "HEAD" else str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)


def linked_artifact_problems(status: dict[str, Any], size_of: Callable[[str], int | None],
                             read_json: Callable[[str], Any]) -> list[str]:
    """What is wrong with the artifacts one status links (empty: nothing): a link to an object that
    is not there, a model whose files do not add up to the size the run measured (half written),
    or a report.json that is unreadable or tells another run's result."""
    arts = status.get("artifacts") or {}
    int8 = (status.get("results") or {}).get("int8") or {}
    problems = [f"{key} {uri}: not in S3" for key, uri in sorted(arts.items()) if uri and size_of(uri) is None]
    if problems:
        return problems
    if arts.get("model"):
        files = size_of(arts["model"]) + (size_of(arts["params"]) if arts.get("params") else 0)
        if files != int8.get("sizeBytes"):
            problems.append(f"model + params {files} bytes, the run measured {int8.get('sizeBytes')}: half written")
    if arts.get("reportJson"):
        try:
            report = read_json(arts["reportJson"])
            told = (report.get("results") or {}).get("int8") or {}
        except Exception as exc:
            problems.append(f"reportJson {arts['reportJson']}: unreadable ({type(exc).__name__})")
        else:
            mine = {k: int8.get(k) for k in ("algo", "sizeBytes", "top1")}
            if {k: told.get(k) for k in mine} != mine:
                problems.append(f"reportJson tells {({k: told.get(k) for k in mine})}, the status {mine}")
    return problems



# -- real runs on the real node (test_chaos_s3.py, test_chaos_node.py) ----------------------------

@pytest.fixture
def recorders(k8s, namespace):
    """Watches of the namespace's QuantizationJobs and Jobs for the length of a test."""
    qjs = Recorder(k8s, namespace, "kubeslim.io", "v1alpha1", "quantizationjobs").start()
    jobs = Recorder(k8s, namespace, "batch", "v1", "jobs").start()
    yield qjs, jobs
    qjs.stop()
    jobs.stop()


def digits_job(kubectl, s3, s3_env: dict[str, str], namespace: str, bucket: str, real_node, name: str, endpoint: str,
               backoff: int, algos: list[str] | None = None) -> dict[str, Any]:
    """The demo's digits QuantizationJob (examples/digits.yaml) on the real node, its model and data
    seeded into `bucket`, talking to S3 at `endpoint`; `algos` replaces the example's sweep."""
    from kubeslim_dev import demo

    demo.seed(s3, bucket, "digits")          # a bucket of its own: the model and data match this checkout
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"]}}))
    doc = demo.example_manifest(name, bucket, endpoint)
    doc["metadata"]["namespace"] = namespace
    if algos:
        doc["spec"]["quantization"]["algos"] = algos
    doc["spec"]["scheduling"] = json.loads(json.dumps(real_node.scheduling))
    doc["spec"]["resources"] = {"gpu": 1, "cpu": "1", "memory": "2Gi"}
    doc["spec"]["runPolicy"] = {"backoffLimit": backoff, "activeDeadlineSeconds": 480}
    return doc


def s3_readers(s3) -> tuple[Callable[[str], int | None], Callable[[str], Any]]:
    """(size of an s3:// object or None, its JSON) through the test's own S3 client."""
    def size_of(uri: str) -> int | None:
        b, _, k = uri.removeprefix("s3://").partition("/")
        try:
            return s3.head_object(Bucket=b, Key=k)["ContentLength"]
        except s3.exceptions.ClientError:
            return None

    def read_json(uri: str) -> Any:
        b, _, k = uri.removeprefix("s3://").partition("/")
        return json.loads(s3.get_object(Bucket=b, Key=k)["Body"].read())
    return size_of, read_json


def run_figures(name: str, qjs: Recorder, jobs: Recorder, s3, t0: float, pods: int) -> dict[str, Any]:
    """The verdicts of one real run of generation 1 of `name`: Jobs made (1: no duplicate), final
    or lost, every artifact any status linked checked whole (wrong), and the time to the final
    status from `t0` (time.monotonic())."""
    seen = [s for s in list(qjs.seen) if s.obj["metadata"]["name"] == name]
    statuses = [s.obj.get("status") or {} for s in seen]
    final = next((s for s in seen if (s.obj.get("status") or {}).get("phase") in FINAL), None)
    size_of, read_json = s3_readers(s3)
    wrong: dict[str, list[str]] = {}
    for st in statuses:
        key = json.dumps(st.get("artifacts"), sort_keys=True)
        if st.get("artifacts") and key not in wrong:
            wrong[key] = linked_artifact_problems(st, size_of, read_json)
    wrong = {k: v for k, v in wrong.items() if v}
    jobs_made = len(job_index(list(qjs.seen), list(jobs.seen))[0].get((name, 1), ()))
    return {"jobs": jobs_made, "duplicates": max(0, jobs_made - 1), "pods": pods, "lost": int(final is None),
            "wrong": len(wrong), "wrong_detail": list(wrong.values()),
            "backwards": len(backwards_steps(statuses, lambda gen: True)),
            "statuses_with_links": sum(1 for st in statuses if st.get("artifacts")),
            "time_to_final_s": round(final.t - t0, 1) if final else None,
            "final": {k: (final.obj.get("status") or {}).get(k) for k in ("phase", "reason", "message")} if final else None}
