"""spec.suspend: no new stage starts while it is true; a running stage finishes.

We do not kill a running stage: stages checkpoint at phase boundaries only, so killing one
loses up to a whole phase of GPU work, while letting it finish loses nothing. The run shows
phase Running / reason Suspending until that stage ends, then Suspended.
"""

from __future__ import annotations

from typing import Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.planner.reasons import Reason


def may_start_stage(spec: RunSpec) -> bool:
    return not spec.suspend


def running_reason(spec: RunSpec) -> Reason:
    """The reason while a stage runs: Suspending if a suspend waits for it to end."""
    return Reason.SUSPENDING if spec.suspend else Reason.STAGE_RUNNING


def resuming(previous: RunStatus, spec: RunSpec) -> bool:
    """True in the reconcile that lifts a suspend (the run was suspended or suspending)."""
    return not spec.suspend and previous.reason in (Reason.SUSPENDED, Reason.SUSPENDING)


def suspended_message(next_step: Optional[tuple[int, str]]) -> str:
    if next_step is None:
        return "suspended"
    iteration, stage = next_step
    return f"suspended before iteration {iteration} {stage}"
