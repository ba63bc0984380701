"""Test doubles for the job's unit tests."""
from __future__ import annotations

from kubeslim_job.errors import BadInput
from kubeslim_job.storage import Storage


class MemStorage(Storage):
    """Storage over an in-memory object map, counting bytes like the real one."""

    def __init__(self, objects: dict[str, bytes]):  # noqa: D107  (no boto3 client)
        import threading

        self.objects, self.endpoint, self.workers, self._lock = objects, "mem", 4, threading.Lock()
        self.bytes_read = self.list_calls = 0

    def get_range(self, uri, field, start, end=None):
        if uri not in self.objects:
            raise BadInput("NoSuchKey", f"{field} {uri}: NoSuchKey")
        data = self.objects[uri]
        chunk = data[start:(len(data) if end is None else end + 1)]
        self._count(len(chunk))
        return chunk, len(data)

    def get_bytes(self, uri, field):
        return self.get_range(uri, field, 0)[0]

    def list_page(self, bucket, prefix, max_keys, token):
        self.list_calls += 1
        keys = sorted(u[len(f"s3://{bucket}/"):] for u in self.objects if u.startswith(f"s3://{bucket}/{prefix}"))
        start = int(token or 0)
        more = start + max_keys < len(keys)
        return keys[start:start + max_keys], (str(start + max_keys) if more else None)

    def size_of(self, uri, field):
        return self.get_range(uri, field, 0, 0)[1]   # a missing key raises NoSuchKey, as on S3
