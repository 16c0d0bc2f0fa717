"""Phase → conditions (metav1.Condition), written once per reconcile.

Ready=True only when the run succeeded; Progressing=True while it runs; Failed and Suspended
mirror their phases. Each condition has its own reason (API conventions: a reason explains
that condition's status): a True condition carries the run's reason and message (why it is
running, failed, suspended...), a False one the phase that makes it false (Ready=False
reason Running). lastTransitionTime changes only when a condition's status flips (metav1
semantics), not when its reason or message does.
"""

from __future__ import annotations

from typing import Optional, Sequence

from sheepdog.api.status import Condition

CONDITION_TYPES = ("Ready", "Progressing", "Failed", "Suspended")
TERMINAL_PHASES = ("Succeeded", "Failed")


def condition_statuses(phase: str) -> dict[str, str]:
    return {
        "Ready": "True" if phase == "Succeeded" else "False",
        "Progressing": "True" if phase == "Running" else "False",
        "Failed": "True" if phase == "Failed" else "False",
        "Suspended": "True" if phase == "Suspended" else "False",
    }


def conditions_for(
    phase: str,
    reason: str,
    message: str,
    previous: Sequence[Condition],
    now: str,
    generation: Optional[int] = None,
) -> list[Condition]:
    before = {c.type: c for c in previous}
    out = []
    for type_, status in condition_statuses(phase).items():
        old = before.get(type_)
        since = old.last_transition_time if old is not None and old.status == status else now
        own = status == "True"
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=str(reason) if own else phase,
                message=message if own else f"the run is {phase.lower()}",
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out
