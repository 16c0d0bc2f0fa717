"""RFC 3339 timestamps as Kubernetes and the status write them, read back (no Kubernetes here:
the planner and both executors use it)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """An aware UTC datetime; None for nothing or something that is not a timestamp."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None
