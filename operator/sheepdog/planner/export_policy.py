"""spec.export: once the run's best iteration is known (the run would succeed: its last
iteration finished, or stopping ended it), export that iteration's model before the run
succeeds.

The export is one more execution of the best iteration, named `<run>-i<N>-export` (a Job on a
cluster, a subprocess locally: the command is export_command), recorded as the stage record
`export` of that iteration, so it is created once, retried by the same rules as a stage, and
read back after a restart. While it runs the run stays Running (reason Exporting); when it
succeeds the run succeeds; when its attempts are exhausted the run fails (reason
ExportFailed): a run that asked for its model elsewhere and did not get it there has not done
what it was asked. Adding spec.export to a run that already succeeded exports it then.
A later best iteration (more iterations asked) is exported under its own name. When no
iteration beat M_0 (stopping from iteration 0, the base) nothing is exported: a Warning event
says so and the record of iteration 0 keeps it (`export: {phase: Succeeded, summary: {skipped}}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Union

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus, StageRecord
from sheepdog.export.config import ExportConfig, export_config
from sheepdog.planner.actions import Event, StageObservation, stage_name
from sheepdog.stage_config import Layout

EXPORT = "export"
EXPORTING = "Exporting"  # status.reason while the export runs
EXPORTED = "Exported"  # event
EXPORT_FAILED = "ExportFailed"  # status.reason of a run whose export failed
EXPORT_SKIPPED = "ExportSkipped"  # event: the best model is M_0, the base
NOT_EXPORTED = "the best iteration is 0: no iteration beat M_0, the base model"


@dataclass(frozen=True)
class StartExport:
    """Create the export execution `name` unless it exists (as StartStage for a stage)."""

    iteration: int
    config: ExportConfig
    stage: str = EXPORT
    retry: int = 0  # the export record's retries (recovery_policy)

    @property
    def name(self) -> str:
        return stage_name(self.config.run, self.iteration, EXPORT, self.retry)


@dataclass(frozen=True)
class ExportStep:
    """What the export changes in a decision that would otherwise succeed the run."""

    phase: str  # Running | Failed
    reason: str
    message: str
    action: Optional[StartExport] = None


def observation(observed: Union[Iterable[StageObservation], Mapping[object, StageObservation]],
                iteration: int) -> Optional[StageObservation]:
    values = observed.values() if isinstance(observed, Mapping) else observed
    return next((o for o in values if o.stage == EXPORT and o.iteration == iteration), None)


def step(run_name: str, spec: RunSpec, status: RunStatus, best: Optional[int], observed: Optional[StageObservation],
         layout: Layout, stamp: str, events: list[Event]) -> Optional[ExportStep]:
    """None: nothing to export, or exported (the run succeeds as decided). Updates the best
    iteration's `export` stage record in `status` and appends events."""
    record = status.record(best) if spec.export is not None and best is not None else None
    if record is None or not record.model:
        return None
    where = f"iteration {best} export"
    stage = record.stages.get(EXPORT)
    if best == 0:  # no iteration beat M_0: the base model is already wherever it came from
        if stage is None:
            record.stages[EXPORT] = StageRecord(phase="Succeeded", finished_at=stamp, summary={"skipped": True},
                                                message=NOT_EXPORTED)
            events.append(Event("Warning", EXPORT_SKIPPED, f"nothing exported to {spec.export.to}: {NOT_EXPORTED}"))
        return None
    if stage is None:
        stage = record.stages[EXPORT] = StageRecord(phase="Pending", job=stage_name(run_name, best, EXPORT))
        events.append(Event("Normal", EXPORTING, f"exporting the model of iteration {best} to {spec.export.to}"))
    if stage.phase not in ("Succeeded", "Failed") and observed is not None:
        stage.started_at = stage.started_at or observed.started_at or stamp
        stage.attempts = observed.attempts
        if observed.state == "succeeded":
            stage.phase, stage.finished_at, stage.message = "Succeeded", observed.finished_at or stamp, None
            stage.summary = {k: v for k, v in (observed.summary or {}).items() if k in ("to", "files", "bytes")}
            events.append(Event("Normal", EXPORTED, f"{where} succeeded: the model is at {spec.export.to}"))
        elif observed.state == "failed":
            detail = observed.message or str((observed.summary or {}).get("error") or "no message")
            stage.phase, stage.finished_at, stage.message = "Failed", observed.finished_at or stamp, detail
            events.append(Event("Warning", EXPORT_FAILED, f"{where} failed: {detail}"))
        else:
            stage.phase = "Running"
    if stage.phase == "Succeeded":
        return None
    if stage.phase == "Failed":
        return ExportStep("Failed", EXPORT_FAILED, f"{where} to {spec.export.to} failed after "
                          f"{stage.attempts} attempt{'s' if stage.attempts != 1 else ''}: {stage.message}")
    action = None
    if observed is None:  # not (or no longer) seen: create it; creating is idempotent
        config = export_config(run_name, spec, [r.to_wire() for r in status.iterations], layout,
                               spec.export.to, best, best)
        action = StartExport(best, config, retry=stage.retries or 0)
    return ExportStep("Running", EXPORTING, f"iteration {best}: exporting the model to {spec.export.to}", action)
