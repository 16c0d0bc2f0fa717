"""The SelfAlignmentSweep status: written by the operator only (sheepdog.sweep.policy).

Per cell: its child run, phase, per iteration what curation kept and the evaluation metrics,
GPU-seconds, and which stages it reused from another run (the stage cache); for the sweep:
counts, its total GPU-seconds and what sharing saved (the producers' GPU-seconds of every
reused stage whose producer is one of the sweep's children).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from sheepdog.api.status import Condition, StatusModel

SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Invalid"]


class SweepCellIteration(StatusModel):
    iteration: int
    kept: Optional[int] = None
    train_loss: Optional[float] = None
    evaluation: Optional[dict[str, float]] = None


class SweepReuse(StatusModel):
    iteration: Optional[int] = None
    stage: str
    from_: str = Field(alias="from", description="The producing stage: <namespace>/<run>/iteration-<N>/<stage>.")


class SweepCellStatus(StatusModel):
    name: str = Field(description="The cell (with -s<r> for a repeat).")
    group: str = Field(description="The table row: the cell without its repeat.")
    run: str = Field(description="The child SelfAlignmentRun.")
    settings: dict[str, Any] = Field(default_factory=dict, description="field path -> value the cell sets.")
    phase: str = Field(description="The child's phase; NotCreated before it exists (maxParallelRuns).")
    reason: Optional[str] = None
    iterations: list[SweepCellIteration] = Field(default_factory=list)
    gpu_seconds: Optional[float] = Field(None, ge=0)
    reused: list[SweepReuse] = Field(default_factory=list, description="Stages the child took from the stage cache.")


class SweepCondition(Condition):
    type: Literal["Ready", "Invalid"]  # type: ignore[assignment]


class SweepStatus(StatusModel):
    phase: SweepPhase = "Pending"
    reason: str = "Created"
    message: str = ""
    observed_generation: Optional[int] = None
    conditions: list[SweepCondition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    runs: int = Field(0, description="Child runs in the grid (cells x repeats).")
    created: int = 0
    running: int = Field(0, description="Created and not finished.")
    succeeded: int = 0
    failed: int = 0
    progress: str = Field("", description="succeeded/runs (the Done printer column).")
    gpu_seconds: Optional[float] = Field(None, ge=0, description="Sum of the children's gpuSeconds.")
    saved_gpu_seconds: Optional[float] = Field(
        None, ge=0, description="What the reused stages cost their producers among the children: GPU time "
        "the sweep did not spend again.")
    reused_stages: int = Field(0, description="Stages of the children taken from the stage cache.")
    cells: list[SweepCellStatus] = Field(default_factory=list)
