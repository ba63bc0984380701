"""Test doubles for the job's unit tests."""
from __future__ import annotations

from kubeslim_job.errors import BadInput
from kubeslim_job.storage import Storage


class MemStorage(Storage):
    """Storage over an in-memory object map, counting bytes like the real one."""

    def __init__(self, objects: dict[str, bytes]):  # noqa: D107  (no boto3 client)
        import threading

        self.objects, self.endpoint, self.workers, self._lock = objects, "mem", 4, threading.Lock()
        self.bytes_read = self.requests = 0

    def get_range(self, uri, field, start, end=None):
        if uri not in self.objects:
            raise BadInput("NoSuchKey", f"{field} {uri}: NoSuchKey")
        data = self.objects[uri]
        chunk = data[start:(len(data) if end is None else end + 1)]
        self._count(len(chunk))
        return chunk, len(data)

    def get_bytes(self, uri, field):
        return self.get_range(uri, field, 0)[0]

    def size_of(self, uri, field):
        return len(self.objects[uri])
