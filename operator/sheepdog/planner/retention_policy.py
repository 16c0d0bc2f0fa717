"""Which finished stage Jobs a run no longer needs (issue 24: an operator whose cache holds every
Job it ever created grows with history).

A stage's Job may go once the run's status has recorded its outcome (the stage Succeeded or
Failed for good): from then on the planner reads that stage from the status, never from the
Job. The Jobs of the last `keep_iterations` iterations that have started stay, so `kubectl logs`
works for the iteration running and the one before it; older iterations' stage Jobs go, their
pods with them (the Job controller's garbage collection). `keep_iterations=None` keeps every Job.
The export Job is kept: it is the run's last act and one Job.
"""

from __future__ import annotations

from typing import Iterable, Optional

from sheepdog.api.status import RunStatus
from sheepdog.planner.export_policy import EXPORT

DEFAULT_KEEP_ITERATIONS = 2
FINISHED = ("Succeeded", "Failed")


def expired_jobs(status: RunStatus, jobs: Iterable[tuple[int, str, str]],
                 keep_iterations: Optional[int] = DEFAULT_KEEP_ITERATIONS) -> list[str]:
    """The names of the Jobs among `jobs` ((iteration, stage, name) of the run's existing stage
    Jobs) whose outcome the status holds and whose iteration is older than the kept ones."""
    if keep_iterations is None:
        return []
    started = sorted({r.iteration for r in status.iterations if r.stages}, reverse=True)
    kept = set(started[:max(0, keep_iterations)])
    out = []
    for iteration, stage, name in jobs:
        if iteration in kept or stage == EXPORT:
            continue
        record = status.record(iteration)
        stage_record = record.stages.get(stage) if record is not None else None
        if stage_record is not None and stage_record.phase in FINISHED and stage_record.job == name:
            out.append(name)
    return sorted(out)
