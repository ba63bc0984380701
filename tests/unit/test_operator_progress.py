"""status.progress: which log the operator reads, how often, and what it writes from a line."""
from __future__ import annotations

import asyncio

import pytest

from kubeslim_api.progress import ProgressLine, format_line
from kubeslim_operator import progress
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.handlers import reconcile
from kubeslim_operator.handlers.reconcile import Reconciler
from kubeslim_operator.kube import ApiError
from operator_fakes import KEY, FakeApi, RUNNING, done, job, pod, qj, waiting

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig()
T0 = 1764860000.0            # 2025-12-04T14:53:20Z
CALIBRATING = ProgressLine(stage="calibrate", step="hist", done=30, total=120, unit="batches", eta_seconds=42.4, time=T0)


# -- which log ------------------------------------------------------------------------------------

def test_the_running_stage_of_the_newest_live_pod_is_read():
    j = job(1, uid="j1")
    old = pod(j, export=done(), calibrate={"terminated": {"exitCode": 1}}, phase="Failed", name="p1")
    new = pod(j, export=done(), calibrate=RUNNING, phase="Running", name="p2")
    assert progress.log_target(j, [old, new]) == ("p2", "calibrate")


@pytest.mark.parametrize("pods", [
    [],
    [pod(job(1, uid="j1"), export=waiting("PodInitializing"))],                        # nothing runs yet
    [pod(job(1, uid="j1"), export=done(), calibrate=done(), phase="Succeeded")],
    [pod(job(1, uid="other"), export=RUNNING, phase="Running")],                      # another Job's pod
])
def test_no_log_when_no_stage_of_this_job_runs(pods):
    assert progress.log_target(job(1, uid="j1"), pods) is None


def test_no_log_without_a_job():
    assert progress.log_target(None, [pod(job(1), export=RUNNING)]) is None


# -- how often ------------------------------------------------------------------------------------

def read(api, target, reading, now):
    asyncio.run(progress.read(api, "ml", target, reading, now=now))


def test_a_line_is_read_every_read_period_and_kept_between_reads():
    api = FakeApi()
    api.logs[("p1", "calibrate")] = "some paddle output\n" + format_line(CALIBRATING) + "\nmore output\n"
    r = progress.Reading()
    read(api, ("p1", "calibrate"), r, now=10.0)
    assert r.line == CALIBRATING and r.wait(now=10.0) == progress.READ_SECONDS
    read(api, ("p1", "calibrate"), r, now=12.0)            # not due: no request
    assert api.log_reads == [("p1", "calibrate")] and r.line == CALIBRATING
    read(api, ("p1", "calibrate"), r, now=10.0 + progress.READ_SECONDS)
    assert len(api.log_reads) == 2


def test_a_log_without_lines_is_read_ever_less_often_up_to_the_cap():
    api = FakeApi()                                        # answers "" (as for kwok's pods)
    r, now, waits = progress.Reading(), 0.0, []
    for _ in range(6):
        read(api, ("p1", "verify"), r, now=now)
        waits.append(r.wait(now=now))
        now += waits[-1]
    assert waits == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0] and r.line is None


@pytest.mark.parametrize("error", [ApiError(403, {"message": "forbidden"}, "GET", "/log"),
                                   ApiError(400, {"message": "container is waiting to start"}, "GET", "/log"),
                                   asyncio.TimeoutError()])
def test_a_failed_read_only_delays_the_next(error):
    api = FakeApi()
    api.logs[("p1", "verify")] = error
    r = progress.Reading()
    read(api, ("p1", "verify"), r, now=0.0)
    assert r.line is None and r.wait(now=0.0) == progress.next_read(1)


def test_a_new_stage_forgets_the_old_line_and_is_read_at_once():
    api = FakeApi()
    api.logs[("p1", "calibrate")] = format_line(CALIBRATING)
    r = progress.Reading()
    read(api, ("p1", "calibrate"), r, now=0.0)
    read(api, ("p1", "verify"), r, now=1.0)
    assert r.line is None and api.log_reads == [("p1", "calibrate"), ("p1", "verify")]


def test_a_line_of_another_stage_is_not_taken():
    # The log of verify never holds a calibrate line; a user's program printing one is ignored.
    api = FakeApi()
    api.logs[("p1", "verify")] = format_line(CALIBRATING)
    r = progress.Reading()
    read(api, ("p1", "verify"), r, now=0.0)
    assert r.line is None


# -- what is written ------------------------------------------------------------------------------

def st(phase, stage="", generation=1, **extra):
    return {"observedGeneration": generation, "phase": phase, "stage": stage, **extra}


def test_a_line_becomes_the_status_progress():
    assert progress.status_progress(st("Running", "Calibrating"), {}, CALIBRATING) == {
        "stage": "Calibrating", "step": "hist", "done": 30, "total": 120, "unit": "batches", "percent": 25,
        "eta": "2025-12-04T14:54:02Z", "updatedAt": "2025-12-04T14:53:20Z"}


def test_a_stage_with_nothing_counted_yet_is_at_zero():
    exporting = ProgressLine(stage="export", time=T0)
    assert progress.status_progress(st("Running", "Exporting"), {}, exporting) == {
        "stage": "Exporting", "percent": 0, "updatedAt": "2025-12-04T14:53:20Z"}
    finished = exporting.model_copy(update={"finished": True})
    assert progress.status_progress(st("Running", "Exporting"), {}, finished)["percent"] == 100


KEPT = {"stage": "Calibrating", "percent": 40, "updatedAt": "2025-12-04T14:53:20Z"}


@pytest.mark.parametrize("new, prev, line, expected", [
    (st("Running", "Calibrating"), st("Running", "Calibrating", progress=KEPT), None, KEPT),
    (st("Running", "Verifying"), st("Running", "Calibrating", progress=KEPT), None, {"stage": "Verifying", "percent": 0}),
    (st("Running", "Verifying"), st("Running", "Calibrating", progress=KEPT), CALIBRATING, {"stage": "Verifying", "percent": 0}),
    (st("Running", "Exporting"), {}, None, {"stage": "Exporting", "percent": 0}),
    (st("Pending"), {}, None, {"percent": 0}),
    (st("Pending", reason="Retrying"), st("Running", "Calibrating", progress=KEPT), None, {"percent": 0}),
    (st("Succeeded"), st("Running", "Verifying", progress=KEPT), None, {"percent": 100}),
    (st("Failed"), st("Running", "Calibrating", progress=KEPT), None, KEPT),
    (st("Failed", generation=2), st("Running", "Calibrating", progress=KEPT), None, None),
    (st("Running", "Calibrating", generation=2), st("Running", "Calibrating", progress=KEPT), None,
     {"stage": "Calibrating", "percent": 0}),
], ids=["same stage, no new line: kept", "next stage: 0", "a line of the stage before is not this stage's",
        "first stage", "pending", "a retry starts over", "succeeded", "failed: how far it got",
        "failed in a new generation: nothing", "a new generation starts over"])
def test_status_progress_without_a_line_of_the_running_stage(new, prev, line, expected):
    assert progress.status_progress(new, prev, line) == expected


# -- the reconciler: reads, writes, events --------------------------------------------------------

def test_a_running_job_gets_progress_written_at_most_once_per_window_and_no_event(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(reconcile.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    api = FakeApi()
    r = Reconciler(CONFIG, api)
    j = job(1, uid="j1")
    running = pod(j, export=done(), calibrate=RUNNING, phase="Running")
    qjs, pods = {KEY: [qj()]}, {KEY: [running]}
    r.bind(qjs, {KEY: [j]}, pods)

    def say(done_, t):
        api.logs[("p1", "calibrate")] = format_line(CALIBRATING.model_copy(update={"done": done_, "time": T0 + t}))

    def reconcile_at(t):
        clock[0] = 1000.0 + t
        qjs[KEY] = [qj(status=r.known_status(qj()))]
        return asyncio.run(r.reconcile(KEY))

    say(30, 0)
    assert reconcile_at(0) == progress.READ_SECONDS         # comes back for the next read by itself
    assert [s["progress"]["percent"] for s in api.statuses] == [25]
    say(60, 2)
    reconcile_at(2)                                          # an event-triggered pass: not due, no read
    assert len(api.log_reads) == 1
    assert reconcile_at(5) == progress.READ_SECONDS
    assert [s["progress"]["percent"] for s in api.statuses] == [25, 50]
    reconcile_at(10)                                         # nothing new printed: nothing written
    assert len(api.statuses) == 2 and len(api.log_reads) == 3
    assert [x[2] for x in api.of("event")] == ["Calibrating"]        # one per transition, none per progress


def test_no_read_for_a_finished_run():
    api = FakeApi()
    r = Reconciler(CONFIG, api)
    j = job(1, "Complete", uid="j1")
    r.bind({KEY: [qj(status={"observedGeneration": 1, "phase": "Succeeded", "jobName": "qj-g1"})]}, {KEY: [j]},
           {KEY: [pod(j, export=done(), calibrate=RUNNING, phase="Running")]})
    assert asyncio.run(r.reconcile(KEY)) is None and api.log_reads == []


def test_reads_of_nodes_that_do_not_answer_never_take_more_than_their_share():
    async def scenario():
        api, release = FakeApi(), asyncio.Event()
        pods = [f"p{i}" for i in range(progress.MAX_CONCURRENT_READS + 1)]
        for p in pods:
            api.logs[(p, "verify")] = release
        readings = [progress.Reading() for _ in pods]
        hanging = [asyncio.create_task(progress.read(api, "ml", (p, "verify"), r, now=0.0))
                   for p, r in zip(pods[:-1], readings)]
        await asyncio.sleep(0)
        await progress.read(api, "ml", (pods[-1], "verify"), readings[-1], now=0.0)     # returns at once
        assert api.log_reads == [(p, "verify") for p in pods[:-1]]
        assert readings[-1].wait(now=0.0) == progress.READ_SECONDS and readings[-1].misses == 0
        release.set()
        await asyncio.gather(*hanging)
        await progress.read(api, "ml", (pods[-1], "verify"), readings[-1], now=progress.READ_SECONDS)
        assert api.log_reads[-1] == (pods[-1], "verify")

    asyncio.run(scenario())
