"""spec.ttlSecondsAfterFinished in a cluster (planner/ttl_policy.py decides when): a finished run
whose time has come is deleted, Jobs with it (ownerReferences), its data on the volume left; one
whose time is still to come asks for a reconcile then (the resync skips finished runs)."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from pydantic import ValidationError

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.planner.ttl_policy import seconds_left
from sheepdog.timestamps import parse_time

log = logging.getLogger("sheepdog.operator")


def expire(kube: Any, run: Mapping[str, Any], spec: RunSpec, status_raw: Mapping[str, Any],
           now: str) -> Optional[float]:
    """Delete the run when its TTL has passed; else the seconds until it will (None: never)."""
    try:
        status = RunStatus.model_validate(status_raw or {})
    except ValidationError:
        return None
    at = parse_time(now)
    left = seconds_left(spec, status, at) if at is not None else None
    if left is None or left > 0:
        return left
    meta = run["metadata"]
    if kube.delete_run(meta["namespace"], meta["name"], meta["uid"]):
        log.info("%s/%s: deleted %ss after it finished (ttlSecondsAfterFinished); its data stays",
                 meta["namespace"], meta["name"], spec.ttl_seconds_after_finished)
    return None
