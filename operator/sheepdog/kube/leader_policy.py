"""Who leads: the decisions of leader election on a coordination.k8s.io Lease, without I/O
(kube/leader.py carries them out).

The rules are client-go's (tools/leaderelection): a replica may take the Lease when nobody
holds it, when it holds it itself, or when its record has not changed for longer than its
leaseDurationSeconds. "Not changed" is measured on the candidate's own monotonic clock from the
moment it first saw the record as it is (never from the renewTime written in it): replicas'
clocks need not agree, only run at the same speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

DEFAULT_LEASE_SECONDS = 15


@dataclass(frozen=True)
class Seen:
    """A Lease record as a candidate last saw it, and when (its monotonic clock)."""

    holder: str
    renewed: str  # spec.renewTime (or acquireTime) as written: a change means the holder is alive
    at: float


def observe(previous: Optional[Seen], spec: Optional[Mapping[str, Any]], now: float) -> Optional[Seen]:
    """The candidate's view after reading `spec` (None: no Lease): the record's first sighting
    keeps its time, a changed record starts a new one."""
    if spec is None:
        return None
    holder = str(spec.get("holderIdentity") or "")
    renewed = str(spec.get("renewTime") or spec.get("acquireTime") or "")
    if previous is not None and (previous.holder, previous.renewed) == (holder, renewed):
        return previous
    return Seen(holder, renewed, now)


def may_take(spec: Optional[Mapping[str, Any]], seen: Optional[Seen], me: str, now: float) -> bool:
    """Whether `me` may write itself into the Lease now."""
    if spec is None:
        return True
    holder = spec.get("holderIdentity") or ""
    if not holder or holder == me:
        return True
    duration = spec.get("leaseDurationSeconds") or DEFAULT_LEASE_SECONDS
    return seen is not None and now - seen.at > float(duration)


def claimed(spec: Optional[Mapping[str, Any]], me: str, stamp: str, lease_seconds: int) -> dict[str, Any]:
    """The Lease spec with `me` holding it, renewed at `stamp` (RFC 3339, microseconds)."""
    old = dict(spec or {})
    taking = old.get("holderIdentity") != me
    out = {**old, "holderIdentity": me, "leaseDurationSeconds": lease_seconds, "renewTime": stamp}
    if taking:
        out["acquireTime"] = stamp
        out["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + (1 if old.get("holderIdentity") else 0)
    return out


def released(spec: Mapping[str, Any], me: str, stamp: str) -> Optional[dict[str, Any]]:
    """The Lease spec given up by `me` (on a clean shutdown: the next replica need not wait out
    the duration); None when `me` does not hold it."""
    if spec.get("holderIdentity") != me:
        return None
    return {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": stamp}
