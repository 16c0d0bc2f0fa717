"""The planner: every rule of the I-SHEEP loop, as a pure function (no I/O).

    plan(run_name, spec, status, observed, layout, now, generation) -> Plan

One module per policy (lineage, retries, stopping, suspend, conditions), each with its own
tests; planner.py composes them.
"""

from sheepdog.planner.actions import Event, Plan, StageObservation, StartStage, stage_name
from sheepdog.planner.lineage_policy import data_size, iteration_count, lineage, stage_config
from sheepdog.planner.planner import plan, plan_invalid_spec, timestamp
from sheepdog.planner.reasons import Reason
from sheepdog.planner.retry_policy import backoff_limit, max_attempts

__all__ = [
    "Event", "Plan", "Reason", "StageObservation", "StartStage", "backoff_limit", "data_size",
    "iteration_count", "lineage", "max_attempts", "plan", "plan_invalid_spec", "stage_config",
    "stage_name", "timestamp",
]
