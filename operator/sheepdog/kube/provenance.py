"""Where a stage ran: the node and the container image (by digest) of the pods whose outcome
the stage record holds. Pure: pod dicts in, strings out.

The kubelet reports each container's `imageID` as the image it actually started, by digest
(`repo@sha256:<manifest>` for a pulled image; the bare config digest for one a runtime only
knows by tag). Recorded in the run's status when the stage finishes, so a user can tell which
image produced each iteration after its Jobs and pods are gone (job history, TTL).

A stage with several pods (synthesize shards, multi-node train) can run on several nodes:
the distinct values, sorted, joined with ",". Pods that never reached a node or never started
their container add nothing; None when no pod tells.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional


def main_container_status(pod: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The status of the pod's first (stage) container: the one its spec names first, else the
    first reported."""
    statuses = list((pod.get("status") or {}).get("containerStatuses") or ())
    containers = ((pod.get("spec") or {}).get("containers")) or ()
    first = containers[0].get("name") if containers else None
    for cs in statuses:
        if first is not None and cs.get("name") == first:
            return cs
    return statuses[0] if statuses else None


def _joined(values: Iterable[Optional[str]]) -> Optional[str]:
    distinct = sorted({v for v in values if v})
    return ",".join(distinct) if distinct else None


def node_of(pods: Iterable[Mapping[str, Any]]) -> Optional[str]:
    return _joined((p.get("spec") or {}).get("nodeName") for p in pods)


def image_id_of(pods: Iterable[Mapping[str, Any]]) -> Optional[str]:
    return _joined((main_container_status(p) or {}).get("imageID") for p in pods)


def provenance(pods: Iterable[Mapping[str, Any]]) -> tuple[Optional[str], Optional[str]]:
    """(node, imageID) of the given pods: the ones whose outcome the stage records."""
    pods = list(pods)
    return node_of(pods), image_id_of(pods)
