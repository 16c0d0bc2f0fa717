"""Whose Job holds a stage's name, and whether a Job deleted by hand left pods running:
the reconcile's answers to a 409 at creation and to a Job gone from under a running stage."""

from __future__ import annotations

from typing import Any, Mapping

from sheepdog.api.spec import KIND
from sheepdog.planner.creation_policy import CreateError


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or ())


def job_conflict(job: Mapping[str, Any], run_name: str) -> CreateError:
    """The 409 of a Job this run does not own, from the Job that holds the name: transient when
    it is going away (being deleted, or owned by a deleted run of the same name that the
    garbage collector will remove), else permanent (foreign)."""
    meta = job.get("metadata") or {}
    name = meta.get("name")
    if meta.get("deletionTimestamp"):
        return CreateError(409, f"Job {name} is being deleted; it is created again once it is gone")
    refs = meta.get("ownerReferences") or ()
    if any(r.get("kind") == KIND and r.get("name") == run_name for r in refs):
        return CreateError(409, f"Job {name} belongs to an earlier run named {run_name} that the garbage "
                                "collector has not removed yet; waiting for it to go")
    owners = ", ".join(f"{r.get('kind')}/{r.get('name')}" for r in refs) or "no owner"
    return CreateError(409, f"Job {name} already exists and is not owned by this run ({owners}): "
                            "delete that Job or give the run another name", foreign=True)


def live_pods(pods: list[Mapping[str, Any]]) -> list[str]:
    """Names of the pods that have not ended (a Job deleted by hand can leave them running)."""
    return sorted(p["metadata"]["name"] for p in pods
                  if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
