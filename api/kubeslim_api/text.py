"""Text helpers both sides use when they put foreign text (kubelet's, the API server's, a tool's
output) into a bounded message of their own."""
from __future__ import annotations

ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    """`text` itself if it has at most `limit` characters, else its first `limit - 1` and an
    ellipsis, so the result still fits and a reader can see that something was cut."""
    if limit < 1:
        raise ValueError(f"truncate: limit must be at least 1, got {limit}")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS
