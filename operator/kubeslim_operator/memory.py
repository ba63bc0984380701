"""Keep the operator's resident memory close to what it holds.

A burst of QuantizationJobs means thousands of watch events decoded in a few seconds; CPython
frees those objects, but glibc keeps the freed heap pages (and one arena per thread that ever
allocated). Fewer arenas and a periodic malloc_trim(0) give the pages back to the kernel.
No-ops where glibc is not the allocator.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8
# The operator is one asyncio loop and a few helper threads; two arenas serve them, where glibc
# would otherwise allow up to eight per core, each keeping its own freed pages.
MALLOC_ARENAS = 2
# Often enough that the pages a burst freed go back within half a minute; malloc_trim walks the
# whole heap, so not after every event.
TRIM_INTERVAL_SECONDS = 30.0

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _trim = _libc.malloc_trim
    _mallopt = _libc.mallopt
except (OSError, AttributeError):      # musl, macOS: nothing to do
    _trim = _mallopt = None


def limit_arenas(n: int = MALLOC_ARENAS) -> None:
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, n)


def trim() -> None:
    if _trim is not None:
        _trim(0)


async def trim_forever(interval: float = TRIM_INTERVAL_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        trim()
