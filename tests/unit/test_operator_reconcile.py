"""The reconciler's passes against a fake API (operator_fakes.FakeApi): which requests a pass
makes, in which order, from what the watches (kopf's indexes) show."""
from __future__ import annotations

import asyncio
import copy

import pytest

from kubeslim_api import reasons
from kubeslim_operator import progress
from kubeslim_operator.config import OperatorConfig
from kubeslim_operator.handlers import reconcile
from kubeslim_operator.handlers.reconcile import Reconciler
from kubeslim_operator.kube import ApiError
from kubeslim_operator.objects import trim_job
from operator_fakes import KEY, NS, UID, FakeApi, RUNNING, done, job, pod, qj, waiting
from tests.invalid_specs import VALID_SPEC

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig()


class World:
    """A reconciler bound to indexes the test fills, as kopf fills them from the watches."""

    def __init__(self, api: FakeApi, body: dict | None = None):
        self.api = api
        self.qjs = {KEY: [body or qj()]}
        self.jobs: dict = {}
        self.pods: dict = {}
        self.r = Reconciler(CONFIG, api)
        self.r.bind(self.qjs, self.jobs, self.pods)

    def show(self, *, body=None, jobs=None, pods=None):
        if body is not None:
            self.qjs[KEY] = [body]
        if jobs is not None:
            self.jobs[KEY] = list(jobs)
        if pods is not None:
            self.pods[KEY] = list(pods)

    def created(self) -> dict:
        """The Job the fake API created last, as the watch would show it."""
        return trim_job(self.api.jobs[self.api.of("create")[-1][1]])

    def reconcile(self):
        return asyncio.run(self.r.reconcile(KEY))


def test_a_new_quantizationjob_gets_its_job_and_then_its_status():
    w = World(FakeApi())
    assert w.reconcile() == CONFIG.status_coalesce_seconds
    assert w.api.calls == [("create", "qj-g1")]             # no status yet: the Job's own event brings it
    w.show(jobs=[w.created()])
    assert w.reconcile() is None
    assert [x[0] for x in w.api.calls] == ["create", "status", "event"]
    assert (w.api.statuses[0]["phase"], w.api.statuses[0]["jobName"]) == ("Pending", "qj-g1")


def test_a_lagging_watch_does_not_cost_a_second_job():
    w = World(FakeApi())
    w.reconcile()
    w.reconcile()                                           # the watch has not shown the Job yet
    assert len(w.api.of("create")) == 1
    assert w.api.statuses[0]["jobName"] == "qj-g1"


def test_a_job_the_status_recorded_and_that_is_gone_is_not_made_again():
    w = World(FakeApi())
    w.reconcile()
    w.show(jobs=[w.created()])
    w.reconcile()
    w.r = Reconciler(CONFIG, w.api)                         # a restarted operator: only the status remembers
    w.r.bind(w.qjs, w.jobs, w.pods)
    w.show(body=qj(status=w.api.statuses[-1]), jobs=[])
    w.reconcile()
    assert len(w.api.of("create")) == 1
    assert (w.api.statuses[-1]["phase"], w.api.statuses[-1]["reason"]) == ("Failed", reasons.JOB_DELETED)


def test_a_409_for_our_own_job_reads_it_and_creates_nothing_more():
    ours = job(1, uid="j1")
    api = FakeApi(jobs={"qj-g1": ours}, create_error=ApiError(409, {"message": "exists"}, "POST", "/jobs"))
    w = World(api)
    assert w.reconcile() is None
    assert [x[:2] for x in api.calls] == [("create", "qj-g1"), ("get", "qj-g1"), ("status", api.statuses[0]), ("event", "Normal")]
    assert api.statuses[0]["jobName"] == "qj-g1"
    api.create_error = None
    w.reconcile()                                           # the 409's Job stands in until the watch shows it
    assert len(api.of("create")) == 1


def test_a_409_for_a_foreign_job_is_reported_and_checked_again():
    foreign = job(1, owner="someone-else")
    api = FakeApi(jobs={"qj-g1": foreign}, create_error=ApiError(409, {"message": "exists"}, "POST", "/jobs"))
    w = World(api)
    assert w.reconcile() == CONFIG.recheck_seconds
    assert (api.statuses[0]["phase"], api.statuses[0]["reason"]) == ("Pending", reasons.JOB_NAME_CONFLICT)
    assert api.of("event")[0][1:] == ("Warning", reasons.JOB_NAME_CONFLICT)


def test_a_missing_ca_configmap_holds_the_job_until_it_appears():
    spec = copy.deepcopy(VALID_SPEC)
    spec["storage"] = {"caBundle": {"configMapName": "s3-ca"}}
    api = FakeApi()
    w = World(api, qj(spec=spec))
    assert w.reconcile() == CONFIG.recheck_seconds
    assert api.of("create") == [] and api.statuses[0]["reason"] == reasons.CONFIGMAP_NOT_FOUND
    api.configmaps["s3-ca"] = {"data": {"other": "x"}}
    w.show(body=qj(spec=spec, status=w.r.known_status(qj())))
    assert w.reconcile() == CONFIG.recheck_seconds
    assert api.of("create") == [] and api.statuses[-1]["reason"] == reasons.CONFIGMAP_KEY_NOT_FOUND
    api.configmaps["s3-ca"] = {"data": {"ca.crt": "PEM"}}
    assert w.reconcile() == CONFIG.status_coalesce_seconds
    assert api.of("create") == [("create", "qj-g1")]


def test_a_new_generation_stops_the_old_job_before_it_creates_its_own():
    w = World(FakeApi(), qj(2))
    w.show(jobs=[job(1, uid="old")])
    w.reconcile()
    assert w.api.calls == [("delete", "qj-g1", "old"), ("create", "qj-g2")]


def test_a_final_status_stops_a_job_that_still_runs_and_writes_nothing():
    status = {"observedGeneration": 1, "phase": "Failed", "reason": "ImagePullBackOff", "jobName": "qj-g1"}
    w = World(FakeApi(), qj(status=status))
    w.show(jobs=[job(1, uid="j1")])
    assert w.reconcile() is None
    assert w.api.calls == [("delete", "qj-g1", "j1")]
    w.show(jobs=[job(1, "Failed", uid="j1")])
    w.reconcile()
    assert w.api.calls == [("delete", "qj-g1", "j1")]       # a concluded Job is left to its TTL


def test_the_status_that_ends_a_run_is_written_before_its_job_stops():
    w = World(FakeApi())
    j = job(1, uid="j1")
    w.show(jobs=[j], pods=[pod(j, export=waiting("ImagePullBackOff", "Back-off pulling image"))])
    w.reconcile()
    assert [x[0] for x in w.api.calls] == ["status", "event", "delete"]
    assert (w.api.statuses[0]["phase"], w.api.statuses[0]["reason"]) == ("Failed", "ImagePullBackOff")


def test_progress_is_written_at_most_once_per_window(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(reconcile.time, "monotonic", lambda: clock[0])
    w = World(FakeApi())
    j = job(1, uid="j1")
    w.show(jobs=[j], pods=[pod(j, export=RUNNING, calibrate=waiting("PodInitializing"))])
    w.reconcile()
    w.show(body=qj(status=w.r.known_status(qj())), pods=[pod(j, export=done(), calibrate=RUNNING)])
    clock[0] += 1.0
    assert w.reconcile() == pytest.approx(CONFIG.status_progress_seconds - 1.0)
    assert [s.get("stage") for s in w.api.statuses] == ["Exporting"]
    clock[0] += CONFIG.status_progress_seconds
    # the pass comes back when the running stage's log is due to be read again (no line yet: backoff)
    assert w.reconcile() == pytest.approx(1.0 + progress.next_read(1) - CONFIG.status_progress_seconds - 1.0)
    assert [s.get("stage") for s in w.api.statuses] == ["Exporting", "Calibrating"]


def test_a_run_moving_on_writes_each_status_and_posts_events_only_for_its_start_and_end(monkeypatch):
    """Issue 17 item 6's write budget: Pending → Exporting → Calibrating → Failed is four status
    patches, and the Events a user needs: the Job made (Pending) and the outcome (Failed)."""
    clock = [1000.0]
    monkeypatch.setattr(reconcile.time, "monotonic", lambda: clock[0])
    w = World(FakeApi())
    j = job(1, uid="j1")
    walk = [pod(j), pod(j, export=RUNNING), pod(j, export=done(), calibrate=RUNNING)]
    for seen in walk:
        w.show(body=qj(status=w.r.known_status(qj())), jobs=[j], pods=[seen])
        clock[0] += CONFIG.status_progress_seconds           # past the progress window: every step is written
        w.reconcile()
    w.show(body=qj(status=w.r.known_status(qj())), jobs=[job(1, "Failed", uid="j1")], pods=[])
    w.reconcile()
    assert [(s["phase"], s["stage"] or "") for s in w.api.statuses] == [
        ("Pending", ""), ("Running", "Exporting"), ("Running", "Calibrating"), ("Failed", "")]
    assert [(t, r) for _, t, r in w.api.of("event")] == [("Normal", "Pending"), ("Warning", w.api.statuses[-1]["reason"])]


def test_a_quantizationjob_being_deleted_is_left_to_garbage_collection():
    w = World(FakeApi(), qj(deleting=True))
    w.show(jobs=[job(1)])
    assert w.reconcile() is None and w.api.calls == []


def test_a_finished_runs_spec_is_never_parsed(monkeypatch):
    parsed = []
    monkeypatch.setattr(reconcile, "parse_spec", lambda raw: parsed.append(raw))
    w = World(FakeApi(), qj(status={"observedGeneration": 1, "phase": "Succeeded", "jobName": "qj-g1"}))
    w.reconcile()
    assert parsed == [] and w.api.calls == []


def test_the_spec_is_parsed_once_per_generation(monkeypatch):
    calls = []
    real = reconcile.parse_spec
    monkeypatch.setattr(reconcile, "parse_spec", lambda raw, **kw: calls.append(1) or real(raw, **kw))
    w = World(FakeApi())
    w.reconcile()
    w.reconcile()
    w.show(body=qj(2))
    w.reconcile()
    assert len(calls) == 2


def test_what_the_reconciler_remembers_and_forgets():
    w = World(FakeApi())
    body = qj(status={"phase": "Pending"})
    w.r.seen(UID, 1)
    w.reconcile()
    w.reconcile()
    assert w.r.known_status(body)["jobName"] == "qj-g1"     # what it wrote, ahead of the watch
    assert list(w.r.phases()) == [(NS, "Pending")]
    w.r.forget(UID)
    assert w.r.known_status(body) == {"phase": "Pending"}   # the object's own status again
    w.reconcile()
    assert len(w.api.of("create")) == 2                     # the stand-in Job is forgotten too


def test_nothing_indexed_nothing_done():
    w = World(FakeApi())
    w.qjs.clear()
    assert w.reconcile() is None and w.api.calls == []


# -- the kopf wiring (main.py): state in the operator memo ------------------------------------------

def test_the_handlers_keep_their_state_in_the_operator_memo(monkeypatch):
    import kopf

    from kubeslim_operator import main

    info = kopf.ConnectionInfo(server="https://127.0.0.1:1", token="t")
    monkeypatch.setattr(main, "login_info", lambda settings, **_: info)
    phases = []
    monkeypatch.setattr(main.metrics, "start", lambda port, collect: phases.append(collect))
    memo, settings = kopf.Memo(config=CONFIG), kopf.OperatorSettings()

    async def go():
        await main.startup(settings=settings, memo=memo)
        assert list(phases[0]()) == []                      # before login: no reconciler yet
        assert main.login(settings=settings, memo=memo) is info
        kube, reconciler = memo.kube, memo.reconciler
        main.login(settings=settings, memo=memo)            # a re-login keeps the client
        assert (memo.kube, memo.reconciler) == (kube, reconciler) and reconciler.config is CONFIG
        per_object = copy.copy(memo)                        # what kopf hands a resource handler
        indexes = {"qj_index": {KEY: [qj()]}, "job_index": {}, "pod_index": {}}
        assert await main.job_index(body=kopf.Body(job(1)), memo=per_object) == {KEY: job(1)}
        await main.qj_event(type="ADDED", body=kopf.Body(qj()), namespace=KEY[0], name=KEY[1], memo=per_object,
                            **indexes)
        assert reconciler.qjs is indexes["qj_index"] and memo.scheduler.ready
        assert list(phases[0]()) == [(KEY[0], "")]
        await main.cleanup(memo=memo)
        assert memo.trimmer.cancelling() or memo.trimmer.cancelled()
    asyncio.run(go())
