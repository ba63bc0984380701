"""Leader election (operator/kubeslim_operator/leader.py): the pure decisions in tables, then
electors against an in-memory Lease API with optimistic concurrency and a hand-driven clock."""
from __future__ import annotations

import asyncio
import copy
import datetime
import os
import signal

import pytest

from kubeslim_operator.__main__ import build_config, parse_args
from kubeslim_operator.config import ConfigError, OperatorConfig
from kubeslim_operator.kube import ApiError
from kubeslim_operator.leader import Action, LeaderElector, decide, lease_spec, probe, released_spec, run_elected

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("spec,observed_at,now,action", [
    (None, None, 0.0, Action.CREATE),
    ({"holderIdentity": "me", "leaseDurationSeconds": 15}, 0.0, 100.0, Action.RENEW),
    ({"leaseDurationSeconds": 1}, 0.0, 0.0, Action.TAKE),                       # released
    ({"holderIdentity": "", "leaseDurationSeconds": 15}, 0.0, 0.0, Action.TAKE),
    ({"holderIdentity": "other", "leaseDurationSeconds": 15}, 10.0, 24.9, Action.WAIT),
    ({"holderIdentity": "other", "leaseDurationSeconds": 15}, 10.0, 25.0, Action.TAKE),
    # Only the local observation counts: the record's own renewTime (another clock) is ignored.
    ({"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": "2000-01-01T00:00:00.000000Z"}, 10.0, 11.0, Action.WAIT),
    ({"holderIdentity": "other", "leaseDurationSeconds": 15}, None, 1e9, Action.WAIT),
])
def test_decide(spec, observed_at, now, action):
    assert decide(spec, "me", observed_at, now) is action


@pytest.mark.parametrize("before,action,expected", [
    (None, Action.CREATE, {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-01-02T03:04:05.123456Z",
                           "renewTime": "2026-01-02T03:04:05.123456Z", "leaseTransitions": 0}),
    ({"holderIdentity": "old", "leaseDurationSeconds": 15, "acquireTime": "x", "renewTime": "y", "leaseTransitions": 3}, Action.TAKE,
     {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-01-02T03:04:05.123456Z",
      "renewTime": "2026-01-02T03:04:05.123456Z", "leaseTransitions": 4}),
    ({"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "x", "renewTime": "y", "leaseTransitions": 4}, Action.RENEW,
     {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "x", "renewTime": "2026-01-02T03:04:05.123456Z",
      "leaseTransitions": 4}),
])
def test_lease_spec(before, action, expected):
    assert lease_spec(before, "me", action, T0, 15) == expected


def test_release_leaves_no_holder_and_one_second():
    assert released_spec({"holderIdentity": "me", "leaseTransitions": 2}, T0) == {
        "leaseDurationSeconds": 1, "acquireTime": "2026-01-02T03:04:05.123456Z",
        "renewTime": "2026-01-02T03:04:05.123456Z", "leaseTransitions": 2}


TIMING = {"lease_duration": 15, "renew_deadline": 10, "retry_period": 2}


@pytest.mark.parametrize("leading,last_attempt,last_read,last_renewal,now,live,ready", [
    (False, 100, 100, None, 101, True, True),           # a standby that reads the Lease
    (False, 100, 80, None, 101, True, False),           # API unreachable: alive (a restart cannot help), not ready
    (False, 70, 70, None, 101, False, False),           # the loop is stuck
    (False, 100, None, None, 101, True, False),         # never read the Lease yet
    (True, 100, 100, 100, 105, True, True),
    (True, 100, 100, 89, 100, True, False),             # renewals failing past the deadline
])
def test_probe(leading, last_attempt, last_read, last_renewal, now, live, ready):
    assert probe(leading=leading, last_attempt=last_attempt, last_read=last_read, last_renewal=last_renewal,
                 now=now, **TIMING) == (live, ready)


class LeaseAPI:
    """GET/POST/PUT of one Lease with resourceVersion checks, as the API server answers them."""

    def __init__(self):
        self.lease: dict | None = None
        self.rv = 0
        self.down = False
        self.writes: list[str] = []

    async def request(self, method: str, path: str, *, resource: str, body=None, **_):
        if self.down:
            raise ApiError(503, {"message": "unavailable"}, method, path)
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, {"message": "not found"}, method, path)
            return copy.deepcopy(self.lease)
        if method == "POST" and self.lease is not None:
            raise ApiError(409, {"message": "already exists"}, method, path)
        if method == "PUT" and (self.lease is None or body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]):
            raise ApiError(409, {"message": "conflict"}, method, path)
        self.rv += 1
        self.lease = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": str(self.rv)}}
        self.writes.append(body["spec"].get("holderIdentity", ""))
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(api: LeaseAPI, clock: Clock, name: str, **timing) -> LeaderElector:
    # The wall clock moves with the monotonic one: each renewal writes a new renewTime.
    return LeaderElector(api, "ns", "kubeslim", name, clock=clock, wall=lambda: T0 + datetime.timedelta(seconds=clock.now),  # type: ignore[arg-type]
                         **{**TIMING, **timing})


def test_one_leader_and_takeover_only_after_a_lease_duration_of_silence():
    api, clock = LeaseAPI(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")

    async def scenario():
        assert await a.try_acquire_or_renew() is True
        assert await b.try_acquire_or_renew() is False and b.holder == "a"
        for _ in range(10):                 # a renews, b keeps seeing a fresh record
            clock.now += 2
            assert await a.try_acquire_or_renew() is True
            assert await b.try_acquire_or_renew() is False
        # a dies. b counts from when it last saw the record change, on its own clock.
        clock.now += 14.9
        assert await b.try_acquire_or_renew() is False
        clock.now += 0.1
        assert await b.try_acquire_or_renew() is True
        # a fresh candidate has never seen the record: it waits a full duration too.
        c = elector(api, clock, "c")
        assert await c.try_acquire_or_renew() is False
        # a, back from a pause, reads a Lease that names b: it does not lead.
        assert await a.try_acquire_or_renew() is False and a.leading is False
        return api.lease["spec"]
    spec = asyncio.run(scenario())
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win():
    api, clock = LeaseAPI(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")

    async def scenario():
        api.lease = {"metadata": {"name": "kubeslim", "namespace": "ns", "resourceVersion": "0"},
                     "spec": {"holderIdentity": "dead", "leaseDurationSeconds": 15}}
        await a.try_acquire_or_renew(), await b.try_acquire_or_renew()
        clock.now += 15
        # Both read the same resourceVersion before either writes.
        real_get = api.request
        reads = [await real_get("GET", "", resource="leases"), await real_get("GET", "", resource="leases")]

        async def stale_get(method, path, **kw):
            return reads.pop() if method == "GET" else await real_get(method, path, **kw)
        api.request = stale_get  # type: ignore[method-assign]
        return await a.try_acquire_or_renew(), await b.try_acquire_or_renew()
    assert asyncio.run(scenario()) == (True, False)
    assert api.writes == ["a"]


def test_the_leader_gives_up_after_the_renew_deadline_and_exits_at_once():
    api = LeaseAPI()
    fast = {"lease_duration": 1, "renew_deadline": 0.3, "retry_period": 0.05}
    a = LeaderElector(api, "ns", "kubeslim", "a", **fast)  # type: ignore[arg-type]
    exits: list[int] = []

    async def operator():
        api.down = True                 # the API goes away while the operator runs
        await asyncio.sleep(30)

    async def scenario():
        t0 = asyncio.get_running_loop().time()
        code = await run_elected(a, operator, exit_now=exits.append)
        return code, asyncio.get_running_loop().time() - t0
    code, took = asyncio.run(scenario())
    assert exits == [1] and code == 1 and a.leading is False
    # Not after the operator's 30 s: it gave up at the renew deadline (a loaded machine may add seconds,
    # so the bound separates the two outcomes instead of timing the deadline).
    assert 0.3 <= took < 10.0, took


def test_a_stopped_leader_releases_and_the_standby_takes_over_on_its_next_try():
    api, clock = LeaseAPI(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")

    async def scenario():
        await a.try_acquire_or_renew()
        await b.try_acquire_or_renew()
        await a.release()
        assert api.lease["spec"].get("holderIdentity") is None and api.lease["spec"]["leaseDurationSeconds"] == 1
        return await b.try_acquire_or_renew()
    assert asyncio.run(scenario()) is True
    assert api.writes == ["a", "", "b"]


def test_standby_stops_on_request_without_ever_running_the_operator():
    api, clock = LeaseAPI(), Clock()
    holder, standby = elector(api, clock, "a"), elector(api, clock, "b", retry_period=0.01)
    ran = []

    async def scenario():
        await holder.try_acquire_or_renew()
        task = asyncio.create_task(run_elected(standby, lambda: ran.append(1)))   # type: ignore[arg-type,return-value]
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(task, 5)
    assert asyncio.run(scenario()) == 0 and ran == []
    assert standby.probe()[2]["role"] == "standby" and standby.probe()[2]["holder"] == "a"


@pytest.mark.parametrize("env,message", [
    ({"KUBESLIM_LEADER_ELECTION": "true"}, "KUBESLIM_LEADER_ELECTION_NAMESPACE"),
    ({"KUBESLIM_LEADER_ELECTION": "yes"}, "KUBESLIM_LEADER_ELECTION must be true or false"),
    ({"KUBESLIM_RENEW_DEADLINE_SECONDS": "15"}, "must be less than KUBESLIM_LEASE_DURATION_SECONDS"),
    ({"KUBESLIM_RETRY_PERIOD_SECONDS": "9"}, "KUBESLIM_RETRY_PERIOD_SECONDS (9) must be less than"),
    ({"KUBESLIM_LEASE_DURATION_SECONDS": "0"}, "KUBESLIM_LEASE_DURATION_SECONDS must be >= 1"),
])
def test_bad_leader_election_env_is_refused_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        OperatorConfig.from_env(env)


def test_leader_election_env_and_flag():
    cfg = OperatorConfig.from_env({"KUBESLIM_LEADER_ELECTION": "true", "KUBESLIM_LEADER_ELECTION_NAMESPACE": "ops",
                                   "KUBESLIM_LEADER_ELECTION_NAME": "ks", "KUBESLIM_LEASE_DURATION_SECONDS": "30"})
    assert (cfg.leader_election, cfg.leader_election_namespace, cfg.leader_election_name, cfg.lease_duration_seconds) == \
        (True, "ops", "ks", 30)
    assert OperatorConfig.from_env({}).leader_election is False


def test_leader_elect_flag_needs_the_lease_namespace(monkeypatch):
    for k in ("KUBESLIM_LEADER_ELECTION", "KUBESLIM_LEADER_ELECTION_NAMESPACE"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="--leader-elect needs KUBESLIM_LEADER_ELECTION_NAMESPACE"):
        build_config(parse_args(["--leader-elect"]))
    monkeypatch.setenv("KUBESLIM_LEADER_ELECTION_NAMESPACE", "ops")
    assert build_config(parse_args(["--leader-elect"])).leader_election is True
