"""The storage module against the real devenv S3: multipart upload, ranged reads, error codes."""
from __future__ import annotations

import os

import pytest

from kubeslim_job.errors import BadInput
from kubeslim_job.storage import Storage

pytestmark = pytest.mark.cluster


@pytest.fixture
def storage(s3_env, monkeypatch):
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    return Storage(region=s3_env.get("AWS_DEFAULT_REGION", "us-east-1"), addressing_style="path")


def test_large_upload_is_multipart_and_reads_back_by_range(storage, s3, bucket, tmp_path):
    blob = os.urandom(17 << 20)                     # 17 MiB: three 8 MiB parts
    path = tmp_path / "model.pdiparams"
    path.write_bytes(blob)
    uri = f"s3://{bucket}/out/model.pdiparams"
    storage.upload(str(path), uri, "spec.output.uri")
    etag = s3.head_object(Bucket=bucket, Key="out/model.pdiparams")["ETag"].strip('"')
    assert etag.endswith("-3"), etag                # a multipart ETag names its part count
    before = storage.bytes_read
    reader = storage.open(uri, "f")
    reader.seek(10 << 20)
    assert reader.read(1000) == blob[10 << 20:(10 << 20) + 1000]
    assert storage.bytes_read - before < 20_000     # a range, not the object
    assert storage.size_of(uri, "f") == len(blob)


def test_missing_bucket_and_key_are_told_apart(storage, bucket):
    with pytest.raises(BadInput) as ei:
        storage.size_of(f"s3://{bucket}/nope", "spec.model.custom.code")
    assert ei.value.reason == "NoSuchKey"
    with pytest.raises(BadInput) as ei:
        storage.check_writable_bucket("s3://kubeslim-missing-bucket/out/", "spec.output.uri")
    assert ei.value.reason == "NoSuchBucket" and "spec.output.uri s3://kubeslim-missing-bucket/out/" in ei.value.message
