"""GPU cost: GPU-seconds of stages, summed per iteration and per run.

A stage's figure is GPUs x the time its pods (or, locally, its process) ran, every attempt
included: GPUs held by a failed attempt cost the same. The executors measure it (a cluster
from the pods' start and end, the local executor from the stage's wall time); the planner
only records it and sums it, so status.gpuSeconds is what the run has cost so far.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sheepdog.api.status import RunStatus


def seconds_between(start: Optional[str], end: Optional[str]) -> Optional[float]:
    """end - start of two RFC 3339 times, never negative; None when either is missing or bad."""
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def gpu_seconds(gpus: int, start: Optional[str], end: Optional[str]) -> Optional[float]:
    """gpus x (end - start); 0 for a stage without GPUs; None when the time is unknown."""
    if gpus <= 0:
        return 0.0
    wall = seconds_between(start, end)
    return None if wall is None else round(gpus * wall, 3)


def sum_gpu_seconds(status: RunStatus) -> None:
    """Each iteration's gpuSeconds is the sum of its stages' (those known), the run's the sum
    of its iterations'; None where nothing is known yet."""
    total: Optional[float] = None
    for record in status.iterations:
        known = [s.gpu_seconds for s in record.stages.values() if s.gpu_seconds is not None]
        record.gpu_seconds = round(sum(known), 3) if known else None
        if record.gpu_seconds is not None:
            total = (total or 0.0) + record.gpu_seconds
    status.gpu_seconds = round(total, 3) if total is not None else None
