"""The operator's log lines: text for people, or one JSON object per line for a log pipeline
(`sheepdog operator --log-format json`; Loki, Elasticsearch, Cloud Logging parse it as is).

A JSON line has time (RFC 3339, UTC, milliseconds), level, logger, message, the exception's
traceback where there is one, and whatever the caller passed in `extra=` that JSON can hold
(Kopf's per-object loggers pass the object they log about as k8s_ref: namespace and name)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = _jsonable(value)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str, stream) -> None:
    """The root logger's one handler, in the chosen format."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: {' | '.join(FORMATS)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), handlers=[handler], force=True)
