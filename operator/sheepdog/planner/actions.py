"""What the planner hands to an executor: inputs (StageObservation) and outputs (Plan).

Plain frozen dataclasses: an executor builds observations from whatever it watches (Jobs in
a cluster, files on a local disk) and carries out a Plan's actions; the planner itself never
touches either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from sheepdog.api.status import RunStatus
from sheepdog.stage_config import StageConfig

StageState = Literal["running", "succeeded", "failed"]
EventType = Literal["Normal", "Warning"]


def stage_name(run_name: str, iteration: int, stage: str, retry: int = 0) -> str:
    """The one name of a stage execution (the Job name in a cluster): `<run>-i<N>-<stage>`,
    and `<run>-i<N>-<stage>-r<K>` after the K-th retry request resumed the failed stage
    (recovery_policy): a new execution, the failed one stays as it was."""
    base = f"{run_name}-i{iteration}-{stage}"
    return f"{base}-r{retry}" if retry else base


@dataclass(frozen=True)
class StageObservation:
    """A stage execution that exists. `failed` means its attempts are exhausted: retries
    happen below the planner (the Job controller, or the local executor's attempt loop)."""

    iteration: int
    stage: str
    state: StageState
    attempts: int = 1
    summary: Optional[dict[str, Any]] = None  # the stage's one-line JSON summary, if readable
    message: str = ""
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    # GPUs x running time of its pods so far (all attempts); None when unknown
    gpu_seconds: Optional[float] = None
    # Why its pods do not run (a Reason of stuck_policy) with Kubernetes' message, and since
    # when; empty while nothing is wrong. Only a cluster executor observes these.
    stuck_reason: str = ""
    stuck_message: str = ""
    stuck_since: Optional[str] = None
    suspended: bool = False  # the execution is suspended (Job.spec.suspend)
    queued: bool = False  # a queue (Kueue) unsuspends it, never the operator
    # A running train's latest progress reading (progress_policy): {step, totalSteps, epoch,
    # etaSeconds, observedAt}; None when it was not read this time.
    progress: Optional[dict[str, Any]] = None
    retry: int = 0  # which retry of the stage this execution is (0: the first; recovery_policy)
    # Where its finished pods ran (kube/provenance.py): the node and the container's imageID;
    # None when unknown (running, pods gone, the local executor).
    node: Optional[str] = None
    image_id: Optional[str] = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.iteration, self.stage)


@dataclass(frozen=True)
class StartStage:
    """Create the stage execution named `name` unless it exists (creating is idempotent)."""

    iteration: int
    stage: str
    config: StageConfig
    retry: int = 0  # the stage record's retries: a retried stage gets a new execution

    @property
    def name(self) -> str:
        return stage_name(self.config.run, self.iteration, self.stage, self.retry)


@dataclass(frozen=True)
class SuspendStage:
    """Suspend (or, with suspend False, resume) the running execution of a stage: its pods
    go and free their GPUs; resumed, it starts again from its checkpoints. Only a cluster
    executor carries it out (Job.spec.suspend); a local executor lets the stage finish."""

    iteration: int
    stage: str
    suspend: bool = True
    retry: int = 0  # the execution's (StageObservation.retry)


@dataclass(frozen=True)
class Event:
    """To be emitted by the executor only after the status write succeeded."""

    type: EventType
    reason: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", str(self.reason))  # a Reason, stored as its plain word


@dataclass(frozen=True)
class Plan:
    status: RunStatus  # the complete new status to write
    actions: tuple[StartStage, ...] = ()
    events: tuple[Event, ...] = ()
    job_changes: tuple[SuspendStage, ...] = ()  # to executions that exist (cluster only)
    done: bool = False  # terminal: nothing will happen without a spec change
