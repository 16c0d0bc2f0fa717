"""A retry request on a run: the annotation `sheepdog.dev/retry: <token>`.

`sheepdog retry RUN -n NS` sets it to a new token (`kubectl annotate sar RUN
sheepdog.dev/retry=<anything new> --overwrite` does the same); the operator reads it at every
reconcile and the planner acts on a token once (planner/recovery_policy.py: a Failed run
resumes from the stage that failed; status.lastRetry records the token). An annotation is
metadata: setting it changes no generation and needs no spec edit, and a watch event of the
run carries it to the operator at once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from sheepdog.api.spec import GROUP

RETRY_ANNOTATION = f"{GROUP}/retry"


def retry_token(run: Mapping[str, Any]) -> Optional[str]:
    """The run's retry request token, or None."""
    value = ((run.get("metadata") or {}).get("annotations") or {}).get(RETRY_ANNOTATION)
    return str(value).strip() or None if value is not None else None


def new_token(now: Optional[datetime] = None) -> str:
    """A token no earlier request used: the time, readable in `kubectl get -o yaml`, and a
    random part for two requests in one second."""
    now = now or datetime.now(timezone.utc)
    return f"{now.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def retry_patch(token: str) -> dict[str, Any]:
    """The merge patch that requests a retry."""
    return {"metadata": {"annotations": {RETRY_ANNOTATION: token}}}


def refusal(run: Mapping[str, Any]) -> Optional[str]:
    """Why `sheepdog retry` does not ask (the operator would ignore it), or None."""
    status = run.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase != "Failed":
        return f"the run is {phase}, not Failed: there is nothing to retry"
    return None


def failed_at(run: Mapping[str, Any]) -> str:
    """Where the run failed, as `sheepdog retry` reports it."""
    status = run.get("status") or {}
    return f"iteration {status.get('iteration')} {status.get('stage')}: {status.get('message') or ''}".rstrip(": ")
