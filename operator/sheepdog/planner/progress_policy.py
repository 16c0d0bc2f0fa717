"""stages.train.progress: what a stage record keeps of its execution's progress readings.

A reading (sheepdog.progress.progress_record plus the observedAt of the read) comes from an
executor: the operator reads rank 0's pod log at most once per resync, the local executor
reads progress.json while it waits. The rules, the same for both:
- a new step replaces the record; a reading of the step already recorded changes nothing
  (observedAt stays the time the step was first seen, so an idle read writes no status);
- no reading (not read this time, the pod not started, the log unreadable) keeps the record;
- the stage succeeds -> the record goes (the summary and trainLoss report the end, and an ETA
  of a finished stage is noise); it fails -> the record stays: how far it got.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from sheepdog.api.status import StageRecord, TrainProgress


def absorb(record: StageRecord, reading: Optional[Mapping[str, Any]]) -> None:
    """A running stage's record takes a new reading (see the module docstring)."""
    if not reading:
        return
    new = TrainProgress.model_validate(dict(reading))
    old = record.progress
    same = ("step", "total_steps", "epoch", "eta_seconds")
    if old is not None and all(getattr(old, k) == getattr(new, k) for k in same):
        return
    record.progress = new


def succeeded(record: StageRecord) -> None:
    record.progress = None
