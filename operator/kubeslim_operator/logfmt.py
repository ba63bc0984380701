"""The operator's log lines: human text (the default) or one JSON object per line (KUBESLIM_LOG_FORMAT=json,
the chart's operator.logFormat) for log pipelines that index fields rather than parse text."""
from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLineFormatter(logging.Formatter):
    """time (RFC 3339, UTC), level, logger, message; the Kubernetes object a kopf per-object logger
    names (its k8s_ref) as `object`; a traceback as `exception`. json.dumps escapes newlines, so a
    multi-line message or traceback stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if ref:
            line["object"] = ref
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exception"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str, fmt: str, stream: Any = None) -> None:
    """The root logger's one handler, replacing any earlier one (basicConfig would keep a first)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
