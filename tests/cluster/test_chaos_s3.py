"""S3 trouble while a real QuantizationJob runs on the real node (make chaos).

- S3 stopped while calibrating, then back: the status says so, naming the S3 URI, and the Job's
  retry succeeds once S3 is back. The job talks to S3 through a TCP proxy on the node's bridge
  address that only this test uses, so "S3 stopped" (connections reset, then refused) disturbs no
  one else.
- A flaky S3: pods → toxiproxy (latency, connections reset, stalled and cut after some bytes, both
  ways) → an HTTP proxy of ours that answers 5xx (toxiproxy has no HTTP-status toxic) → S3, during
  the whole run, downloads and uploads alike. boto3's standard retries (and storage.py's re-read of
  a cut body) carry the run to Succeeded; every artifact a status ever links is whole.
- An S3 that only answers 5xx: the run ends Failed with StorageUnavailable after the retry budget,
  naming the S3 object, and no status ever links an artifact.
"""
from __future__ import annotations

import os
import time
from urllib.parse import urlparse

import pytest

from built_tools import built_tool
from chaos_harness import FaultyS3, TcpProxy, Toxiproxy, digits_job, full_only, record, recorders, run_figures  # noqa: F401
from operator_harness import crd, operator_identity, qj  # noqa: F401
from operator_harness import operator_on_real_node as operator  # noqa: F401

pytestmark = [pytest.mark.timeout(600), full_only]     # a real Paddle run: make chaos


@pytest.fixture
def s3_proxy(s3_env):
    upstream = urlparse(s3_env["AWS_ENDPOINT_URL"])
    proxy = TcpProxy((upstream.hostname, upstream.port), host=upstream.hostname).start()
    yield proxy
    proxy.close()


def test_s3_stopped_while_calibrating_then_back(operator, qj, namespace, kubectl, s3, s3_env, s3_proxy, real_node, bucket):
    qj.apply(digits_job(kubectl, s3, s3_env, namespace, bucket, real_node, "s3-outage", f"http://{s3_proxy.address}", 1,
                        ["hist"]))

    qj.wait("s3-outage", lambda s: s.get("stage") == "Calibrating", what="calibrating", timeout=240)
    t_cut = time.monotonic()
    s3_proxy.cut()
    st = qj.wait("s3-outage", lambda s: s if s.get("reason") in ("Retrying", "EndpointUnreachable") or s.get("phase") == "Failed"
                 else None, what="the outage reported", timeout=240)
    # Reported, not final: the Job retries; the message names the S3 object it could not reach.
    assert (st["phase"], st["reason"]) == ("Pending", "Retrying"), st
    assert "EndpointUnreachable" in st["message"] and f"s3://{bucket}/" in st["message"], st["message"]
    qj_message = st["message"]
    t_reported = time.monotonic()
    s3_proxy.restore()
    st = qj.wait_phase("s3-outage", "Succeeded", timeout=300)
    record("s3_outage", {"cut_to_retrying_status_s": round(t_reported - t_cut, 1),
                         "restored_to_succeeded_s": round(time.monotonic() - t_reported, 1),
                         "retrying_message": qj_message})
    assert st["artifacts"]["model"].startswith(f"s3://{bucket}/out/s3-outage/")
    assert len(qj.pods("s3-outage-g1")) == 2                   # the retry did it, in the same Job


# -- a flaky S3 -----------------------------------------------------------------------------------

SEED = int(os.environ.get("KUBESLIM_CHAOS_SEED") or time.time())
# The network's faults for the whole run. toxicity: the share of connections a toxic takes
# (boto3 keeps connections open, so a cut one is a request failing and a new connection).
FLAKY_TOXICS = [
    ("latency", "latency", "downstream", 1.0, {"latency": 40, "jitter": 30}),
    ("cut-downloads", "limit_data", "downstream", 0.2, {"bytes": 48 << 10}),   # a body cut mid-download
    ("cut-uploads", "limit_data", "upstream", 0.2, {"bytes": 48 << 10}),       # a body cut mid-upload
    ("reset", "reset_peer", "downstream", 0.05, {"timeout": 500}),            # connection reset by peer
    ("stall", "timeout", "downstream", 0.03, {"timeout": 2000}),              # no data, then closed
]
FLAKY_5XX_RATE = 0.1        # of the requests besides each write's first attempt (always a 5xx)


@pytest.fixture
def flaky_s3(s3_env, tmp_path):
    """pods → toxiproxy on the node's bridge address → FaultyS3 → the devenv's S3. Yields
    (endpoint for the pods, toxiproxy, the FaultyS3), no toxic yet and no 5xx answers."""
    upstream = urlparse(s3_env["AWS_ENDPOINT_URL"])
    faulty = FaultyS3((upstream.hostname, upstream.port), rate=0.0, seed=SEED).start()
    tp = Toxiproxy(built_tool("toxiproxy"), str(tmp_path / "toxiproxy.log")).start()
    try:
        listen = tp.proxy("s3", f"{upstream.hostname}:0", faulty.address)
        yield f"http://{listen}", tp, faulty
    finally:
        tp.stop()
        faulty.stop()


def test_s3_flaky_during_download_and_upload(operator, qj, namespace, kubectl, s3, s3_env, flaky_s3, recorders, real_node,
                                             bucket):
    endpoint, tp, faulty = flaky_s3
    qjs, jobs = recorders
    doc = digits_job(kubectl, s3, s3_env, namespace, bucket, real_node, "s3-flaky", endpoint, 2, ["hist"])
    for name, kind, stream, toxicity, attributes in FLAKY_TOXICS:
        tp.add("s3", name, kind, stream, toxicity, **attributes)
    faulty.set_rate(FLAKY_5XX_RATE)
    t0 = time.monotonic()
    qj.apply(doc)
    st = qj.wait("s3-flaky", lambda s: s if s.get("phase") in ("Succeeded", "Failed") else None, what="final", timeout=480)
    time.sleep(2)                                   # the watch has every status write by now
    figures = {"seed": SEED, "toxics": {t[0]: {"type": t[1], "stream": t[2], "toxicity": t[3], **t[4]} for t in FLAKY_TOXICS},
               "s3_requests": dict(faulty.requests), "s3_5xx_answers": dict(faulty.faults),
               **run_figures("s3-flaky", qjs, jobs, s3, t0, len(qj.pods("s3-flaky-g1")))}
    record("s3_flaky", figures)
    assert (st["phase"], st.get("reason")) == ("Succeeded", ""), st.get("message")
    # The faults hit both ways: downloads (GET) and uploads (PUT) were answered 5xx and retried.
    assert faulty.faults.get("GET", 0) > 0 and faulty.faults.get("PUT", 0) > 0, faulty.faults
    assert (figures["duplicates"], figures["lost"], figures["backwards"]) == (0, 0, 0), figures
    assert figures["wrong"] == 0, figures["wrong_detail"]
    assert figures["statuses_with_links"] > 0 and st["artifacts"]["model"].startswith(f"s3://{bucket}/out/s3-flaky/")


def test_s3_failing_past_the_retry_budget(operator, qj, namespace, kubectl, s3, s3_env, flaky_s3, recorders, real_node,
                                          bucket):
    endpoint, tp, faulty = flaky_s3
    qjs, jobs = recorders
    doc = digits_job(kubectl, s3, s3_env, namespace, bucket, real_node, "s3-down", endpoint, 0, ["hist"])
    faulty.set_rate(1.0)                            # S3 is there, and answers every request 500 or 503
    t0 = time.monotonic()
    qj.apply(doc)
    st = qj.wait_phase("s3-down", "Failed", timeout=300)
    time.sleep(2)
    figures = {"s3_requests": dict(faulty.requests), **run_figures("s3-down", qjs, jobs, s3, t0, len(qj.pods("s3-down-g1")))}
    record("s3_failing", figures)
    assert st["reason"] == "StorageUnavailable", st
    assert f"s3://{bucket}/" in st["message"] and "times" in st["message"], st["message"]
    assert figures["jobs"] == 1 and figures["statuses_with_links"] == 0, figures
