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


def test_listing_a_prefix_pages_in_key_order_and_stops_when_the_reader_does(storage, s3, bucket):
    keys = [f"imgs/{i:02d}.png" for i in (5, 0, 3, 1, 6, 2, 4)]
    for key in keys + ["imgs-sibling/x.png"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    # The requests boto3 really sends, counted by its own event hook.
    pages = []
    storage.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: pages.append(1))
    assert list(storage.iter_objects(f"s3://{bucket}/imgs", "f", page_size=3)) == [f"s3://{bucket}/{k}" for k in sorted(keys)]
    assert len(pages) == 3
    pages.clear()
    it = storage.iter_objects(f"s3://{bucket}/imgs/", "f", page_size=3)
    assert [next(it), next(it)] == [f"s3://{bucket}/imgs/00.png", f"s3://{bucket}/imgs/01.png"]
    assert len(pages) == 1
    with pytest.raises(BadInput) as ei:
        next(storage.iter_objects("s3://kubeslim-missing-bucket/imgs/", "spec.data.calibration.uri"))
    assert ei.value.reason == "NoSuchBucket"
