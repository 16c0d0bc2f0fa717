"""A stage execution that could not be created: permanent (the run fails) or transient (retried).

The executor reports the API server's answer as a CreateError. Permanent, because retrying
the same request cannot succeed:
  400 BadRequest, 422 Invalid     the Job itself is wrong (a bad quantity, a bad name)
  403 Forbidden                   RBAC, an admission webhook's or policy's denial; except
                                  "exceeded quota", which frees as other Jobs finish
  409 for a Job the run does not own (`foreign`): someone else's Job holds the name
Transient, retried with backoff (the run says why meanwhile): 403 exceeded quota, 404 (a
namespace being created or deleted), 409 for a Job of a deleted run of the same name that the
garbage collector has not removed yet, 429, 5xx (a webhook that cannot be reached), no answer.

A permanent error is fed back to the planner as a failed observation (`rejected`): the stage
and the run fail with the API server's message, through the same path as any failed stage.
A transient one rewrites the plan (`hold`): that stage is not started, the run stays Running
with the reason and message, the Stuck condition is True (so the stuck metric and alert see
it), and a Warning Event says so once per reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from sheepdog.api.status import RunStatus
from sheepdog.planner import stuck_policy
from sheepdog.planner.actions import Event, Plan, StageObservation
from sheepdog.planner.conditions import conditions_for
from sheepdog.planner.reasons import Reason

PERMANENT_STATUS = (400, 403, 422)


@dataclass(frozen=True)
class CreateError:
    status: int  # HTTP status; 0 when there was no answer
    message: str  # the API server's message (Status.message)
    foreign: bool = False  # 409: the Job that exists is not this run's and will not go away


def permanent(err: CreateError) -> bool:
    if err.status == 409:
        return err.foreign
    if err.status == 403 and "exceeded quota" in err.message:
        return False
    return err.status in PERMANENT_STATUS


def reason_of(err: CreateError) -> Reason:
    if err.status == 409:
        return Reason.JOB_CONFLICT
    return Reason.JOB_REJECTED if permanent(err) else Reason.JOB_CREATE_FAILED


def describe(err: CreateError, job: str) -> str:
    if err.status == 409:
        return err.message
    code = f"{err.status}" if err.status else "no answer"
    return f"creating Job {job} failed ({code}): {err.message}"


def rejected(iteration: int, stage: str, err: CreateError, job: str) -> StageObservation:
    """The observation that fails the stage: attempts 0, the API server's message."""
    return StageObservation(iteration, stage, "failed", attempts=0,
                            message=f"{reason_of(err)}: {describe(err, job)}")


def hold(p: Plan, iteration: int, stage: str, reason: str, message: str, now: str,
         previous: Optional[RunStatus] = None) -> Plan:
    """`p` without the start of (iteration, stage), the run saying why it waits."""
    status = p.status.model_copy(deep=True)
    status.reason, status.message = str(reason), message
    before = status.conditions
    status.conditions = conditions_for(status.phase, reason, message, before, now, status.observed_generation)
    # stuck since the first hold, not since this plan (which did not know about the hold)
    held_before = previous.conditions if previous is not None else before
    status.conditions.append(stuck_policy.condition(reason, message, held_before, now, status.observed_generation))
    events = p.events
    if previous is None or previous.reason != str(reason):
        events = (*events, Event("Warning", reason, message))
    actions = tuple(a for a in p.actions if (a.iteration, a.stage) != (iteration, stage))
    return replace(p, status=status, actions=actions, events=events)
