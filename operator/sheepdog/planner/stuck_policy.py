"""A running stage whose pods do not run: name it; fail it after its pendingTimeout (capacityTimeout).

The executor observes why (StageObservation.stuck_reason / stuck_message / stuck_since; in a
cluster sheepdog.kube.stuck). While a stage is stuck the run stays Running, its reason is the
stuck reason (the Reason column of `kubectl get sar`), its message carries Kubernetes' own
message, the Stuck condition is True, and a Warning Event says so once per reason.

Two kinds of stuck, two limits, both counted from `stuck_since` (the stuck pod's creation, or
the Job's start when no pod could be created):
- waiting for capacity (CAPACITY_REASONS: Unschedulable, QuotaExceeded, NotAdmitted) resolves
  by waiting: a GPU node pool scales up, another run frees its quota. It never fails a stage by
  default (capacityTimeout "0"): a multi-day run must not die because a node took an hour to
  come; the Stuck condition, the Warning Event and the SheepdogRunStuck alert tell the user.
  Waiting for Kueue admission (NotAdmitted) never times out at all: a queue is for waiting.
- anything else (ImagePullFailing, ContainerConfigError, VolumeMountFailing, PodsNotCreated by
  a policy) needs a person: pendingTimeout (default 30m; "0" never) fails the stage with the
  stuck reason and message.
- ContainerCreatingTooLong (no Event says why: most likely a large image being pulled) is
  reported and alerted, never failed.
Past its limit the stage fails and its Job is suspended so that its pending pods stop holding
quota. A run the user suspended is never stuck.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Optional, Sequence

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import Condition
from sheepdog.planner.actions import StageObservation
from sheepdog.planner.reasons import Reason

STUCK_REASONS = (Reason.NOT_ADMITTED, Reason.PODS_NOT_CREATED, Reason.QUOTA_EXCEEDED, Reason.UNSCHEDULABLE,
                 Reason.IMAGE_PULL_FAILING, Reason.CONTAINER_CONFIG_ERROR, Reason.VOLUME_MOUNT_FAILING,
                 Reason.CONTAINER_CREATING_TOO_LONG)
CAPACITY_REASONS = (Reason.NOT_ADMITTED, Reason.UNSCHEDULABLE, Reason.QUOTA_EXCEEDED)
# Kueue admits when it can; a pod that is still being created with no Event saying why is most
# likely pulling a large image (the kubelet reports that as ContainerCreating too): reported
# and alerted, never failed.
NEVER_TIMES_OUT = (Reason.NOT_ADMITTED, Reason.CONTAINER_CREATING_TOO_LONG)
NOT_STUCK = "NotStuck"

_UNITS = {"h": 3600, "m": 60, "s": 1}


def duration_seconds(text: str) -> int:
    """'1h30m' -> 5400; '0' -> 0 (the schema's pattern: ^(0|([0-9]+(h|m|s))+)$)."""
    if text == "0":
        return 0
    parts = re.findall(r"([0-9]+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (e.g. 30m, 2h, 1h30m)")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def _parse(stamp: Optional[str]) -> Optional[datetime]:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def stuck(spec: RunSpec, obs: Optional[StageObservation]) -> bool:
    """The observed running stage is stuck (never while the user suspends the run)."""
    return obs is not None and obs.state == "running" and bool(obs.stuck_reason) and not spec.suspend


def limit_field(obs: StageObservation) -> str:
    """The stage setting that limits this stuck state: capacityTimeout or pendingTimeout."""
    return "capacityTimeout" if obs.stuck_reason in CAPACITY_REASONS else "pendingTimeout"


def _limit(spec: RunSpec, obs: StageObservation) -> str:
    stage = spec.stages.of(obs.stage)
    return stage.capacity_timeout if limit_field(obs) == "capacityTimeout" else stage.pending_timeout


def timed_out(spec: RunSpec, obs: StageObservation, now: str) -> bool:
    """Stuck for longer than the stage's capacityTimeout (waiting for capacity) or
    pendingTimeout (anything else)."""
    if not stuck(spec, obs) or obs.stuck_reason in NEVER_TIMES_OUT:
        return False
    limit = duration_seconds(_limit(spec, obs))
    since, at = _parse(obs.stuck_since), _parse(now)
    if limit == 0 or since is None or at is None:
        return False
    return (at - since).total_seconds() > limit


def stuck_message(where: str, obs: StageObservation) -> str:
    # A Job in Kueue's queue waits its turn, as a queue is meant to: "queued", not "stuck".
    state = "queued" if obs.stuck_reason == Reason.NOT_ADMITTED else "stuck"
    return f"{where} {state}: {obs.stuck_reason}: {obs.stuck_message}"


def timeout_message(spec: RunSpec, obs: StageObservation) -> str:
    """The failure's message: the stuck reason, as the issue's user reads it in `kubectl get`."""
    return (f"pods did not start within {limit_field(obs)} {_limit(spec, obs)}: "
            f"{obs.stuck_reason}: {obs.stuck_message}")


def condition(reason: Optional[str], message: str, previous: Sequence[Condition], now: str,
              generation: Optional[int] = None) -> Condition:
    """The Stuck condition: True with the stuck reason while the running stage is stuck."""
    status = "True" if reason else "False"
    old = next((c for c in previous if c.type == "Stuck"), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    return Condition(type="Stuck", status=status, reason=str(reason) if reason else NOT_STUCK,
                     message=message if reason else "", last_transition_time=since,
                     observed_generation=generation)
