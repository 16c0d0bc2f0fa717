"""Child Jobs (and their pods) -> the planner's StageObservations. Pure: dicts in, values out.

The operator reads Jobs as plain JSON dicts (what the API server returns), so everything here is
testable without a cluster. A Job is:

  running    no terminal condition yet (pods pending, active, or being retried)
  succeeded  condition Complete=True
  failed     condition Failed=True (the Job controller has exhausted backoffLimit, hit
             activeDeadlineSeconds, or a podFailurePolicy FailJob rule matched)

attempts = status.failed, plus one for the attempt that is running or that succeeded. Pods that a
podFailurePolicy Ignore rule discounted (disruptions) are not in status.failed, so they are not
counted either: they did not consume a retry.

The stage summary (a one-line JSON object, < 4 KB) is the termination message of the Job's
succeeded pod. For an Indexed Job with several pods (synthesize shards, multi-node train), the
summaries of all succeeded pods are merged (see merge_summaries).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from sheepdog.planner.actions import StageObservation
from sheepdog.summaries import merge_summaries, parse_summary
from sheepdog.timestamps import parse_time
from sheepdog.redaction import redact

from sheepdog.kube import stuck as stuck_mod
from sheepdog.kube.gpu_cost import job_gpu_seconds
from sheepdog.kube.jobs import (COMPLETION_INDEX_ANNOTATION, JOB_NAME_LABEL, LABEL_ITERATION, LABEL_RETRY, LABEL_RUN,
                                LABEL_STAGE)
from sheepdog.kube.provenance import provenance

# The Job controller labels its pods with both (job-name is the older one).
POD_JOB_LABELS = (JOB_NAME_LABEL, "job-name")

MAX_MESSAGE = 1024  # keep status.message-like fields readable (and small in etcd)


def _cond(job: Mapping[str, Any], type_: str) -> Optional[Mapping[str, Any]]:
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def job_state(job: Mapping[str, Any]) -> str:
    if _cond(job, "Complete") is not None:
        return "succeeded"
    if _cond(job, "Failed") is not None:
        return "failed"
    return "running"


def job_identity(job: Mapping[str, Any]) -> Optional[tuple[int, str]]:
    """(iteration, stage) from the Job's labels; None for a Job that is not a stage Job."""
    labels = (job.get("metadata") or {}).get("labels") or {}
    try:
        iteration = int(labels[LABEL_ITERATION])
        stage = labels[LABEL_STAGE]
    except (KeyError, TypeError, ValueError):
        return None
    return iteration, stage


def job_retry(job: Mapping[str, Any]) -> int:
    """Which retry of its stage the Job is (label sheepdog.dev/retry; 0: the first Job)."""
    try:
        return max(0, int(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_RETRY, 0)))
    except (TypeError, ValueError):
        return 0


def job_attempts(job: Mapping[str, Any]) -> int:
    """Attempts so far: failed pods (counted, plus those the Job controller has seen fail but
    not yet counted: status.uncountedTerminatedPods), plus one that is active or succeeded
    (counted or not yet). Without the uncounted ones the figure would dip for a moment after
    each pod's end, and every dip is a Job event that looks like news (job_signature). A Job
    with no pod yet is on its first attempt from the moment it exists: so the status written
    when the Job is created already holds the figure, and the Job controller's first updates
    are no news (one status write per stage transition, not two)."""
    st = job.get("status") or {}
    uncounted = st.get("uncountedTerminatedPods") or {}
    failed = int(st.get("failed") or 0) + len(uncounted.get("failed") or ())
    succeeded = int(st.get("succeeded") or 0) + len(uncounted.get("succeeded") or ())
    state = job_state(job)
    if state == "succeeded":
        return failed + 1
    if state == "running" and (int(st.get("active") or 0) > 0 or succeeded > 0 or failed == 0):
        return failed + 1
    return failed


def job_signature(job: Mapping[str, Any]) -> tuple:
    """Everything of a Job that observe_job reads from it. A Job event that leaves this
    unchanged (a pod became ready, a finalizer went) cannot change the plan."""
    st = job.get("status") or {}
    return (job_state(job), job_attempts(job), int(st.get("failed") or 0), st.get("startTime"),
            job_finished_at(job), stuck_mod.suspended(job))


def job_finished_at(job: Mapping[str, Any]) -> Optional[str]:
    st = job.get("status") or {}
    state = job_state(job)
    if state == "succeeded":
        return st.get("completionTime") or (_cond(job, "Complete") or {}).get("lastTransitionTime")
    if state == "failed":
        return (_cond(job, "Failed") or {}).get("lastTransitionTime")
    return None


# ---------------------------------------------------------------------------------------------
# pods


def pods_of_job(pods: Iterable[Mapping[str, Any]], job_name: str) -> list[Mapping[str, Any]]:
    out = []
    for p in pods:
        labels = (p.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) == job_name for k in POD_JOB_LABELS):
            out.append(p)
    return out


def _terminated(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Terminated states of the pod's containers (main containers first, then init containers)."""
    st = pod.get("status") or {}
    out = []
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in st.get(key) or ():
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term:
                out.append(term)
    return out


def termination_message(pod: Mapping[str, Any]) -> Optional[str]:
    for term in _terminated(pod):
        msg = term.get("message")
        if msg and msg.strip():
            return msg.strip()
    return None


def _pod_finished(pod: Mapping[str, Any]) -> str:
    times = [t.get("finishedAt") or "" for t in _terminated(pod)]
    return max(times, default="") or ((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _index(pod: Mapping[str, Any]) -> int:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        return int(ann.get(COMPLETION_INDEX_ANNOTATION, 0))
    except (TypeError, ValueError):
        return 0


def job_summary(pods: Iterable[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """Summary of a succeeded Job from its succeeded pods; None when none is readable."""
    succeeded = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    by_index: dict[int, dict[str, Any]] = {}
    for p in sorted(succeeded, key=_pod_finished):
        summary = parse_summary(termination_message(p))
        if summary is not None:
            by_index[_index(p)] = summary  # the latest success of each index wins
    if not by_index:
        return None
    return merge_summaries([by_index[i] for i in sorted(by_index)])


def failure_message(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]] = ()) -> str:
    """Why a Job failed: its Failed condition (reason: message) and the last failed pod's
    termination message (the stage's `{"ok": false, "error": ...}` summary when it wrote one,
    else the raw message, else the container's exit reason and code)."""
    cond = _cond(job, "Failed") or {}
    parts = []
    reason = cond.get("reason") or "Failed"
    cmsg = (cond.get("message") or "").strip()
    parts.append(f"{reason}: {cmsg}" if cmsg else reason)
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if failed:
        last = max(failed, key=_pod_finished)
        text = termination_message(last)
        detail = None
        if text:
            summary = parse_summary(text)
            if summary is not None and summary.get("error"):
                detail = str(summary["error"])
            else:
                detail = text
        else:
            for term in _terminated(last):
                if term.get("exitCode") not in (None, 0):
                    detail = f"{term.get('reason') or 'Error'} (exit code {term.get('exitCode')})"
                    break
            if detail is None:
                st = last.get("status") or {}
                if st.get("reason") or st.get("message"):
                    detail = " ".join(x for x in (st.get("reason"), st.get("message")) if x)
        if detail:
            parts.append(f"last pod {last['metadata']['name']}: {detail}")
    # redacted before it is clipped (a clip could cut a token's tail off its recognisable head):
    # the pod's last words may quote a URL with credentials or a token (sheepdog.redaction)
    return stuck_mod.clip(redact("; ".join(parts)), MAX_MESSAGE)


def outcome_pods(state: str, pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods whose outcome a finished Job's record holds: its succeeded pods (every index),
    or the last failed pod (the one failure_message quotes)."""
    if state == "succeeded":
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    return [max(failed, key=_pod_finished)] if failed else []


# ---------------------------------------------------------------------------------------------
# Job -> StageObservation


def recorded_stage(status: Mapping[str, Any], iteration: int, stage: str) -> Mapping[str, Any]:
    for rec in (status or {}).get("iterations") or ():
        if rec.get("iteration") == iteration:
            return ((rec.get("stages") or {}).get(stage)) or {}
    return {}


def needs_pods(job: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """True when the Job's outcome is terminal and not yet in status (pods hold what is new:
    the success summary or the failure's termination message)."""
    ident = job_identity(job)
    if ident is None:
        return False
    state = job_state(job)
    if state == "running":
        return False
    rec = recorded_stage(status, *ident)
    if job_retry(job) < int(rec.get("retries") or 0):
        return False  # a retried stage's earlier Job: it no longer counts (recovery_policy)
    want = "Succeeded" if state == "succeeded" else "Failed"
    return rec.get("phase") != want


def observe_job(
    job: Mapping[str, Any],
    status: Mapping[str, Any],
    pods: Optional[Iterable[Mapping[str, Any]]] = None,
    events: Iterable[Mapping[str, Any]] = (),
    now: Optional[str] = None,
) -> Optional[StageObservation]:
    """One StageObservation for a stage Job. `pods` (the Job's pods) is only needed when
    needs_pods(job, status) or stuck.needs_pods(job); otherwise what status already records is
    reused. `events`: the Job's Events, when stuck.needs_events(job), and its pods' (pod_events);
    `now`: the reconcile's time (how long a pod has been ContainerCreating)."""
    ident = job_identity(job)
    if ident is None:
        return None
    iteration, stage = ident
    state = job_state(job)
    st = job.get("status") or {}
    rec = recorded_stage(status, iteration, stage)
    summary: Optional[dict[str, Any]] = None
    message = ""
    if state == "succeeded":
        if pods is not None:
            summary = job_summary(pods)
        else:
            summary = rec.get("summary")
        message = "" if summary is not None else "succeeded without a readable summary"
    elif state == "failed":
        if pods is not None:
            message = failure_message(job, pods)
        else:
            message = rec.get("message") or failure_message(job)
    elif st.get("failed"):
        message = f"retrying: {st.get('failed')} failed attempt(s)"
    attempts = job_attempts(job)
    # where it ran: read with the pods that tell its outcome, once (needs_pods), like gpu_seconds
    node, image_id = (provenance(outcome_pods(state, pods)) if state != "running" and pods is not None
                      else (None, None))
    stuck = None
    if state == "running":
        # never below what status already records (a Job's counters can lag for a moment)
        attempts = max(attempts, int(rec.get("attempts") or 0))
        stuck = stuck_mod.job_stuck(job, list(pods or ()), events, now)
    return StageObservation(
        iteration=iteration,
        stage=stage,
        state=state,
        attempts=attempts,
        summary=summary,
        message=message,
        started_at=st.get("startTime") or (job.get("metadata") or {}).get("creationTimestamp"),
        finished_at=job_finished_at(job),
        # counted once, when the finished Job's pods are read (needs_pods)
        gpu_seconds=(job_gpu_seconds(job, pods, st.get("startTime"), job_finished_at(job))
                     if state != "running" and pods is not None else None),
        stuck_reason=str(stuck.reason) if stuck else "",
        stuck_message=redact(stuck.message) if stuck else "",
        stuck_since=stuck.since if stuck else None,
        suspended=stuck_mod.suspended(job),
        queued=stuck_mod.queued(job),
        retry=job_retry(job),
        node=node,
        image_id=image_id,
    )


def observe(
    jobs: Iterable[Mapping[str, Any]],
    status: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]] = (),
    events: Optional[Mapping[str, list[Mapping[str, Any]]]] = None,
    now: Optional[str] = None,
) -> list[StageObservation]:
    """All stage observations of one run. `pods`: the pods of the Jobs for which needs_pods()
    or stuck.needs_pods(); `events`: Job name -> its Events, for those that stuck.needs_events()."""
    pods = list(pods)
    out = []
    for job in jobs:
        name = job["metadata"]["name"]
        read = needs_pods(job, status) or stuck_mod.needs_pods(job)
        job_pods = pods_of_job(pods, name) if read else None
        obs = observe_job(job, status, job_pods, (events or {}).get(name, ()), now)
        if obs is not None:
            out.append(obs)
    out.sort(key=lambda o: (o.iteration, o.stage))
    return out
