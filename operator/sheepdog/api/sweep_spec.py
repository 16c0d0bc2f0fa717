"""The SelfAlignmentSweep spec (v1alpha1): one object for an ablation grid.

    spec.template         a run spec (the SelfAlignmentRun spec, as in a run file)
    spec.axes[]           {field, values, name}: a dotted camelCase path into the run spec (as
                          `--set` takes it) and the values it takes; axes are crossed
    spec.cells[]          {name, settings}: named cells for a grid that is not a product
                          (each crossed with the axes, when both are given)
    spec.repeats          runs per cell with seeds synthesis.randomSeed + 0 .. repeats-1
    spec.maxParallelRuns  children running at once (the GPUs a sweep may hold)

Every child is a full SelfAlignmentRun: the template with the cell's settings set, validated
by the same code as a run file (sheepdog.sweep.grid). A field path is checked against the run
models when the sweep is loaded, so a typo fails here and not in one cell. The CRD schema is
generated from these models (sheepdog.api.sweep_crd), like the run's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from sheepdog.api.spec import Metadata, Model, RunSpec

SWEEP_KIND = "SelfAlignmentSweep"
SWEEP_PLURAL = "selfalignmentsweeps"
# A grid beyond this is almost certainly a mistake (a typo'd list crossed with another): each
# cell is a whole self-alignment run.
MAX_CELLS = 256
MAX_REPEATS = 20
# a DNS label short enough that <sweep>-<cell> still reads before a child name's hash suffix
CELL_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Any YAML value: the API server keeps it as given (no structural type can say "a number, a
# string or a list"); the run's own validation checks it once it is set into a child.
AnyValue = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]


class SweepAxis(Model):
    field: str = Field(
        min_length=1,
        description="A dotted camelCase path into the run spec, as `sheepdog run --set` takes it "
        "(filter.threshold, training.strategy, assessment.criteria).",
    )
    values: list[AnyValue] = Field(min_length=1, description="The values the field takes, one per cell.")
    name: Optional[str] = Field(
        None, min_length=1, max_length=24, pattern=CELL_NAME,
        description="Short label in cell names and table headers (default: the path's last segment).",
    )


class SweepCell(Model):
    name: str = Field(min_length=1, max_length=30, pattern=CELL_NAME,
                      description="The cell's name: its row in the table and part of its child run's name.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="field path -> value, set into the template (paths as in axes[].field).",
    )


class SweepSpec(Model):
    """spec of a SelfAlignmentSweep."""

    template: RunSpec = Field(description="The run spec every cell starts from (a SelfAlignmentRun's spec).")
    axes: list[SweepAxis] = Field(default_factory=list, description="Crossed into the grid, first axis slowest.")
    cells: list[SweepCell] = Field(
        default_factory=list,
        description="Named cells for grids that are not a product; crossed with axes when both are given.")
    repeats: int = Field(1, ge=1, le=MAX_REPEATS, description="Runs per cell; repeat r sets "
                         "synthesis.randomSeed to the template's seed + r. The table shows mean ± sd.")
    max_parallel_runs: Optional[int] = Field(
        None, ge=1, le=MAX_CELLS,
        description="At most this many child runs unfinished at once; the others are created as "
        "earlier ones finish. Unset: all at once.")
    suspend: bool = Field(False, description="Create no further child runs (those created go on).")

    @field_validator("axes")
    @classmethod
    def _distinct_axes(cls, v: list[SweepAxis]) -> list[SweepAxis]:
        fields = [a.field.removeprefix("spec.") for a in v]
        if len(set(fields)) != len(fields):
            raise ValueError("axes: a field appears twice (cross its values in one axis)")
        labels = [a.name for a in v if a.name]
        if len(set(labels)) != len(labels):
            raise ValueError("axes: two axes have the same name")
        return v

    @field_validator("cells")
    @classmethod
    def _distinct_cells(cls, v: list[SweepCell]) -> list[SweepCell]:
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError("cells: two cells have the same name")
        return v

    @model_validator(mode="after")
    def _grid(self) -> "SweepSpec":
        if not self.axes and not self.cells:
            raise ValueError("a sweep needs axes or cells (or both)")
        size = max(1, len(self.cells)) * self.repeats
        for axis in self.axes:
            size *= len(axis.values)
        if size > MAX_CELLS:
            raise ValueError(f"the grid has {size} runs (cells x axes x repeats); at most {MAX_CELLS}")
        return self


class SelfAlignmentSweep(BaseModel):
    """A whole sweep manifest, as `kubectl apply` and `sheepdog sweep` take it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_version: Literal["sheepdog.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SelfAlignmentSweep"]
    metadata: Metadata
    spec: SweepSpec
    status: Optional[dict[str, Any]] = None
