"""stuck_policy: a stuck running stage is named (reason, message, Stuck condition, one Warning
per reason), fails after pendingTimeout when waiting cannot help, after capacityTimeout (default
never) when it waits for capacity, never while Kueue queues it; a run the user suspended is never
stuck; suspend_policy.job_change suspends and resumes the running Job."""

from __future__ import annotations

import pytest

from sheepdog.planner import plan
from sheepdog.planner.actions import StageObservation, SuspendStage
from sheepdog.planner.stuck_policy import duration_seconds
from sheepdog.planner.suspend_policy import job_change
from tests.planner.simulate import LAYOUT, RUN, make_spec

UNSCHED = "pod p: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def t(minutes: int) -> str:
    return f"2026-01-01T{minutes // 60:02d}:{minutes % 60:02d}:00Z"


def first_stage(spec):
    p = plan(RUN, spec, None, [], LAYOUT, t(0), 1)
    (action,) = p.actions
    return p, action.iteration, action.stage


def running(it, stage, reason="", message="", since=None, **kw):
    return StageObservation(it, stage, "running", attempts=1, started_at=t(0), stuck_reason=reason,
                            stuck_message=message, stuck_since=since, **kw)


def condition(p, type_):
    return next(c for c in p.status.conditions if c.type == type_)


def test_durations():
    assert [duration_seconds(d) for d in ("30m", "2h", "1h30m", "45s", "0")] == [1800, 7200, 5400, 45, 0]
    with pytest.raises(ValueError):
        duration_seconds("30 minutes")


def test_a_stuck_stage_is_named_once_per_reason_and_clears():
    spec = make_spec()
    p0, it, stage = first_stage(spec)
    p1 = plan(RUN, spec, p0.status, [running(it, stage, "Unschedulable", UNSCHED, t(0))], LAYOUT, t(1), 1)
    assert (p1.status.phase, p1.status.reason) == ("Running", "Unschedulable")
    assert UNSCHED in p1.status.message and "stuck" in p1.status.message
    assert [(e.type, e.reason) for e in p1.events] == [("Warning", "Unschedulable")]
    stuck = condition(p1, "Stuck")
    assert (stuck.status, stuck.reason, stuck.last_transition_time) == ("True", "Unschedulable", t(1))
    record = p1.status.iterations[-1].stages[stage]
    assert (record.stuck_reason, record.stuck_since) == ("Unschedulable", t(0))
    # still stuck (another message): no second event; the condition keeps its transition time
    p2 = plan(RUN, spec, p1.status, [running(it, stage, "Unschedulable", UNSCHED + "!", t(0))], LAYOUT, t(2), 1)
    assert p2.events == () and condition(p2, "Stuck").last_transition_time == t(1)
    # another reason: a new event
    p3 = plan(RUN, spec, p2.status, [running(it, stage, "ImagePullFailing", "pod p: ErrImagePull", t(0))],
              LAYOUT, t(3), 1)
    assert [e.reason for e in p3.events] == ["ImagePullFailing"]
    # the pods run: not stuck any more
    p4 = plan(RUN, spec, p3.status, [running(it, stage)], LAYOUT, t(4), 1)
    assert p4.status.reason == "StageRunning" and condition(p4, "Stuck").status == "False"
    assert p4.status.iterations[-1].stages[stage].stuck_reason is None


PULL = 'pod p: ImagePullBackOff: Back-off pulling image "registry.example/w:1"'


def test_pending_timeout_fails_the_stage_with_the_stuck_reason_and_suspends_its_job():
    p0, it, stage = first_stage(make_spec())
    spec = make_spec(stages={stage: {"pendingTimeout": "30m"}})
    obs = [running(it, stage, "ImagePullFailing", PULL, t(0))]
    within = plan(RUN, spec, p0.status, obs, LAYOUT, t(30), 1)
    assert within.status.phase == "Running"
    over = plan(RUN, spec, within.status, obs, LAYOUT, t(31), 1)
    assert (over.status.phase, over.status.reason) == ("Failed", "StageFailed")
    assert "pendingTimeout 30m" in over.status.message and "ImagePullFailing" in over.status.message
    assert PULL in over.status.message
    assert over.status.iterations[-1].stages[stage].phase == "Failed"
    assert over.job_changes == (SuspendStage(it, stage, True),) and over.done
    assert [(e.type, e.reason) for e in over.events] == [("Warning", "StageFailed")]


@pytest.mark.parametrize("reason", ["Unschedulable", "QuotaExceeded"])
def test_waiting_for_capacity_never_fails_by_default_only_after_a_capacity_timeout(reason):
    """A GPU node pool scaling up or a quota that frees later: the default pendingTimeout (30m)
    does not apply; the run stays Running and stuck (condition, reason) for days. Only a
    capacityTimeout the user sets fails it."""
    p0, it, stage = first_stage(make_spec())
    obs = [running(it, stage, reason, UNSCHED, t(0))]
    days = "2026-01-04T00:00:00Z"
    waiting = plan(RUN, make_spec(), p0.status, obs, LAYOUT, days, 1)
    assert (waiting.status.phase, waiting.status.reason) == ("Running", reason) and not waiting.done
    assert condition(waiting, "Stuck").status == "True" and waiting.job_changes == ()
    # a short pendingTimeout does not change that either: it is for what waiting cannot fix
    short = make_spec(stages={stage: {"pendingTimeout": "1m"}})
    assert plan(RUN, short, p0.status, obs, LAYOUT, days, 1).status.phase == "Running"
    limited = make_spec(stages={stage: {"capacityTimeout": "2h"}})
    assert plan(RUN, limited, p0.status, obs, LAYOUT, t(120), 1).status.phase == "Running"
    over = plan(RUN, limited, p0.status, obs, LAYOUT, t(121), 1)
    assert (over.status.phase, over.status.reason) == ("Failed", "StageFailed")
    assert f"capacityTimeout 2h: {reason}" in over.status.message
    assert over.job_changes == (SuspendStage(it, stage, True),)


def test_queueing_never_times_out_and_zero_disables_the_timeout():
    p0, it, stage = first_stage(make_spec())
    queued = [running(it, stage, "NotAdmitted", "Job j is suspended until Kueue admits it", t(0),
                      suspended=True, queued=True)]
    p = plan(RUN, make_spec(), p0.status, queued, LAYOUT, t(600), 1)
    assert (p.status.phase, p.status.reason) == ("Running", "NotAdmitted") and p.job_changes == ()
    # not even with a capacityTimeout: Kueue is the one to admit it
    p = plan(RUN, make_spec(stages={stage: {"capacityTimeout": "1m"}}), p0.status, queued, LAYOUT, t(600), 1)
    assert p.status.phase == "Running"
    never = make_spec(stages={stage: {"pendingTimeout": "0"}})
    p = plan(RUN, never, p0.status, [running(it, stage, "ImagePullFailing", PULL, t(0))], LAYOUT, t(600), 1)
    assert p.status.phase == "Running"


def test_a_suspended_run_is_never_stuck_and_its_running_job_is_suspended_then_resumed():
    p0, it, stage = first_stage(make_spec())
    suspend = make_spec(suspend=True)
    # asked to suspend while the stage runs (stuck or not): the Job is suspended, nothing is stuck
    s1 = plan(RUN, suspend, p0.status, [running(it, stage, "Unschedulable", UNSCHED, t(0))], LAYOUT, t(1), 1)
    assert (s1.status.phase, s1.status.reason) == ("Running", "Suspending")
    assert s1.job_changes == (SuspendStage(it, stage, True),) and condition(s1, "Stuck").status == "False"
    # seen suspended: the run is Suspended, however long it stays so (no timeout)
    s2 = plan(RUN, suspend, s1.status, [running(it, stage, suspended=True)], LAYOUT, t(500), 1)
    assert (s2.status.phase, s2.status.reason) == ("Suspended", "Suspended") and s2.job_changes == ()
    assert "GPUs freed" in s2.status.message and [e.reason for e in s2.events] == ["Suspended"]
    # resumed: the Job is unsuspended
    r = plan(RUN, make_spec(), s2.status, [running(it, stage, suspended=True)], LAYOUT, t(501), 1)
    assert r.job_changes == (SuspendStage(it, stage, False),) and "Resumed" in [e.reason for e in r.events]
    assert r.status.phase == "Running"


def test_job_change_leaves_a_queued_job_to_its_queue():
    spec = make_spec()
    assert job_change(spec, running(1, "train", suspended=True, queued=True)) is None
    assert job_change(spec, running(1, "train", suspended=True)) == SuspendStage(1, "train", False)
    assert job_change(make_spec(suspend=True), running(1, "train", queued=True)) == SuspendStage(1, "train", True)
    assert job_change(spec, running(1, "train")) is None
    assert job_change(make_spec(suspend=True), StageObservation(1, "train", "succeeded")) is None


def test_a_queued_job_is_resumed_once_when_its_run_is_resumed():
    """A queued Job suspended for the run (through its Kueue Workload) is resumed in the
    reconcile that lifts the suspend, and only then: later it waits for Kueue's admission."""
    spec = make_spec()
    assert job_change(spec, running(1, "train", suspended=True, queued=True), lifting=True) == \
        SuspendStage(1, "train", False)
    p0, it, stage = first_stage(spec)
    suspend = make_spec(suspend=True)
    s1 = plan(RUN, suspend, p0.status, [running(it, stage, queued=True)], LAYOUT, t(1), 1)
    assert s1.job_changes == (SuspendStage(it, stage, True),)
    s2 = plan(RUN, suspend, s1.status, [running(it, stage, suspended=True, queued=True)], LAYOUT, t(2), 1)
    assert (s2.status.phase, s2.job_changes) == ("Suspended", ())
    r = plan(RUN, spec, s2.status, [running(it, stage, suspended=True, queued=True)], LAYOUT, t(3), 1)
    assert r.job_changes == (SuspendStage(it, stage, False),) and r.status.phase == "Running"
    # the next reconcile: back in Kueue's queue, nothing more to do
    later = [running(it, stage, "NotAdmitted", "Job j is suspended until Kueue admits it", t(3),
                     suspended=True, queued=True)]
    again = plan(RUN, spec, r.status, later, LAYOUT, t(4), 1)
    assert again.job_changes == () and (again.status.phase, again.status.reason) == ("Running", "NotAdmitted")
    # waiting in Kueue's queue reads as queued, not stuck
    assert f"{stage} queued: NotAdmitted: Job j is suspended" in again.status.message, again.status.message
