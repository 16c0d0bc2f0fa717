"""plan(): the I-SHEEP loop as one pure function.

    (spec, last written status, stage executions that exist) -> (new status, actions, events)

Both executors call it in a loop: observe, plan, write plan.status, emit plan.events, carry out
plan.actions. Nothing here reads a clock, a disk or an API server, so every rule of the loop
is tested by feeding it observations (tests/planner).

How a reconcile goes:
1. absorb: each observed stage execution updates its stage record in the status. A finished
   stage record (Succeeded/Failed) is final, so a summary is recorded exactly once and its
   event emitted once, however often the same observation is seen again.
2. walk: the frontier is the latest iteration with a stage record; its latest stage decides
   what happens next (wait, start the next stage or iteration, stop, fail).
3. status: phase, reason, message and conditions are derived from that one decision.

Spec edits while a run is going (generation changes) follow one rule: a stage is configured
from the spec as it is when the stage starts; nothing that started is redone or reconfigured.
So an edit applies from the next stage that starts. Raising `iterations` runs more (also after
the run succeeded); lowering it below the current iteration ends the run after the current
iteration, because an iteration that started is always finished (a half iteration has no
model). `evaluation.enabled` turned off skips evaluate from the next iteration on (or from
now on, if this iteration has not reached it). Failed is final until a retry request
(`retry`, recovery_policy: `sheepdog retry RUN` in a cluster) resumes the run from the stage
that failed, as a new execution of that stage; locally `sheepdog run --retry-failed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping, Optional, Union

from sheepdog.api.spec import STAGES, RunSpec
from sheepdog.api.status import IterationRecord, RunStatus, StageRecord
from sheepdog.planner import baseline_policy, stage_order, stopping_policy, suspend_policy
from sheepdog.planner import progress_policy, recovery_policy, stage_cache_policy, stuck_policy
from sheepdog.planner.stage_cache_policy import StageCache
from sheepdog.planner.actions import Event, Plan, StageObservation, StartStage, SuspendStage, stage_name
from sheepdog.planner.conditions import TERMINAL_PHASES, conditions_for
from sheepdog.planner import export_policy, model_keep_policy
from sheepdog.planner.lineage_policy import iteration_count, stage_config
from sheepdog.planner.reasons import Reason
from sheepdog.planner.gpu_cost_policy import sum_gpu_seconds
from sheepdog.planner.records import apply_summary, describe_summary, record_for, stage_summary
from sheepdog.planner.retry_policy import max_attempts
from sheepdog.stage_config import Layout

Observed = Union[Iterable[StageObservation], Mapping[object, StageObservation]]


def timestamp(now: Union[datetime, str]) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    if isinstance(now, str):
        return now
    return now.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class _Decision:
    phase: str
    reason: str  # a Reason
    message: str
    iteration: int
    stage: Optional[str]
    actions: list[StartStage] = field(default_factory=list)
    changes: list[SuspendStage] = field(default_factory=list)
    stuck: Optional[tuple[str, str]] = None  # (reason, message) while the running stage is stuck


def plan(
    run_name: str,
    spec: RunSpec,
    status: Optional[RunStatus],
    observed: Observed,
    layout: Layout,
    now: Union[datetime, str],
    generation: Optional[int] = None,
    retry: Optional[str] = None,
    cache: Optional[StageCache] = None,
) -> Plan:
    """`retry`: the run's retry request token, if any (recovery_policy). `cache`: the stage
    cache's entries the executor found (stage_cache_policy); None: no cache."""
    stamp = timestamp(now)
    previous = status if status is not None else RunStatus()
    new = previous.model_copy(deep=True)
    events: list[Event] = []

    if generation is not None:
        if previous.observed_generation not in (None, generation) and previous.phase != "Failed":
            events.append(Event("Normal", Reason.SPEC_CHANGED,
                                f"generation {generation}: changes apply from the next stage that starts"))
        new.observed_generation = generation

    retried = recovery_policy.apply(new, run_name, retry, stamp)
    events += retried
    resumed = any(e.reason == Reason.RETRIED for e in retried)
    if previous.phase == "Failed" and not resumed:  # final: nothing is re-run or re-recorded
        decision = _Decision("Failed", previous.reason, previous.message, previous.iteration, previous.stage)
        return _finish(new, previous, decision, events, spec, stamp, generation)

    # read twice; a retried stage's executions from before its retry no longer count
    observed = recovery_policy.current(observed.values() if isinstance(observed, Mapping) else observed, new)
    observations = _index(observed)
    for obs in sorted(observations.values(), key=lambda o: (o.iteration, _stage_rank(o.stage))):
        events += _absorb(new, obs, run_name, spec, layout, stamp)
    sum_gpu_seconds(new)

    decision = _walk(run_name, spec, previous, new, observations, layout, stamp, events,
                     cache if spec.stage_cache else None)
    sum_gpu_seconds(new)  # again: a stage reused on the walk counts as 0 GPU-seconds
    if decision.phase == "Succeeded":  # spec.export: the best model goes out before the run succeeds
        decision = _export(run_name, spec, new, decision, observed, layout, stamp, events)
    return _finish(new, previous, decision, events, spec, stamp, generation)


def _export(run_name: str, spec: RunSpec, new: RunStatus, decision: _Decision, observed: list[StageObservation],
            layout: Layout, stamp: str, events: list[Event]) -> _Decision:
    best = stopping_policy.judge(spec.stopping, _finished(new)).best_iteration
    found = export_policy.observation(observed, best) if best is not None else None
    step = export_policy.step(run_name, spec, new, best, found, layout, stamp, events)
    if step is None:
        return decision
    return _Decision(step.phase, step.reason, step.message, best, export_policy.EXPORT,
                     actions=[step.action] if step.action else [])


def plan_invalid_spec(
    status: Optional[RunStatus], problems: list[str], now: Union[datetime, str], generation: Optional[int] = None
) -> Plan:
    """The spec cannot be loaded (an edit the API server's schema could not catch). Not final:
    no new stage starts until the spec is fixed; a running stage finishes; the next valid
    reconcile records it."""
    stamp = timestamp(now)
    previous = status if status is not None else RunStatus()
    new = previous.model_copy(deep=True)
    if generation is not None:
        new.observed_generation = generation
    if previous.phase == "Failed":
        return Plan(status=new, done=True)
    message = "spec is invalid: " + "; ".join(problems) + "; no new stage starts until it is fixed"
    new.reason, new.message = Reason.INVALID_SPEC.value, message
    new.conditions = conditions_for(new.phase, Reason.INVALID_SPEC, message, previous.conditions, stamp,
                                    new.observed_generation)
    events = []
    if (previous.reason, previous.message) != (new.reason, new.message):
        events.append(Event("Warning", Reason.INVALID_SPEC, message))
    return Plan(status=new, events=tuple(events), done=False)


# --- 1. absorb observations ---------------------------------------------------------------------


def _index(observed: Observed) -> dict[tuple[int, str], StageObservation]:
    values = observed.values() if isinstance(observed, Mapping) else observed
    return {obs.key: obs for obs in values if stage_order.is_stage(obs.iteration, obs.stage)}


def _stage_rank(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


def _absorb(new: RunStatus, obs: StageObservation, run_name: str, spec: RunSpec, layout: Layout, stamp: str) -> list[Event]:
    record = record_for(new, spec, obs.iteration, layout, started_at=obs.started_at or stamp)
    stage = record.stages.get(obs.stage) or StageRecord(job=stage_name(run_name, obs.iteration, obs.stage, obs.retry),
                                                        retries=obs.retry or None)
    record.stages[obs.stage] = stage
    if stage.phase in ("Succeeded", "Failed"):
        return []  # recorded once; a finished stage is never re-read
    where = f"iteration {obs.iteration} {obs.stage}"
    events: list[Event] = []
    stage.job = stage.job or stage_name(run_name, obs.iteration, obs.stage, obs.retry)
    stage.started_at = stage.started_at or obs.started_at or stamp
    if obs.gpu_seconds is not None:
        stage.gpu_seconds = recovery_policy.gpu_seconds(stage, obs.gpu_seconds)

    if obs.state == "running":
        if stage.phase == "Running" and obs.attempts > stage.attempts > 0:
            events.append(Event("Warning", Reason.STAGE_RETRYING,
                                f"{where}: attempt {obs.attempts} of {max_attempts(spec, obs.stage)}"
                                + (f" ({obs.message})" if obs.message else "")))
        stage.phase, stage.attempts = "Running", obs.attempts
        stage.message = obs.message or None
        is_stuck = stuck_policy.stuck(spec, obs)
        stage.stuck_reason = obs.stuck_reason if is_stuck else None
        stage.stuck_since = obs.stuck_since if is_stuck else None
        progress_policy.absorb(stage, obs.progress)
        return events

    stage.stuck_reason = stage.stuck_since = None

    stage.attempts = obs.attempts
    # provenance: known only from the finished Job's pods (kube/provenance.py)
    stage.node = obs.node or stage.node
    stage.image_id = obs.image_id or stage.image_id
    stage.finished_at = obs.finished_at or stamp
    if obs.state == "failed":
        detail = obs.message or _summary_error(obs.summary) or "no message"
        stage.phase, stage.message = "Failed", detail
        events.append(Event("Warning", Reason.STAGE_FAILED,
                            f"{where} failed after {_attempts(obs.attempts)}: {detail}"))
        return events

    summary = obs.summary if isinstance(obs.summary, dict) and obs.summary else None
    stage.phase, stage.summary, stage.message = "Succeeded", stage_summary(obs.stage, summary), None
    progress_policy.succeeded(stage)
    apply_summary(record, obs.stage, summary, layout)
    events.append(Event("Normal", Reason.STAGE_SUCCEEDED, f"{where} succeeded: {describe_summary(obs.stage, summary)}"))
    if summary is None:
        stage.message = "summary missing or unreadable: figures unknown"
        events.append(Event("Warning", Reason.SUMMARY_MISSING,
                            f"{where} succeeded but its summary is missing or unreadable; its figures are unknown"))
    elif obs.stage == "evaluate" and spec.stopping is not None:
        if stopping_policy.metric_of(record, spec.stopping.metric) is None:
            events.append(Event("Warning", Reason.METRIC_MISSING,
                                f"{where}: no {spec.stopping.metric} in the evaluation; "
                                "this iteration does not count for stopping"))
    return events


def _summary_error(summary: object) -> Optional[str]:
    if isinstance(summary, dict) and summary.get("error"):
        return str(summary["error"])
    return None


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


# --- 2. walk to the next step -------------------------------------------------------------------


def _walk(
    run_name: str,
    spec: RunSpec,
    previous: RunStatus,
    new: RunStatus,
    observations: Mapping[tuple[int, str], StageObservation],
    layout: Layout,
    stamp: str,
    events: list[Event],
    cache: Optional[StageCache] = None,
) -> _Decision:
    # a stage reused from the cache is recorded as succeeded; the walk then goes on from it
    again = lambda: _walk(run_name, spec, previous, new, observations, layout, stamp, events, cache)
    started = [r for r in new.iterations if r.stages]
    if not started:  # M_0 is evaluated first when evaluation is on (baseline_policy)
        iteration, stage = baseline_policy.first_stage(spec, new)
        return _start(run_name, spec, previous, new, iteration, stage, layout, stamp, events, cache, again)

    record = max(started, key=lambda r: r.iteration)
    frontier = record.iteration
    _close_earlier_iterations(new, frontier)
    stage = stage_order.last_started(record.stages)
    stage_record = record.stages[stage]
    where = f"iteration {frontier}: {stage}"

    if stage_record.phase == "Failed":
        return _Decision("Failed", Reason.STAGE_FAILED,
                         f"iteration {frontier} {stage} failed after {_attempts(stage_record.attempts)}: "
                         f"{stage_record.message or 'no message'}", frontier, stage)

    if stage_record.phase in ("Pending", "Running"):
        if (frontier, stage) in observations:
            return _running(spec, previous, stage_record, observations[(frontier, stage)], where, stamp, events)
        # Requested but not (or no longer) seen: start it (again) under the same name. Creating
        # is idempotent, and the stage programs resume from their checkpoints.
        if stage_record.phase == "Running":
            events.append(Event("Warning", Reason.STAGE_RESTARTED,
                                f"iteration {frontier} {stage} was running but its execution is gone; starting it again"))
            stage_record.phase = "Pending"
        return _start(run_name, spec, previous, new, frontier, stage, layout, stamp, events, cache, again)

    order = stage_order.stages_of(spec, record.stages, frontier)
    following = stage_order.next_stage(order, stage)
    if following is not None:
        return _start(run_name, spec, previous, new, frontier, following, layout, stamp, events, cache, again)

    # The frontier iteration is finished.
    record.finished_at = record.finished_at or stage_record.finished_at or stamp
    verdict = stopping_policy.judge(spec.stopping, _finished(new))
    last = iteration_count(spec)
    if frontier >= last:
        # "best" only where the stopping metric chose it; otherwise it is just the last one
        chosen = (f"best iteration {verdict.best_iteration} ({spec.stopping.metric} {verdict.best_value:g})"
                  if verdict.best_value is not None else f"last iteration {verdict.best_iteration}")
        return _Decision("Succeeded", Reason.COMPLETED,
                         f"{frontier} iteration{'s' if frontier != 1 else ''} finished; {chosen}", frontier, stage)
    if verdict.stop:
        s = spec.stopping
        return _Decision("Succeeded", Reason.EARLY_STOPPED,
                         f"stopped after iteration {frontier} of {last}: {s.metric} has not improved by more "
                         f"than {s.min_delta:g} for {s.patience} iteration{'s' if s.patience != 1 else ''}; "
                         f"best iteration {verdict.best_iteration} ({s.metric} {verdict.best_value:g})",
                         frontier, stage)
    return _start(run_name, spec, previous, new, frontier + 1, "synthesize", layout, stamp, events, cache, again)


def _running(
    spec: RunSpec,
    previous: RunStatus,
    stage_record: StageRecord,
    obs: StageObservation,
    where: str,
    stamp: str,
    events: list[Event],
) -> _Decision:
    """The frontier stage's execution exists and has not finished."""
    frontier, stage = obs.iteration, obs.stage
    change = suspend_policy.job_change(spec, obs, suspend_policy.resuming(previous, spec))
    changes = [change] if change is not None else []
    if stuck_policy.timed_out(spec, obs, stamp):
        detail = stuck_policy.timeout_message(spec, obs)
        stage_record.phase, stage_record.message, stage_record.finished_at = "Failed", detail, stamp
        stage_record.stuck_reason = stage_record.stuck_since = None
        events.append(Event("Warning", Reason.STAGE_FAILED, f"{where} failed: {detail}"))
        # suspended, its pending pods stop holding quota; the Job stays for `kubectl describe`
        return _Decision("Failed", Reason.STAGE_FAILED, f"iteration {frontier} {stage} failed: {detail}",
                         frontier, stage, changes=[SuspendStage(frontier, stage, True, obs.retry)])
    if spec.suspend and obs.suspended:
        message = suspend_policy.suspended_running_message(where)
        if previous.phase != "Suspended":
            events.append(Event("Normal", Reason.SUSPENDED, message))
        return _Decision("Suspended", Reason.SUSPENDED, message, frontier, stage)
    if suspend_policy.resuming(previous, spec):
        events.append(Event("Normal", Reason.RESUMED, f"resumed: {where} running"))
    if stuck_policy.stuck(spec, obs):
        message = stuck_policy.stuck_message(where, obs)
        if previous.reason != obs.stuck_reason:  # once per reason, not per changed detail
            events.append(Event("Warning", obs.stuck_reason, message))
        return _Decision("Running", obs.stuck_reason, message, frontier, stage, changes=changes,
                         stuck=(obs.stuck_reason, obs.stuck_message))
    attempt = ""
    if stage_record.attempts > 1:
        attempt = f" (attempt {stage_record.attempts} of {max_attempts(spec, stage)})"
    return _Decision("Running", suspend_policy.running_reason(spec), f"{where} running{attempt}",
                     frontier, stage, changes=changes)


def _start(
    run_name: str,
    spec: RunSpec,
    previous: RunStatus,
    new: RunStatus,
    iteration: int,
    stage: str,
    layout: Layout,
    stamp: str,
    events: list[Event],
    cache: Optional[StageCache] = None,
    again: Optional[Callable[[], _Decision]] = None,
) -> _Decision:
    if not suspend_policy.may_start_stage(spec):
        if previous.phase != "Suspended":
            events.append(Event("Normal", Reason.SUSPENDED, suspend_policy.suspended_message((iteration, stage))))
        return _Decision("Suspended", Reason.SUSPENDED, suspend_policy.suspended_message((iteration, stage)),
                         iteration, stage)

    record = record_for(new, spec, iteration, layout, started_at=stamp)
    existing = record.stages.get(stage)
    # The cache is asked before a stage's first execution only: a retried stage runs again.
    found = stage_cache_policy.lookup(cache, spec, iteration, stage) \
        if cache is not None and again is not None and (existing is None or (existing.phase == "Pending"
                                                                              and not existing.retries)) else None
    if found is not None and found.verdict == "reuse":
        events.append(stage_cache_policy.reuse(record, stage, found, layout, stamp))
        return again()
    if stage not in record.stages:
        record.stages[stage] = StageRecord(phase="Pending", job=stage_name(run_name, iteration, stage))
        events.append(Event("Normal", Reason.STAGE_STARTING, f"iteration {iteration}: starting {stage}"))
    if found is not None:
        record.stages[stage].cache_key = found.key
        record.stages[stage].waiting_for = found.entry.producer if found.verdict == "wait" else None
        if found.verdict == "wait":  # no Job: the other run's output is this stage's
            message = stage_cache_policy.wait_message(iteration, stage, found)
            if previous.reason != Reason.WAITING_FOR_STAGE:
                events.append(Event("Normal", Reason.WAITING_FOR_STAGE, message))
            new.started_at = new.started_at or stamp
            return _Decision("Running", Reason.WAITING_FOR_STAGE, message, iteration, stage)
    config = stage_config(run_name, spec, iteration, stage, layout)
    config.reuse_links = stage_cache_policy.links(new, layout)
    if stage == "train":  # storage.keepModels: room for this iteration's model (a reused one is not ours)
        config.delete_models = [m for m in model_keep_policy.models_to_delete(spec, _finished(new), iteration, layout)
                                if m not in config.reuse_links]
    action = StartStage(iteration, stage, config, retry=record.stages[stage].retries or 0)
    reason, message = Reason.STAGE_STARTING, f"iteration {iteration}: starting {stage}"
    if suspend_policy.resuming(previous, spec):
        events.append(Event("Normal", Reason.RESUMED, f"resumed: iteration {iteration}: starting {stage}"))
        reason, message = Reason.RESUMED, f"resumed: {message}"
    new.started_at = new.started_at or stamp
    return _Decision("Running", reason, message, iteration, stage, actions=[action])


def _close_earlier_iterations(new: RunStatus, frontier: int) -> None:
    """Iterations before the frontier are finished (the walk only moves on from a finished
    one); after a restart that rebuilt them from observations, give them their end time."""
    for record in new.iterations:
        if record.iteration < frontier and record.finished_at is None:
            ends = [s.finished_at for s in record.stages.values() if s.finished_at]
            record.finished_at = max(ends) if ends else None


def _finished(new: RunStatus) -> list[IterationRecord]:
    return [r for r in new.iterations if r.finished_at is not None]


# --- 3. write the status ------------------------------------------------------------------------


def _finish(
    new: RunStatus,
    previous: RunStatus,
    decision: _Decision,
    events: list[Event],
    spec: RunSpec,
    stamp: str,
    generation: Optional[int],
) -> Plan:
    new.phase = decision.phase
    new.reason = str(decision.reason)
    new.message = decision.message
    new.iteration = decision.iteration
    new.stage = decision.stage
    terminal = decision.phase in TERMINAL_PHASES
    new.finished_at = (new.finished_at or stamp) if terminal else None

    baseline_policy.apply_gains(new)
    verdict = stopping_policy.judge(spec.stopping, _finished(new))
    best = new.record(verdict.best_iteration) if verdict.best_iteration is not None else None
    new.best_iteration = best.iteration if best else None
    new.best_model = best.model if best else None
    new.best_by = spec.stopping.metric if best and verdict.best_value is not None else None
    if "last_kept" in type(new).model_fields:  # the Kept printer column, where the model has it
        kept = [r.kept for r in new.iterations if r.kept is not None]
        new.last_kept = kept[-1] if kept else None

    observed_generation = new.observed_generation if generation is None else generation
    new.conditions = conditions_for(new.phase, new.reason, new.message, previous.conditions, stamp,
                                    observed_generation)
    stuck_reason, stuck_message = decision.stuck or (None, "")
    new.conditions.append(stuck_policy.condition(stuck_reason, stuck_message, previous.conditions, stamp,
                                                 observed_generation))
    if decision.phase == "Succeeded" and (previous.phase, previous.reason) != (new.phase, new.reason):
        events.append(Event("Normal", decision.reason, decision.message))
    return Plan(status=new, actions=tuple(decision.actions), events=tuple(events),
                job_changes=tuple(decision.changes), done=terminal)
