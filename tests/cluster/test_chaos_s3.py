"""S3 goes away while a real QuantizationJob calibrates on the real node: the status says so, naming
the S3 URI, and the Job's retry succeeds once S3 is back.

The job talks to the devenv's S3 server through a TCP proxy on the node's bridge address that only
this test uses, so "S3 stopped" (connections reset, then refused) disturbs no one else.
"""
from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import pytest

from chaos_harness import TcpProxy, full_only, record
from kubeslim_dev import demo
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
    demo.seed(s3, bucket, "digits")          # a bucket of its own: the model and data match this checkout
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"]}}))
    doc = demo.example_manifest("s3-outage", bucket, f"http://{s3_proxy.address}")
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["quantization"]["algos"] = ["hist"]
    doc["spec"]["scheduling"] = real_node.scheduling
    doc["spec"]["resources"] = {"gpu": 1, "cpu": "1", "memory": "2Gi"}
    doc["spec"]["runPolicy"] = {"backoffLimit": 1, "activeDeadlineSeconds": 480}
    qj.apply(doc)

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
