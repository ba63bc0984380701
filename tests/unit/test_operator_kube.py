"""kube.py's request shapes that need no API server: an Event's fields cut to the lengths the API
server validates, and GET-or-None (404 is an answer, any other error is raised)."""
from __future__ import annotations

import asyncio

import kopf
import pytest

from kubeslim_operator import constants as c
from kubeslim_operator.kube import ApiError, Kube, get_or_none
from kubeslim_operator.times import parse_time

pytestmark = pytest.mark.unit


class RecordingKube(Kube):
    """A Kube whose requests are recorded and answered from a table instead of sent."""

    def __init__(self, answers: dict[str, object] | None = None):
        super().__init__(kopf.ConnectionInfo(server="https://api.invalid"))
        self.sent: list[tuple[str, str, object]] = []
        self.answers = answers or {}

    async def request(self, method, path, *, resource, body=None, **_):
        self.sent.append((method, path, body))
        answer = self.answers.get(path, {})
        if isinstance(answer, ApiError):
            raise answer
        return answer


def test_an_event_with_overlong_fields_is_cut_to_the_api_servers_limits():
    kube = RecordingKube()
    kube.instance = "i" * 300
    qj = {"metadata": {"name": "q" * 253, "namespace": "team-a", "uid": "u1"}}
    asyncio.run(kube.post_event(qj, "Warning", "R" * 300, "m" * 5000))
    [(method, path, event)] = kube.sent
    assert (method, path) == ("POST", "/api/v1/namespaces/team-a/events")
    assert event["reason"] == "R" * c.EVENT_REASON_MAX_CHARS
    assert event["message"] == "m" * c.EVENT_MESSAGE_MAX_CHARS
    assert event["reportingInstance"] == "i" * c.EVENT_REPORTING_INSTANCE_MAX_CHARS
    assert len(event["metadata"]["name"]) <= 253                     # a DNS subdomain
    assert event["metadata"]["name"].startswith("q" * c.EVENT_NAME_PREFIX_MAX_CHARS + ".")
    assert parse_time(event["firstTimestamp"]) is not None


def test_a_short_event_is_sent_as_given():
    kube = RecordingKube()
    asyncio.run(kube.post_event({"metadata": {"name": "digits", "namespace": "ns"}}, "Normal", "Succeeded", "Done."))
    [(_, _, event)] = kube.sent
    assert (event["reason"], event["message"], event["type"]) == ("Succeeded", "Done.", "Normal")
    assert event["involvedObject"]["name"] == "digits"


def test_get_or_none_is_none_for_a_missing_object_and_raises_any_other_error():
    missing, forbidden = "/api/v1/namespaces/ns/configmaps/gone", "/api/v1/namespaces/ns/configmaps/secret-ish"
    kube = RecordingKube({
        "/api/v1/namespaces/ns/configmaps/ca": {"data": {"ca.crt": "x"}},
        missing: ApiError(404, {"message": "not found"}, "GET", missing),
        forbidden: ApiError(403, {"message": "forbidden"}, "GET", forbidden),
    })
    assert asyncio.run(kube.get_configmap("ns", "ca")) == {"data": {"ca.crt": "x"}}
    assert asyncio.run(kube.get_configmap("ns", "gone")) is None
    with pytest.raises(ApiError) as refused:
        asyncio.run(get_or_none(kube, forbidden, resource="configmaps"))
    assert refused.value.status == 403
