"""A running stage whose pods do not run: name it, and fail it after stages.<stage>.pendingTimeout.

The executor observes why (StageObservation.stuck_reason / stuck_message / stuck_since; in a
cluster sheepdog.kube.stuck). While a stage is stuck the run stays Running, its reason is the
stuck reason (the Reason column of `kubectl get sar`), its message carries Kubernetes' own
message, the Stuck condition is True, and a Warning Event says so once per reason.

pendingTimeout (default 30m; "0" never) counts from `stuck_since` (the stuck pod's creation,
or the Job's start when no pod could be created): past it the stage fails with the stuck
reason and message, and its Job is suspended so that its pending pods stop holding quota.
Waiting for Kueue admission (NotAdmitted) never times out: queueing is what a queue is for;
the alert covers a queue that never admits. A run the user suspended is never stuck.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Optional, Sequence

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import Condition
from sheepdog.planner.actions import StageObservation
from sheepdog.planner.reasons import Reason

STUCK_REASONS = (Reason.NOT_ADMITTED, Reason.PODS_NOT_CREATED, Reason.UNSCHEDULABLE,
                 Reason.IMAGE_PULL_FAILING, Reason.CONTAINER_CONFIG_ERROR)
NEVER_TIMES_OUT = (Reason.NOT_ADMITTED,)
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


def timed_out(spec: RunSpec, obs: StageObservation, now: str) -> bool:
    """Stuck for longer than the stage's pendingTimeout."""
    if not stuck(spec, obs) or obs.stuck_reason in NEVER_TIMES_OUT:
        return False
    limit = duration_seconds(spec.stages.of(obs.stage).pending_timeout)
    since, at = _parse(obs.stuck_since), _parse(now)
    if limit == 0 or since is None or at is None:
        return False
    return (at - since).total_seconds() > limit


def stuck_message(where: str, obs: StageObservation) -> str:
    return f"{where} stuck: {obs.stuck_reason}: {obs.stuck_message}"


def timeout_message(spec: RunSpec, obs: StageObservation) -> str:
    """The failure's message: the stuck reason, as the issue's user reads it in `kubectl get`."""
    limit = spec.stages.of(obs.stage).pending_timeout
    return f"pods did not start within pendingTimeout {limit}: {obs.stuck_reason}: {obs.stuck_message}"


def condition(reason: Optional[str], message: str, previous: Sequence[Condition], now: str,
              generation: Optional[int] = None) -> Condition:
    """The Stuck condition: True with the stuck reason while the running stage is stuck."""
    status = "True" if reason else "False"
    old = next((c for c in previous if c.type == "Stuck"), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    return Condition(type="Stuck", status=status, reason=str(reason) if reason else NOT_STUCK,
                     message=message if reason else "", last_transition_time=since,
                     observed_generation=generation)
