"""Storage error mapping and ranged reads, without a server: botocore's own exception types and a
Stubber stand in for the wire."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from botocore import exceptions as bx
from botocore.stub import Stubber

from kubeslim_api.contract import EXIT_BAD_INPUT, EXIT_TRANSIENT
from kubeslim_job.errors import BadInput, Transient
from kubeslim_job.storage import NpzMember, RangedReader, Storage, join_uri, open_npz, parse_uri

from job_fakes import MemStorage

URI = "s3://data/train/list.txt"


@pytest.fixture
def storage(monkeypatch):
    for k in ("AWS_ENDPOINT_URL", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUNITTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret")
    return Storage(endpoint="http://s3.invalid:9000", addressing_style="path")


def _client_error(code: str, status: int) -> bx.ClientError:
    return bx.ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                          "GetObject")


@pytest.mark.parametrize("exc, kind, reason", [
    (_client_error("NoSuchKey", 404), BadInput, "NoSuchKey"),
    (_client_error("NoSuchBucket", 404), BadInput, "NoSuchBucket"),
    (_client_error("AccessDenied", 403), BadInput, "AccessDenied"),
    (_client_error("403", 403), BadInput, "AccessDenied"),
    (_client_error("InvalidAccessKeyId", 403), BadInput, "InvalidAccessKeyId"),
    (_client_error("XAdminUserNotFound", 403), BadInput, "InvalidAccessKeyId"),
    (_client_error("SignatureDoesNotMatch", 403), BadInput, "SignatureDoesNotMatch"),
    (_client_error("SlowDown", 503), Transient, "StorageUnavailable"),
    (_client_error("InternalError", 500), Transient, "StorageUnavailable"),
    (_client_error("Weird", 502), Transient, "StorageUnavailable"),
    (bx.ReadTimeoutError(endpoint_url="http://s3.invalid:9000"), Transient, "StorageTimeout"),
    (bx.ConnectTimeoutError(endpoint_url="http://s3.invalid:9000"), Transient, "StorageTimeout"),
    (bx.EndpointConnectionError(endpoint_url="http://s3.invalid:9000"), Transient, "EndpointUnreachable"),   # S3 down
    (bx.NoCredentialsError(), BadInput, "NoCredentials"),
    (bx.SSLError(endpoint_url="https://x", error="bad cert"), BadInput, "TLSVerifyFailed"),
])
def test_translate(storage, exc, kind, reason):
    err = storage.translate(exc, "spec.data.calibration.uri", URI)
    assert isinstance(err, kind) and err.reason == reason
    assert err.exit_code == (EXIT_BAD_INPUT if kind is BadInput else EXIT_TRANSIENT)
    assert "spec.data.calibration.uri" in err.message and URI in err.message
    assert "unit-test-secret" not in err.message


def test_a_failing_server_is_storage_unavailable_naming_its_code_and_the_attempts(storage):
    err = storage.translate(_client_error("InternalError", 500), "spec.output.uri", URI)
    # Not S3's "InternalError" as the reason: that one is the job's own crash (reasons.INTERNAL_ERROR).
    assert err.reason == "StorageUnavailable"
    assert "InternalError (HTTP 500)" in err.message and f"{storage.max_attempts} times" in err.message


def test_an_upload_that_fails_after_the_retries_is_transient(storage, tmp_path, monkeypatch):
    from boto3.exceptions import S3UploadFailedError

    def failing(*args, **kwargs):
        raise S3UploadFailedError("Failed to upload f to out/model.pdmodel: An error occurred (ServiceUnavailable) when "
                                  "calling the PutObject operation (reached max retries: 4): Please reduce your request rate.")
    monkeypatch.setattr(storage.client, "upload_file", failing)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(Transient) as ei:
        storage.upload(str(tmp_path / "f"), "s3://out/model.pdmodel", "spec.output.uri")
    assert ei.value.reason == "StorageUnavailable" and "ServiceUnavailable" in ei.value.message
    assert "s3://out/model.pdmodel" in ei.value.message


def test_head_404_is_named_by_the_caller(storage):
    assert storage.translate(_client_error("404", 404), "f", URI, missing="NoSuchBucket").reason == "NoSuchBucket"


def test_access_denied_through_a_real_client_call(storage):
    with Stubber(storage.client) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(BadInput) as ei:
            storage.get_range(URI, "spec.data.evaluation.listFile", 0, 10)
    assert ei.value.reason == "AccessDenied" and "spec.data.evaluation.listFile s3://data/train/list.txt" in ei.value.message


class _CutStream(io.RawIOBase):
    """A socket's worth of body that breaks after `keep` bytes, as urllib3 reports a reset mid-body."""

    def __init__(self, data: bytes, keep: int):
        super().__init__()
        self.data, self.keep, self.pos = data, keep, 0

    def read(self, amt=-1):
        from urllib3.exceptions import ProtocolError

        if self.pos >= self.keep:
            raise ProtocolError("Connection broken: ConnectionResetError(104, 'Connection reset by peer')")
        amt = self.keep - self.pos if amt is None or amt < 0 else min(amt, self.keep - self.pos)
        chunk = self.data[self.pos:self.pos + amt]
        self.pos += len(chunk)
        return chunk


def _body(data: bytes, *, cut_at: int | None = None, short_by: int = 0):
    """A GetObject body: whole, reset after `cut_at` bytes, or ending `short_by` bytes before its Content-Length."""
    from botocore.response import StreamingBody

    if cut_at is not None:
        return StreamingBody(_CutStream(data, cut_at), len(data))
    return StreamingBody(io.BytesIO(data[:len(data) - short_by]), len(data))


def test_a_body_cut_mid_download_is_read_again(storage, tmp_path):
    data = bytes(range(256)) * 64
    with Stubber(storage.client) as stub:
        stub.add_response("get_object", {"Body": _body(data, cut_at=1000)}, {"Bucket": "data", "Key": "train/list.txt"})
        stub.add_response("get_object", {"Body": _body(data, short_by=10)}, {"Bucket": "data", "Key": "train/list.txt"})
        stub.add_response("get_object", {"Body": _body(data)}, {"Bucket": "data", "Key": "train/list.txt"})
        assert storage.download(URI, str(tmp_path / "x"), "spec.data.calibration.uri") == len(data)
        stub.assert_no_pending_responses()
    assert (tmp_path / "x").read_bytes() == data          # the file holds the third answer only, not a mix


def test_a_body_cut_every_time_is_transient_after_the_attempt_budget(storage, monkeypatch):
    monkeypatch.setattr(storage, "max_attempts", 3)
    data = b"x" * 5000
    with Stubber(storage.client) as stub:
        for _ in range(3):
            stub.add_response("get_object", {"Body": _body(data, cut_at=100)})
        with pytest.raises(Transient) as ei:
            storage.get_bytes(URI, "spec.data.calibration.uri")
        stub.assert_no_pending_responses()                # exactly the budget: no fourth request
    assert ei.value.reason == "StorageConnectionLost" and URI in ei.value.message


def test_the_attempt_budget_is_botocores_standard_mode_setting(monkeypatch):
    monkeypatch.setenv("KUBESLIM_S3_MAX_ATTEMPTS", "6")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    st = Storage(endpoint="http://s3.invalid:9000")
    assert st.max_attempts == 6
    assert st.client.meta.config.retries == {"total_max_attempts": 6, "mode": "standard"}


@pytest.mark.parametrize("uri, expect", [
    ("s3://b/k/x.npz", ("b", "k/x.npz")), ("s3://b/prefix/", ("b", "prefix/")), ("s3://b", ("b", "")),
])
def test_parse_uri(uri, expect):
    assert parse_uri(uri) == expect


@pytest.mark.parametrize("uri", ["http://b/k", "s3:///k", "b/k"])
def test_parse_uri_rejects(uri):
    with pytest.raises(BadInput):
        parse_uri(uri)


def test_join_uri():
    assert join_uri("s3://b/p/", "/img/a.png") == "s3://b/p/img/a.png"
    assert join_uri("s3://b/p", "list.txt") == "s3://b/p/list.txt"


def test_ranged_reader_reads_only_the_prefix_it_is_asked_for():
    blob = bytes(range(256)) * 40_000            # 10 MB
    st = MemStorage({"s3://b/big": blob})
    r = io.BufferedReader(RangedReader(st, "s3://b/big", "f"), buffer_size=4096)
    assert r.read(100_000) == blob[:100_000]
    assert st.bytes_read <= 1.2 * 100_000 + 16_384
    r.seek(5_000_000)
    assert r.read(10) == blob[5_000_000:5_000_010]
    r.seek(-5, io.SEEK_END)
    assert r.read() == blob[-5:]


def test_iter_lines_stops_fetching_when_the_caller_stops():
    text = "".join(f"img/{i:06d}.png {i % 10}\n" for i in range(200_000)).encode()   # ~4 MB
    st = MemStorage({"s3://b/list.txt": text})
    lines = st.iter_lines("s3://b/list.txt", "f")
    first = [next(lines) for _ in range(100)]
    assert first[99] == "img/000099.png 9\n"
    assert st.bytes_read < 64 << 10


def test_fetch_many_keeps_order():
    objs = {f"s3://b/{i}": bytes([i]) * (i + 1) for i in range(50)}
    st = MemStorage(objs)
    got = list(st.fetch_many(((u, n) for n, u in enumerate(objs)), "f"))
    assert [t for t, _ in got] == list(range(50)) and all(d == objs[f"s3://b/{t}"] for t, d in got)


def test_env_endpoint_overrides_the_spec(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    st = Storage(endpoint="http://from-spec:9000", region="eu-west-1", verify_tls=False, addressing_style="virtual")
    assert st.client.meta.endpoint_url == "http://from-env:9000"
    assert st.client.meta.region_name == "eu-west-1"
    assert st.client.meta.config.s3["addressing_style"] == "virtual"


def test_ca_bundle_from_env(monkeypatch, tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
    st = Storage(endpoint="https://s3.example:9000")
    assert st.client._endpoint.http_session._verify == str(ca)


def _npz_of(arr, version, compress=zipfile.ZIP_STORED) -> bytes:
    """An .npz whose one member uses .npy format `version` (np.savez picks 1.0 itself)."""
    from numpy.lib import format as npf

    member = io.BytesIO()
    npf.write_array(member, arr, version=version)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as zf:
        zf.writestr("images.npy", member.getvalue())
    return buf.getvalue()


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npz_member_reads_the_first_rows_of_either_header_version(version, compress):
    arr = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    st = MemStorage({"s3://b/d.npz": _npz_of(arr, version, compress)})
    member = NpzMember(st, "s3://b/d.npz", "spec.data.calibration.uri", open_npz(st, "s3://b/d.npz", "f"), "images.npy")
    assert (member.shape, member.dtype, member.row_bytes) == ((6, 4, 4), np.dtype(np.uint8), 16)
    assert np.array_equal(np.concatenate(list(member.rows(4, chunk_rows=3))), arr[:4])


def test_npz_member_refuses_what_it_cannot_read():
    st = MemStorage({"s3://b/v3.npz": _npz_of(np.zeros((2, 2), np.uint8), (3, 0)), "s3://b/not.npz": b"x" * 64})
    with pytest.raises(BadInput, match="not a valid .npy array.*version 3.0") as exc:
        NpzMember(st, "s3://b/v3.npz", "f", open_npz(st, "s3://b/v3.npz", "f"), "images.npy")
    assert exc.value.reason == "BadNpz"
    with pytest.raises(BadInput, match="not an .npz file"):
        open_npz(st, "s3://b/not.npz", "f")
