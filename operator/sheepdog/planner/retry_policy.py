"""How often a stage is retried before the run fails.

Retries happen below the planner: the Job's backoffLimit in a cluster (the Job controller
retries with exactly-once Job semantics), the attempt loop in the local executor. Both ask
this module, so the two executors retry the same number of times.
"""

from __future__ import annotations

from sheepdog.api.spec import STAGES, RunSpec


def backoff_limit(spec: RunSpec, stage: str) -> int:
    """Retries of `stage`: its own stages.<stage>.backoffLimit, else spec.retries (also for
    the export, which has no stages entry: export_policy)."""
    own = spec.stages.of(stage).backoff_limit if stage in STAGES else None
    return spec.retries if own is None else own


def max_attempts(spec: RunSpec, stage: str) -> int:
    return 1 + backoff_limit(spec, stage)
