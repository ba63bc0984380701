"""Chaos: the operator SIGKILLed at random moments while QuantizationJobs run, some of them given a
new generation mid-run; then (its own tests) the operator cut off from the API server for longer
than kopf's retries, and the API server itself restarted. Every status write is watched; the
verdicts are chaos_harness.analyse's: no duplicate Job, none lost, none wrong, no status taken
back, no Retrying that nothing retries.

Scale: KUBESLIM_CHAOS_SCALE=small (the default, inside `make test`: the kills only, under a minute)
or full (`make chaos`: ≥ 60 QuantizationJobs and ≥ 20 kills, a 120 s API outage, an API server
restart; the figures go to bench/results/chaos.json). KUBESLIM_CHAOS_SEED replays a run;
KUBESLIM_CHAOS_APISERVER=1 adds the API server restart to a small run.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
import yaml

from kubeslim_dev.devenv import outage

from chaos_harness import (OUTCOMES, SCALE, Plan, TcpProxy, analyse, full_only, job_index, random_plan, record,  # noqa: F401
                           recorders, spec_of)
from operator_harness import OperatorProcess, crd, operator_identity, qj_manifest  # noqa: F401

SCALES = {
    # jobs, kills, bumped generations, longest pod run (s), outage (s; kopf's retries add up to 54 s)
    "small": {"jobs": 15, "kills": 6, "bumps": 3, "max_duration": 8, "outage": 60},
    "full": {"jobs": 80, "kills": 25, "bumps": 12, "max_duration": 25, "outage": 120},
}[SCALE]
SEED = int(os.environ.get("KUBESLIM_CHAOS_SEED") or time.time())
FINAL_TIMEOUT = 180

pytestmark = pytest.mark.timeout(900 if SCALE == "full" else 300)


def plans_for(rng: random.Random, n: int, max_duration: int) -> dict[str, dict[int, Plan]]:
    plans = {f"c{i:03d}": {1: random_plan(rng, max_duration)} for i in range(n)}
    # Every outcome at least twice, whatever the seed.
    for i, name in enumerate(list(plans)[: 2 * len(OUTCOMES)]):
        plans[name][1] = Plan(OUTCOMES[i % len(OUTCOMES)], plans[name][1].backoff, plans[name][1].duration)
    return plans


def apply_all(kubectl, namespace: str, plans: dict[str, dict[int, Plan]]) -> None:
    docs = [qj_manifest(name, namespace, **spec_of(name, 1, p[1])) for name, p in plans.items()]
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def bump(kubectl, namespace: str, plans: dict[str, dict[int, Plan]], name: str, plan: Plan) -> None:
    gen = max(plans[name]) + 1
    spec = spec_of(name, gen, plan)
    kubectl("patch", "qj", name, "-n", namespace, "--type=json", "-p", json.dumps([
        {"op": "replace", "path": "/spec/podMetadata", "value": spec["podMetadata"]},
        {"op": "replace", "path": "/spec/runPolicy/backoffLimit", "value": plan.backoff}]))
    plans[name][gen] = plan


def all_concluded(plans: dict[str, dict[int, Plan]], qjs: Recorder, jobs: Recorder) -> bool:
    _, concluded = job_index(list(qjs.seen), list(jobs.seen))
    return all((name, max(p)) in concluded for name, p in plans.items())


def wait_all_final(plans: dict[str, dict[int, Plan]], qjs: Recorder, wait_for, timeout: float = FINAL_TIMEOUT) -> None:
    def done() -> bool:
        last: dict[str, dict] = {}
        for s in list(qjs.seen):
            last[s.obj["metadata"]["name"]] = s.obj.get("status") or {}
        return all(last.get(n, {}).get("observedGeneration") == max(p) and last[n].get("phase") in ("Succeeded", "Failed")
                   for n, p in plans.items())
    try:
        wait_for(done, timeout=timeout, interval=0.5, what="every QuantizationJob final for its last generation")
    except TimeoutError:
        pass                 # analyse() names the lost ones


def events_of(kubectl, namespace: str) -> list[dict]:
    return json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]


def check(figures: dict, operator_log: str | None = None) -> None:
    """The verdicts; `operator_log` where no outage excuses a traceback in it."""
    assert figures["duplicates"] == 0, figures["duplicate_detail"]
    assert figures["lost"] == 0, figures["lost_detail"]
    assert figures["wrong"] == 0, figures["wrong_detail"]
    assert figures["backwards"] == 0, figures["backwards_detail"]
    assert figures["spurious_retrying"] == 0, figures["spurious_retrying_detail"]
    assert operator_log is None or "Traceback" not in operator_log, operator_log[-4000:]


def test_operator_sigkilled_at_random_moments(crd, operator_identity, namespace, tmp_path, kubectl, recorders, wait_for):
    rng = random.Random(SEED)
    qjs, jobs = recorders
    op = OperatorProcess(Path(operator_identity["kubeconfig"]), namespace, tmp_path).start()
    plans = plans_for(rng, SCALES["jobs"], SCALES["max_duration"])
    apply_all(kubectl, namespace, plans)
    bump_after = {rng.randint(1, SCALES["kills"] - 1) for _ in range(SCALES["bumps"])}
    outages: list[tuple[float, float]] = []
    deadline = time.monotonic() + (600 if SCALE == "full" else 150)
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 2.5))                 # the operator at work
        down = time.monotonic()
        op.kill()
        if len(outages) + 1 in bump_after:                # a new generation while nobody watches…
            bump(kubectl, namespace, plans, rng.choice(list(plans)), random_plan(rng, SCALES["max_duration"]))
        time.sleep(rng.uniform(0.0, 1.5))
        op.start()
        outages.append((down, time.monotonic()))
        if len(outages) in bump_after:                    # …and one while the operator runs
            bump(kubectl, namespace, plans, rng.choice(list(plans)), random_plan(rng, SCALES["max_duration"]))
        if len(outages) >= SCALES["kills"] - 1 and all_concluded(plans, qjs, jobs):
            break
    # The last kill leaves work behind: new generations that nobody has seen, so the time until
    # every status is final again is the operator's own recovery (no pod is slower than 0 s).
    down = time.monotonic()
    op.kill()
    for name in rng.sample(list(plans), SCALES["bumps"]):
        bump(kubectl, namespace, plans, name, Plan(rng.choice(OUTCOMES), 0, 0))
    op.start()
    outages.append((down, time.monotonic()))
    wait_all_final(plans, qjs, wait_for)
    time.sleep(2)                                         # a status taken back would show up by now
    figures = {"seed": SEED, "kills": len(outages), **analyse(plans, list(qjs.seen), list(jobs.seen),
                                                              events_of(kubectl, namespace), outages)}
    record("kills", figures)
    op.stop()
    assert figures["kills"] >= SCALES["kills"], "ran out of time before the planned kills"
    check(figures, op.log())


def _proxied_kubeconfig(source: str, proxy: TcpProxy, path: Path) -> Path:
    cfg = yaml.safe_load(Path(source).read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://{proxy.address}"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


@full_only
def test_operator_cut_off_from_the_api_longer_than_kopfs_retries(crd, operator_identity, namespace, tmp_path, kubectl,
                                                                   recorders, wait_for):
    """A TCP proxy between the operator and the API server: cut (connections reset, then refused)
    for longer than kopf's error backoffs add up to, while pods finish and a generation changes;
    restored, the same process catches up."""
    rng = random.Random(SEED)
    qjs, jobs = recorders
    server = yaml.safe_load(Path(operator_identity["kubeconfig"]).read_text())["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = TcpProxy((host, int(port))).start()
    op = OperatorProcess(_proxied_kubeconfig(operator_identity["kubeconfig"], proxy, tmp_path / "proxied"),
                         namespace, tmp_path).start()
    plans = {f"o{i:02d}": {1: Plan(OUTCOMES[i % len(OUTCOMES)], 0, rng.randint(3, 20))} for i in range(10)}
    apply_all(kubectl, namespace, plans)
    wait_for(lambda: len(job_index(list(qjs.seen), list(jobs.seen))[0]) == len(plans), timeout=60, what="every Job created")
    t_cut = time.monotonic()
    proxy.cut()
    bump(kubectl, namespace, plans, "o00", Plan("ok", 0, 0))
    time.sleep(SCALES["outage"])
    assert op.proc.poll() is None, f"the operator exited during the outage:\n{op.log()[-3000:]}"
    proxy.restore()
    outages = [(t_cut, time.monotonic())]
    wait_all_final(plans, qjs, wait_for)
    time.sleep(2)
    figures = {"outage_s": SCALES["outage"], "operator_starts": op.starts,
               **analyse(plans, list(qjs.seen), list(jobs.seen), events_of(kubectl, namespace), outages)}
    record("api_outage", figures)
    assert op.proc.poll() is None and op.starts == 1, "recovered only by a restart"
    op.stop()
    proxy.close()
    check(figures)


@pytest.mark.skipif(SCALE != "full" and not os.environ.get("KUBESLIM_CHAOS_APISERVER"),
                    reason="restarts the shared API server: make chaos (or KUBESLIM_CHAOS_APISERVER=1)")
def test_apiserver_restarted_mid_run(crd, operator_identity, namespace, tmp_path, kubectl, recorders, wait_for):
    rng = random.Random(SEED)
    qjs, jobs = recorders
    op = OperatorProcess(Path(operator_identity["kubeconfig"]), namespace, tmp_path).start()
    plans = {f"a{i:02d}": {1: Plan(OUTCOMES[i % len(OUTCOMES)], 0, rng.randint(0, 30))} for i in range(20)}
    apply_all(kubectl, namespace, plans)
    time.sleep(3)
    t0 = time.monotonic()
    outage("restart", "kube-apiserver")
    outages = [(t0, time.monotonic())]
    wait_all_final(plans, qjs, wait_for)
    time.sleep(2)
    figures = {"restart_s": round(outages[0][1] - t0, 1), "operator_starts": op.starts,
               **analyse(plans, list(qjs.seen), list(jobs.seen), events_of(kubectl, namespace), outages)}
    record("apiserver_restart", figures)
    assert op.proc.poll() is None and op.starts == 1, "recovered only by a restart"
    op.stop()
    check(figures)
