"""metav1.Time on the wire ("2026-01-02T03:04:05Z", UTC, whole seconds) ↔ Unix seconds: the one
formatter and the one parser the operator uses for status timestamps and Event times."""
from __future__ import annotations

import datetime

from .constants import TIME_FORMAT


def format_time(seconds: float | None = None) -> str:
    """metav1.Time of `seconds` (Unix time; now when None), cut to the second as the API stores it."""
    moment = (datetime.datetime.now(datetime.timezone.utc) if seconds is None
              else datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc))
    return moment.strftime(TIME_FORMAT)


def parse_time(value: str | None) -> float | None:
    """Unix seconds of a metav1.Time; None for an absent or malformed one (callers then treat the
    time as unknown: it is read from objects the operator did not necessarily write)."""
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


