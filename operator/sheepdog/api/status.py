"""The SelfAlignmentRun status: written by the operator (or the local executor) only.

status.iterations[] records are the product's memory of what each iteration produced; the
local executor's report.json holds the same records. Keys follow shared API.md; `stages`
is our addition (per-stage phase, attempts and timings) and is what the planner reads back
after a restart, so nothing it needs lives only in memory.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
StagePhase = Literal["Pending", "Running", "Succeeded", "Failed"]

# RFC 3339 times, as Kubernetes writes them; the CRD schema says so (API conventions).
DATE_TIME = {"format": "date-time"}


def _time(description: str = "") -> Any:
    return Field(None, description=description or None, json_schema_extra=DATE_TIME)


def _gpu_seconds(description: str) -> Any:
    return Field(None, ge=0, description=description)


class StatusModel(BaseModel):
    # Status written by an older or newer operator must still load: extra keys are kept.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TrainProgress(StatusModel):
    """How far a train stage has got (sheepdog.progress): rank 0's latest logged step."""

    step: int = Field(ge=0, description="Optimizer steps done.")
    total_steps: int = Field(ge=1, description="Optimizer steps of the whole training.")
    epoch: Optional[float] = Field(None, ge=0, description="Epochs done (fractional).")
    eta_seconds: Optional[float] = Field(
        None, ge=0, description="Time left at this attempt's pace, as the stage estimated it.")
    observed_at: Optional[str] = _time("When the operator (or local executor) read this step.")


class StageRecord(StatusModel):
    phase: StagePhase = "Pending"
    job: Optional[str] = None
    attempts: int = 0
    started_at: Optional[str] = _time()
    finished_at: Optional[str] = _time()
    message: Optional[str] = None
    summary: Optional[dict[str, Any]] = Field(
        None,
        description="What the stage reported beyond the iteration's figures (bounded: the "
        "figures themselves live in the iteration record only).",
    )
    gpu_seconds: Optional[float] = _gpu_seconds(
        "GPUs x running time of the stage's pods, all attempts (cost, not progress).")
    stuck_reason: Optional[str] = Field(
        None, description="While its pods do not run: why (Unschedulable, ImagePullFailing, ...).")
    stuck_since: Optional[str] = _time("When the stuck state began (pendingTimeout counts from it).")
    retries: Optional[int] = Field(
        None, ge=1, description="How often a retry request resumed this stage after it failed "
        "(its Job is then <job>-r<retries>, with its attempts counted anew).")
    earlier_gpu_seconds: Optional[float] = _gpu_seconds(
        "GPU cost of the stage's Jobs before its latest retry (included in gpuSeconds).")
    progress: Optional[TrainProgress] = Field(
        None,
        description="train only: the latest step while it runs, read from rank 0's log about once "
        "per resync (locally from progress.json); kept when it fails (how far it got), removed "
        "when it succeeds (its summary reports the end).",
    )
    # The stage cache (docs/stage-cache.md)
    cache_key: Optional[str] = Field(
        None, description="The stage's content key (stage cache): the hash of its inputs' keys and "
        "the settings it reads. Absent with spec.stageCache false.")
    reused_from: Optional[str] = Field(
        None, description="Set when the stage did not run because another run's finished stage "
        "has the same key: that stage (<namespace>/<run>/iteration-<N>/<stage>; locally its "
        "directory). Its outputs are read in place, through links; nothing is copied.")
    reused_run_dir: Optional[str] = Field(
        None, description="The producing run's directory (relative to the volume root, as models "
        "are named) whose outputs this reused stage reads.")
    waiting_for: Optional[str] = Field(
        None, description="While another run produces the same stage (same key): that stage. "
        "This one then reuses its output, or runs itself if the producer fails.")
    node: Optional[str] = Field(
        None, description="The node its pod ran on, recorded when the stage finished (the pods "
        "whose outcome is recorded: the succeeded ones, or the last failed one); several nodes "
        "(shards, multi-node train) sorted and joined with \",\".")
    image_id: Optional[str] = Field(
        None, alias="imageID", description="The image its container ran, by digest, as the kubelet "
        "reported it (containerStatuses[].imageID, e.g. repo@sha256:...), recorded when the stage "
        "finished: which image produced the stage, after its Jobs are gone.")


class RetryRecord(StatusModel):
    """The latest retry request (annotation sheepdog.dev/retry) the operator has acted on."""

    token: str = Field(description="The annotation's value: a new value is a new request.")
    at: Optional[str] = _time("When it was acted on.")
    resumed: bool = Field(description="True: a Failed run resumed; false: the run had not failed.")
    iteration: Optional[int] = None
    stage: Optional[str] = Field(None, description="The failed stage that runs again.")
    job: Optional[str] = Field(None, description="The failed Job (kept for kubectl logs).")
    message: Optional[str] = Field(None, description="Why the run had failed.")


class IterationRecord(StatusModel):
    iteration: int
    generated: Optional[int] = None
    assessed: Optional[int] = None
    parse_failures: Optional[int] = None
    kept: Optional[int] = None
    keep_rate: Optional[float] = None
    mean_quality: Optional[float] = None
    mean_following: Optional[float] = None
    train_loss: Optional[float] = None
    # train's steady-step tokens/s, MFU (null on a CPU) and the largest rank's peak memory in GiB
    train_tokens_per_second: Optional[float] = None
    train_mfu: Optional[float] = None
    train_peak_memory_gib: Optional[float] = None
    generator_model: Optional[str] = None
    base_model: Optional[str] = None
    model: Optional[str] = None
    evaluation: Optional[dict[str, float]] = None
    evaluation_gain: Optional[dict[str, float]] = Field(
        None,
        description="metric -> this iteration's evaluation minus that of iteration 0 (M_0, the "
        "starting model), for the metrics both have; absent without M_0's evaluation.",
    )
    started_at: Optional[str] = _time()
    finished_at: Optional[str] = _time()
    gpu_seconds: Optional[float] = _gpu_seconds("Sum of the iteration's stages' gpuSeconds.")
    stages: dict[str, StageRecord] = Field(default_factory=dict)


class Condition(StatusModel):
    """metav1.Condition."""

    type: Literal["Ready", "Progressing", "Failed", "Suspended", "Stuck"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str = Field(json_schema_extra=DATE_TIME)
    observed_generation: Optional[int] = None


class PendingEvent(StatusModel):
    """An Event of the latest status write, posted again under its name after a restart."""

    name: str = Field(description="The Event's metadata.name.")
    type: Literal["Normal", "Warning"]
    reason: str
    message: str = ""
    at: str = Field(description="When it was decided.", json_schema_extra=DATE_TIME)


class RunStatus(StatusModel):
    phase: Phase = "Pending"
    reason: str = "Created"
    message: str = ""
    iteration: int = 0
    stage: Optional[str] = None
    observed_generation: Optional[int] = None
    # A list-map keyed by type (API conventions): one condition per type, merged by type.
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    last_kept: Optional[int] = Field(
        None,
        description="kept of the last iteration that finished curation (the Kept printer column).",
    )
    best_iteration: Optional[int] = None
    best_model: Optional[str] = None
    best_by: Optional[str] = Field(
        None, description="The stopping metric that chose bestIteration; unset: bestIteration is "
        "only the last finished iteration (no stopping, or no metric known yet).")
    started_at: Optional[str] = _time()
    finished_at: Optional[str] = _time()
    gpu_seconds: Optional[float] = _gpu_seconds("Sum of the iterations' gpuSeconds: the run's GPU cost.")
    iterations: list[IterationRecord] = Field(default_factory=list)
    last_retry: Optional[RetryRecord] = None
    preflight_generation: Optional[int] = Field(
        None, description="Operator only: the generation whose stage Jobs passed the pre-flight (a "
        "server-side dry run of each, and Pod Security for their pods).")
    pending_events: Optional[list[PendingEvent]] = Field(
        None,
        description="Operator only: the Events of the latest transition, by name. Posted right after "
        "the status write; an operator that died in between posts them after its restart.",
    )

    def record(self, iteration: int) -> Optional[IterationRecord]:
        for rec in self.iterations:
            if rec.iteration == iteration:
                return rec
        return None
