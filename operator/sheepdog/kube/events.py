"""Core v1 Events on a SelfAlignmentRun (what `kubectl describe` shows)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

COMPONENT = "sheepdog-operator"
MAX_MESSAGE = 1024  # readable in `kubectl describe`; status.message carries the same text


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_event(run: Mapping[str, Any], type_: str, reason: str, message: str, instance: str = "") -> dict[str, Any]:
    """A core v1 Event about `run` (type Normal or Warning, CamelCase reason)."""
    meta = run["metadata"]
    now = _now()
    stamp = now[:19].replace("-", "").replace(":", "").replace("T", "")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{stamp}.{uuid.uuid4().hex[:8]}",
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
        "message": _clip(message),
        "source": {"component": COMPONENT},
        "reportingComponent": f"sheepdog.dev/{COMPONENT}",
        "reportingInstance": instance or COMPONENT,
        "firstTimestamp": now[:19] + "Z",
        "lastTimestamp": now[:19] + "Z",
        "count": 1,
    }
