"""Deleting the stage Jobs a run no longer needs (planner/retention_policy.py decides which),
after the status write that recorded their outcome: the operator's cache, the API server and
`kubectl get jobs` then hold a bounded number of Jobs per run instead of its whole history.

A deleted Job leaves the cache at once (with a tombstone, so a late watch event does not bring
it back); its pods follow through the Job controller's garbage collection.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional

from sheepdog.api.status import RunStatus
from sheepdog.kube.observe import job_identity
from sheepdog.planner.retention_policy import expired_jobs

log = logging.getLogger("sheepdog.operator")


def parse_keep(value: str) -> Optional[int]:
    """The --job-history flag: a number of iterations, or `all` (keep every Job)."""
    if str(value).strip().lower() == "all":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of iterations or 'all', got {value!r}") from None
    if n < 1:
        raise ValueError("keep the Jobs of at least the running iteration (1), or say all")
    return n


def clean_up(kube: Any, cache: Any, namespace: str, status_raw: Mapping[str, Any],
             jobs: Iterable[Mapping[str, Any]], keep_iterations: Optional[int]) -> list[str]:
    """Delete the run's expired stage Jobs (of `jobs`, the run's own); returns their names."""
    if keep_iterations is None:
        return []
    by_name = {}
    for job in jobs:
        ident = job_identity(job)
        if ident is not None:
            by_name[job["metadata"]["name"]] = (ident, job["metadata"].get("uid"))
    if not by_name:
        return []
    try:
        status = RunStatus.model_validate(status_raw or {})
    except Exception:  # noqa: BLE001 - an unreadable status records no outcome: delete nothing
        return []
    names = expired_jobs(status, [(i, s, n) for n, ((i, s), _) in by_name.items()], keep_iterations)
    deleted = []
    for name in names:
        uid = by_name[name][1]
        kube.delete_job(namespace, name, uid)
        cache.drop_job(namespace, name, uid)
        deleted.append(name)
    if deleted:
        log.info("%s: deleted %d finished stage Jobs of older iterations: %s", namespace, len(deleted), ", ".join(deleted))
    return deleted
