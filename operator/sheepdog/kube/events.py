"""Core v1 Events on a SelfAlignmentRun (what `kubectl describe` shows)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from sheepdog.redaction import redact

COMPONENT = "sheepdog-operator"
MAX_MESSAGE = 1024  # readable in `kubectl describe`; status.message carries the same text


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_name(run_name: str, at: str) -> str:
    """A new Event's name: the run's, the time, and a random part (two Events of one second).
    It is stored in status.pendingEvents before the Event is posted, so a repeated POST of the
    same Event is refused (409) rather than duplicated."""
    stamp = at[:19].replace("-", "").replace(":", "").replace("T", "")
    return f"{run_name}.{stamp}.{uuid.uuid4().hex[:8]}"


def run_event(run: Mapping[str, Any], type_: str, reason: str, message: str, instance: str = "",
              name: Optional[str] = None, at: Optional[str] = None) -> dict[str, Any]:
    """A core v1 Event about `run` (type Normal or Warning, CamelCase reason), decided at `at`
    (RFC 3339; now by default) and named `name` (a new name by default)."""
    meta = run["metadata"]
    at = (at or _now())[:19] + "Z"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": name or event_name(meta["name"], at),
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": run.get("apiVersion", "sheepdog.dev/v1alpha1"),
            "kind": run.get("kind", "SelfAlignmentRun"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": "Warning" if type_ == "Warning" else "Normal",
        "reason": reason,
        "message": _clip(redact(message)),  # readable by all who may get the run: no credentials
        "source": {"component": COMPONENT},
        "reportingComponent": f"sheepdog.dev/{COMPONENT}",
        "reportingInstance": instance or COMPONENT,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    }
