"""When a finished run is deleted (spec.ttlSecondsAfterFinished, like a Job's): that many
seconds after it finished, i.e. after the last transition of its conditions once its phase is
Succeeded or Failed. Its data on the volume is not the run object's and stays.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.timestamps import parse_time

FINISHED = ("Succeeded", "Failed")


def deletion_due(spec: RunSpec, status: RunStatus) -> Optional[datetime]:
    """When the run is to be deleted; None while it runs or when it has no TTL."""
    ttl = spec.ttl_seconds_after_finished
    if ttl is None or status.phase not in FINISHED:
        return None
    times = [t for t in (parse_time(c.last_transition_time) for c in status.conditions) if t is not None]
    if not times:
        return None
    return max(times) + timedelta(seconds=ttl)


def seconds_left(spec: RunSpec, status: RunStatus, now: datetime) -> Optional[float]:
    """Seconds until the deletion (0 when due); None when the run is not to be deleted."""
    due = deletion_due(spec, status)
    return None if due is None else max(0.0, (due - now).total_seconds())
