"""spec.storage.deleteDataOnDelete: what the operator does about a run's data when the run is
deleted (kube/data_cleanup.py carries it out). Pure: it reads the run's finalizers, its
deletionTimestamp, the Jobs and pods it still has, and the cleanup Job's state.

A run with the flag carries the finalizer `sheepdog.dev/delete-data` (added at its first
reconcile, removed when the flag is switched off). Deleted, it stays until:
  1. its stage Jobs are deleted (their ownerReferences would only remove them once the run is
     gone, and a running stage would write into the directory being removed),
  2. no pod of the run is left,
  3. the cleanup Job `<run>-delete-data-<uid8>` has removed runs/<name> (only when the
     directory's marker names this run, sheepdog_jobs.run_marker);
then the finalizer goes, with a Normal Event DataDeleted. A failed cleanup Job, or one that is
not done CLEANUP_TIMEOUT seconds after the deletion, removes the finalizer too (a deleted run
must never hang for ever), with a Warning Event that says the data is still there.
Without the flag a run has no finalizer: it goes at once and its data stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Optional, Sequence

FINALIZER = "sheepdog.dev/delete-data"
CLEANUP_TIMEOUT = 600.0  # seconds from the deletion to giving up on the data
STOP_RECHECK = 2.0  # stage Jobs or pods still going: look again this soon

JobState = Literal["none", "running", "succeeded", "failed"]


def finalizers_wanted(finalizers: Sequence[str], delete_data: bool, deleting: bool) -> Optional[list[str]]:
    """The run's new finalizer list while it is not being deleted, or None when it is right as
    it is. A run being deleted never gets the finalizer (the API server refuses new finalizers
    then, and the data of a run that never had it was never promised to go)."""
    has = FINALIZER in finalizers
    if deleting or has == delete_data:
        return None
    if delete_data:
        return [*finalizers, FINALIZER]
    return [f for f in finalizers if f != FINALIZER]


@dataclass(frozen=True)
class Step:
    action: Literal["nothing", "delete_stage_jobs", "wait", "create_job", "release"]
    recheck_after: Optional[float] = None
    event: Optional[tuple[str, str, str]] = None  # (type, reason, message) with "release"


def on_delete(deleted_at: datetime, now: datetime, finalizers: Sequence[str], stage_jobs: int,
              live_pods: int, job: JobState, run_dir: str, timeout: float = CLEANUP_TIMEOUT) -> Step:
    """The next step for a run being deleted (deleted_at: its deletionTimestamp)."""
    if FINALIZER not in finalizers:
        return Step("nothing")
    if job == "succeeded":
        return Step("release", event=("Normal", "DataDeleted", f"deleted {run_dir} from the volume"))
    if job == "failed":
        return Step("release", event=("Warning", "DataNotDeleted",
                                      f"the cleanup Job failed: {run_dir} stays on the volume (see the Job's pod log)"))
    left = timeout - (now - deleted_at).total_seconds()
    if left <= 0:
        return Step("release", event=("Warning", "DataNotDeleted",
                                      f"{run_dir} was not deleted within {timeout:.0f}s of the run's deletion "
                                      "and stays on the volume"))
    if stage_jobs:
        return Step("delete_stage_jobs", recheck_after=min(STOP_RECHECK, left))
    if live_pods:
        return Step("wait", recheck_after=min(STOP_RECHECK, left))
    if job == "none":
        return Step("create_job", recheck_after=left)
    return Step("wait", recheck_after=left)  # running: its end triggers a reconcile; else the timeout
