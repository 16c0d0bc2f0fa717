"""spec.suspend: no new stage starts while it is true, and the running stage is suspended.

In a cluster the running stage's Job is suspended (Job.spec.suspend: its pods are deleted, its
GPUs freed; the Job controller does not count them as failures) and the run is Suspended; on
resume the Job is unsuspended and its new pods go on from the stage's checkpoints (work since
the last checkpoint is redone). A Job that Kueue admits (queued) is never unsuspended by the
operator: the executor suspends it through its Kueue Workload (spec.active false, which Kueue
does not undo; sheepdog.kube.kueue_workloads), and the resume puts the Workload back in Kueue's
queue (spec.active true), once, in the reconcile that lifts the suspend; Kueue unsuspends the
Job when it admits it again. The run shows Running / Suspending until the Job is seen suspended. A local executor cannot suspend a process: there the running stage finishes
(Running / Suspending), then the run is Suspended.
"""

from __future__ import annotations

from typing import Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.planner.actions import StageObservation, SuspendStage
from sheepdog.planner.reasons import Reason


def may_start_stage(spec: RunSpec) -> bool:
    return not spec.suspend


def running_reason(spec: RunSpec) -> Reason:
    """The reason while a stage runs: Suspending if a suspend waits for it to end."""
    return Reason.SUSPENDING if spec.suspend else Reason.STAGE_RUNNING


def resuming(previous: RunStatus, spec: RunSpec) -> bool:
    """True in the reconcile that lifts a suspend (the run was suspended or suspending)."""
    return not spec.suspend and previous.reason in (Reason.SUSPENDED, Reason.SUSPENDING)


def suspended_message(next_step: Optional[tuple[int, str]]) -> str:
    if next_step is None:
        return "suspended"
    iteration, stage = next_step
    return f"suspended before iteration {iteration} {stage}"


def job_change(spec: RunSpec, obs: StageObservation, lifting: bool = False) -> Optional[SuspendStage]:
    """Suspend the running execution while spec.suspend; resume one that is suspended once
    it is lifted. A queued execution (Kueue) is resumed only when `lifting` (the reconcile that
    lifts the run's suspend, `resuming`): otherwise its suspension is Kueue's, waiting for
    admission. None: nothing to change."""
    if obs.state != "running":
        return None
    if spec.suspend and not obs.suspended:
        return SuspendStage(obs.iteration, obs.stage, True, obs.retry)
    if not spec.suspend and obs.suspended and (lifting or not obs.queued):
        return SuspendStage(obs.iteration, obs.stage, False, obs.retry)
    return None


def suspended_running_message(where: str) -> str:
    return f"suspended during {where}: its Job is suspended and its pods are gone (GPUs freed)"
