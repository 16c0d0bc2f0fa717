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
    # a running stage whose pods do not run (stuck_policy; kube/stuck.py observes them)
    NOT_ADMITTED = "NotAdmitted"  # Job suspended until Kueue admits it
    PODS_NOT_CREATED = "PodsNotCreated"  # FailedCreate: Pod Security, a webhook, a policy
    QUOTA_EXCEEDED = "QuotaExceeded"  # FailedCreate of a ResourceQuota: waits for capacity
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL_FAILING = "ImagePullFailing"
    CONTAINER_CONFIG_ERROR = "ContainerConfigError"  # a missing Secret, ConfigMap or key
    VOLUME_MOUNT_FAILING = "VolumeMountFailing"  # FailedMount / FailedAttachVolume Events of a pod
    CONTAINER_CREATING_TOO_LONG = "ContainerCreatingTooLong"  # no Event says why (a slow pull?)
    # a stage Job that could not be created (creation_policy)
    JOB_CREATE_FAILED = "JobCreateFailed"  # transient: retried with backoff
    JOB_REJECTED = "JobRejected"  # permanent: the run fails with the API server's message
    JOB_CONFLICT = "JobConflict"  # a Job of that name exists and this run does not own it
    WAITING_FOR_OLD_PODS = "WaitingForOldPods"  # a Job deleted by hand; its pods still run
    # the stage cache (stage_cache_policy): another run produces the same stage right now
    WAITING_FOR_STAGE = "WaitingForStage"
    # a Failed run resumed by a retry request (recovery_policy)
    RETRIED = "Retried"
    # events only
    RETRY_IGNORED = "RetryIgnored"  # a retry request for a run that has not failed
    STAGE_SUCCEEDED = "StageSucceeded"
    STAGE_REUSED = "StageReused"  # another run's finished stage of the same key stands for it
    STAGE_RETRYING = "StageRetrying"
    STAGE_RESTARTED = "StageRestarted"
    SUMMARY_MISSING = "SummaryMissing"
    METRIC_MISSING = "MetricMissing"
    SPEC_CHANGED = "SpecChanged"
