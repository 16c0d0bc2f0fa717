"""Recoverable runs: a retry request resumes a Failed run from the stage that failed.

A request is a token (in a cluster the run's annotation `sheepdog.dev/retry`, which `sheepdog
retry RUN` or `kubectl annotate` sets); a token the status has not recorded (status.lastRetry)
is a new request, so a request is acted on once, whatever the number of reconciles, restarts or
watch events that see it. Acting on it:

- the run is Failed: the failed stage record (status.iteration / status.stage: the stage that
  failed the run, an iteration's stage or its export) goes back to Pending with `retries`
  counted up, its failure message moves to status.lastRetry, its GPU cost so far to
  `earlierGpuSeconds`; everything before it (succeeded stages, iteration records, figures,
  the failed stage's progress) stays. The planner then starts the stage as a new execution
  named `<job>-r<retries>`: the failed Job stays as it was (its pods for `kubectl logs`), the
  new Job has its own backoffLimit, so the stage's attempts count anew, and the stage program
  resumes from its checkpoints on the run's volume. A `Retried` Event says so.
- the run has not failed: nothing is re-run; the token is recorded (so that a later failure is
  not retried by an old request) and a `RetryIgnored` Event says why.

Executions of a retried stage from before the retry are stale: `current` drops them, so the
failed Job never counts again.
"""

from __future__ import annotations

from typing import Iterable, Optional

from sheepdog.api.status import RetryRecord, RunStatus, StageRecord
from sheepdog.planner.actions import Event, StageObservation, stage_name
from sheepdog.planner.reasons import Reason

MAX_MESSAGE = 512  # status stays bounded: the failure's message as the run showed it, clipped


def requested(status: RunStatus, token: Optional[str]) -> bool:
    """A retry request the status has not recorded yet."""
    return bool(token) and (status.last_retry is None or status.last_retry.token != token)


def failed_stage(status: RunStatus) -> Optional[tuple[int, str, StageRecord]]:
    """The stage record that failed the run: the run's current stage when it is Failed there,
    else the latest Failed record (a status written by an older operator)."""
    record = status.record(status.iteration)
    if record is not None and status.stage in record.stages and record.stages[status.stage].phase == "Failed":
        return status.iteration, status.stage, record.stages[status.stage]
    failed = [(r.iteration, s, rec) for r in status.iterations for s, rec in r.stages.items() if rec.phase == "Failed"]
    return failed[-1] if failed else None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def apply(new: RunStatus, run_name: str, token: Optional[str], stamp: str) -> list[Event]:
    """Act on a new retry request (see the module docstring): changes `new` in place and returns
    the Events. No request, or one already recorded: nothing changes."""
    if not requested(new, token):
        return []
    found = failed_stage(new) if new.phase == "Failed" else None
    if found is None:
        why = f"the run is {new.phase}, not Failed" if new.phase != "Failed" else "no failed stage is recorded"
        new.last_retry = RetryRecord(token=token, at=stamp, resumed=False)
        return [Event("Normal", Reason.RETRY_IGNORED, f"retry {token}: nothing to retry: {why}")]
    iteration, stage, record = found
    retries = (record.retries or 0) + 1
    failure = _clip(new.message or record.message or "no message")
    new.last_retry = RetryRecord(token=token, at=stamp, resumed=True, iteration=iteration, stage=stage,
                                 job=record.job, message=failure)
    earlier = (record.earlier_gpu_seconds or 0.0) + (record.gpu_seconds or 0.0)
    new.record(iteration).stages[stage] = StageRecord(
        phase="Pending", job=stage_name(run_name, iteration, stage, retries), retries=retries,
        gpu_seconds=earlier or None, earlier_gpu_seconds=earlier or None, progress=record.progress)
    new.finished_at = None
    return [Event("Normal", Reason.RETRIED,
                  f"retry {token}: iteration {iteration} {stage} runs again (retry {retries}, Job "
                  f"{stage_name(run_name, iteration, stage, retries)}); it had failed: {failure}")]


def current(observed: Iterable[StageObservation], status: RunStatus) -> list[StageObservation]:
    """The observations that count: per stage, the execution of its latest retry; one from
    before the stage record's retries (the failed Job of a retried stage) is dropped."""
    latest: dict[tuple[int, str], StageObservation] = {}
    for obs in observed:
        held = latest.get(obs.key)
        if held is None or obs.retry > held.retry:
            latest[obs.key] = obs
    out = []
    for obs in latest.values():
        record = status.record(obs.iteration)
        stage = record.stages.get(obs.stage) if record is not None else None
        if stage is None or obs.retry >= (stage.retries or 0):
            out.append(obs)
    return out


def gpu_seconds(stage: StageRecord, observed: float) -> float:
    """The stage's GPU cost: its current execution's plus what the executions before its
    latest retry cost (history is kept)."""
    return observed + (stage.earlier_gpu_seconds or 0.0)
