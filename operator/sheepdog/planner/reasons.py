"""The typed reasons of status.reason, conditions and events (CamelCase, as Kubernetes uses)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # status.reason (and the reason of every condition)
    CREATED = "Created"
    STAGE_STARTING = "StageStarting"
    STAGE_RUNNING = "StageRunning"
    STAGE_FAILED = "StageFailed"
    SUSPENDING = "Suspending"  # suspend requested; the running stage finishes first
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    COMPLETED = "Completed"
    EARLY_STOPPED = "EarlyStopped"
    INVALID_SPEC = "InvalidSpec"
    # events only
    STAGE_SUCCEEDED = "StageSucceeded"
    STAGE_RETRYING = "StageRetrying"
    STAGE_RESTARTED = "StageRestarted"
    SUMMARY_MISSING = "SummaryMissing"
    METRIC_MISSING = "MetricMissing"
    SPEC_CHANGED = "SpecChanged"
