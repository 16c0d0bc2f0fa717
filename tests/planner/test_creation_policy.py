"""creation_policy: which Job-creation errors are permanent, and what a held start looks like."""

from __future__ import annotations

from sheepdog.planner import plan
from sheepdog.planner.creation_policy import CreateError, hold, permanent, reason_of, rejected
from tests.planner.simulate import LAYOUT, RUN, make_spec


def test_permanent_and_transient_errors():
    assert permanent(CreateError(422, 'Job.batch "x" is invalid: spec...'))
    assert permanent(CreateError(400, "bad request"))
    assert permanent(CreateError(403, 'admission webhook "deny.example" denied the request'))
    assert not permanent(CreateError(403, 'jobs.batch "x" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1'))
    for status in (0, 404, 429, 500, 503):
        assert not permanent(CreateError(status, "try later"))
    assert permanent(CreateError(409, "not ours", foreign=True))
    assert not permanent(CreateError(409, "a deleted run's Job, going away"))
    assert reason_of(CreateError(422, "")) == "JobRejected"
    assert reason_of(CreateError(500, "")) == "JobCreateFailed"
    assert reason_of(CreateError(409, "", foreign=True)) == "JobConflict"


def test_a_rejected_job_fails_the_run_with_the_api_servers_message():
    spec = make_spec()
    p0 = plan(RUN, spec, None, [], LAYOUT, "2026-01-01T00:00:00Z", 1)
    (a,) = p0.actions
    err = CreateError(422, 'Job.batch "demo-i1-train" is invalid: spec.template.spec.containers[0].resources')
    p = plan(RUN, spec, p0.status, [rejected(a.iteration, a.stage, err, a.name)], LAYOUT, "2026-01-01T00:00:01Z", 1)
    assert (p.status.phase, p.status.reason) == ("Failed", "StageFailed") and p.done and p.actions == ()
    assert "JobRejected" in p.status.message and "is invalid" in p.status.message and "(422)" in p.status.message


def test_a_held_start_keeps_the_run_running_with_the_reason_and_warns_once():
    spec = make_spec()
    p0 = plan(RUN, spec, None, [], LAYOUT, "2026-01-01T00:00:00Z", 1)
    (a,) = p0.actions
    h = hold(p0, a.iteration, a.stage, "JobCreateFailed", "creating Job x failed (500): webhook down",
             "2026-01-01T00:00:00Z")
    assert h.actions == () and (h.status.phase, h.status.reason) == ("Running", "JobCreateFailed")
    assert h.events[-1].type == "Warning" and h.events[-1].reason == "JobCreateFailed"
    stuck = next(c for c in h.status.conditions if c.type == "Stuck")
    assert (stuck.status, stuck.reason) == ("True", "JobCreateFailed")
    # the next reconcile holds it again with the same reason: no second Warning
    p1 = plan(RUN, spec, h.status, [], LAYOUT, "2026-01-01T00:00:05Z", 1)
    again = hold(p1, a.iteration, a.stage, "JobCreateFailed", "creating Job x failed (500): webhook down",
                 "2026-01-01T00:00:05Z", h.status)
    assert "JobCreateFailed" not in [e.reason for e in again.events]
    assert next(c for c in again.status.conditions if c.type == "Stuck").last_transition_time == "2026-01-01T00:00:00Z"
