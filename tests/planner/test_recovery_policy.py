"""recovery_policy: a retry request resumes a Failed run from the stage that failed, as a new
execution (`-r<K>`), keeping everything before it; it is acted on once per token; a request to
a run that has not failed is recorded and ignored; stale executions never count again."""

from __future__ import annotations

from sheepdog.planner import StageObservation, plan
from sheepdog.planner.recovery_policy import current
from tests.planner.simulate import LAYOUT, RUN, Simulation, make_spec, summary_for


def fail_train_of_2(i, stage):
    if (i, stage) == (2, "train"):
        return "failed", {"ok": False, "error": "CUDA out of memory"}, ""
    return "succeeded", summary_for(i, stage), ""


def failed_run():
    sim = Simulation(make_spec(iterations=2), outcome=fail_train_of_2)
    final = sim.run()
    assert (final.status.phase, final.status.iteration, final.status.stage) == ("Failed", 2, "train")
    return sim, final


def obs(it, stage, state, retry=0, **kw):
    if state == "succeeded":
        kw.setdefault("summary", summary_for(it, stage))
    return StageObservation(it, stage, state, attempts=kw.pop("attempts", 1), started_at="2026-01-02T00:00:00Z",
                            finished_at=None if state == "running" else "2026-01-02T01:00:00Z", retry=retry, **kw)


def test_a_retry_resumes_the_failed_stage_as_a_new_execution_keeping_history():
    sim, final = failed_run()
    before = final.status
    observed = list(sim.observed.values())
    p = plan(RUN, sim.spec, before, observed, LAYOUT, "2026-01-03T00:00:00Z", 1, retry="t1")
    # the failed stage starts again under a new name; nothing before it runs again
    assert [(a.iteration, a.stage, a.retry, a.name) for a in p.actions] == [(2, "train", 1, f"{RUN}-i2-train-r1")]
    assert p.status.phase == "Running" and not p.done and p.status.finished_at is None
    train = p.status.record(2).stages["train"]
    assert (train.phase, train.retries, train.job, train.attempts) == ("Pending", 1, f"{RUN}-i2-train-r1", 0)
    # history: earlier iterations and i2's stages before train are as they were
    assert p.status.record(1) == before.record(1)
    for stage in ("synthesize", "curate"):
        assert p.status.record(2).stages[stage] == before.record(2).stages[stage]
    last = p.status.last_retry
    assert (last.token, last.resumed, last.iteration, last.stage, last.job) == ("t1", True, 2, "train", f"{RUN}-i2-train")
    assert "CUDA out of memory" in last.message
    (event,) = [e for e in p.events if e.reason == "Retried"]
    assert event.type == "Normal" and "iteration 2 train runs again (retry 1" in event.message
    assert "CUDA out of memory" in event.message
    conditions = {c.type: c.status for c in p.status.conditions}
    assert conditions["Failed"] == "False" and conditions["Progressing"] == "True"


def test_the_failed_execution_is_stale_and_the_new_one_runs_to_success():
    sim, final = failed_run()
    observed = list(sim.observed.values())  # still holds the failed i2 train (retry 0)
    p = plan(RUN, sim.spec, final.status, observed, LAYOUT, "2026-01-03T00:00:00Z", 1, retry="t1")
    # the next reconcile: the failed Job is still there, the new one is running
    running = [*observed, obs(2, "train", "running", retry=1)]
    p2 = plan(RUN, sim.spec, p.status, running, LAYOUT, "2026-01-03T00:01:00Z", 1, retry="t1")
    train = p2.status.record(2).stages["train"]
    assert (p2.status.phase, train.phase, train.attempts) == ("Running", "Running", 1)  # attempts anew
    assert p2.actions == () and not [e for e in p2.events if e.reason in ("Retried", "StageFailed")]
    done = [*observed, obs(2, "train", "succeeded", retry=1)]
    p3 = plan(RUN, sim.spec, p2.status, done, LAYOUT, "2026-01-03T02:00:00Z", 1, retry="t1")
    assert (p3.status.phase, p3.status.reason) == ("Succeeded", "Completed") and p3.done  # the last stage
    assert p3.status.record(2).stages["train"].phase == "Succeeded"
    assert p3.status.record(2).model  # the retried train's figures reach the iteration record


def test_a_token_is_acted_on_once_and_a_new_token_retries_again():
    sim, final = failed_run()
    observed = list(sim.observed.values())
    p = plan(RUN, sim.spec, final.status, observed, LAYOUT, "2026-01-03T00:00:00Z", 1, retry="t1")
    failed_again = [*observed, obs(2, "train", "failed", retry=1, message="OOM again", attempts=3)]
    p2 = plan(RUN, sim.spec, p.status, failed_again, LAYOUT, "2026-01-03T01:00:00Z", 1, retry="t1")
    assert p2.status.phase == "Failed" and "OOM again" in p2.status.message
    # the same token again (another reconcile, a restart): final, nothing re-run
    p3 = plan(RUN, sim.spec, p2.status, failed_again, LAYOUT, "2026-01-03T01:01:00Z", 1, retry="t1")
    assert p3.done and p3.actions == () and p3.events == ()
    # a new token: retry 2
    p4 = plan(RUN, sim.spec, p3.status, failed_again, LAYOUT, "2026-01-03T01:02:00Z", 1, retry="t2")
    assert [(a.stage, a.retry) for a in p4.actions] == [("train", 2)]
    assert p4.status.record(2).stages["train"].job == f"{RUN}-i2-train-r2"


def test_a_retry_of_a_run_that_has_not_failed_is_recorded_and_ignored():
    spec = make_spec(iterations=1)
    first = plan(RUN, spec, None, [], LAYOUT, "2026-01-01T00:00:00Z", 1)
    running = [obs(1, "synthesize", "running")]
    p = plan(RUN, spec, first.status, running, LAYOUT, "2026-01-01T00:01:00Z", 1, retry="early")
    assert p.status.phase == "Running" and p.actions == ()
    assert (p.status.last_retry.token, p.status.last_retry.resumed) == ("early", False)
    assert [(e.type, e.reason) for e in p.events] == [("Normal", "RetryIgnored")]
    assert "not Failed" in p.events[0].message
    # that old token does not retry a failure that comes later
    failed = [obs(1, "synthesize", "failed", message="boom")]
    p2 = plan(RUN, spec, p.status, failed, LAYOUT, "2026-01-01T00:02:00Z", 1, retry="early")
    assert p2.status.phase == "Failed" and p2.done


def test_a_retry_keeps_the_cost_of_the_failed_execution():
    spec = make_spec(iterations=1)
    first = plan(RUN, spec, None, [], LAYOUT, "2026-01-01T00:00:00Z", 1)
    failed = [obs(1, "synthesize", "failed", message="boom", gpu_seconds=100.0)]
    f = plan(RUN, spec, first.status, failed, LAYOUT, "2026-01-01T01:00:00Z", 1)
    assert f.status.gpu_seconds == 100.0
    r = plan(RUN, spec, f.status, failed, LAYOUT, "2026-01-01T02:00:00Z", 1, retry="t")
    assert r.status.gpu_seconds == 100.0  # history: what the failed Job cost stays counted
    done = [*failed, obs(1, "synthesize", "succeeded", retry=1, gpu_seconds=30.0)]
    d = plan(RUN, spec, r.status, done, LAYOUT, "2026-01-01T03:00:00Z", 1, retry="t")
    rec = d.status.record(1).stages["synthesize"]
    assert (rec.gpu_seconds, rec.earlier_gpu_seconds, d.status.gpu_seconds) == (130.0, 100.0, 130.0)


def test_a_retry_after_a_pending_timeout_suspends_nothing_old_and_starts_anew():
    spec = make_spec(iterations=1, stages={"synthesize": {"pendingTimeout": "1m"}})
    first = plan(RUN, spec, None, [], LAYOUT, "2026-01-01T00:00:00Z", 1)
    pull = [obs(1, "synthesize", "running", stuck_reason="ImagePullFailing", stuck_message="pod p: ErrImagePull",
                stuck_since="2026-01-01T00:00:00Z")]
    f = plan(RUN, spec, first.status, pull, LAYOUT, "2026-01-01T00:05:00Z", 1)
    assert f.status.phase == "Failed" and "pendingTimeout 1m" in f.status.message
    # the image fixed, retried: the old suspended Job is stale, the new one is created
    r = plan(RUN, spec, f.status, pull, LAYOUT, "2026-01-01T01:00:00Z", 1, retry="fixed")
    assert [a.name for a in r.actions] == [f"{RUN}-i1-synthesize-r1"] and r.job_changes == ()
    assert r.status.phase == "Running"


def test_a_failed_export_is_retried_as_a_new_export_execution():
    spec = make_spec(iterations=1, export={"to": "s3://bucket/models"})
    sim = Simulation(spec)
    for _ in range(20):
        p = sim.plan_once()
        if p.actions and p.actions[0].stage == "export":
            break
        sim.step()
    (export,) = p.actions
    sim.observed[(export.iteration, "export")] = obs(export.iteration, "export", "failed", message="403 Forbidden")
    f = sim.plan_once()
    assert (f.status.phase, f.status.reason) == ("Failed", "ExportFailed")
    r = plan(RUN, spec, f.status, list(sim.observed.values()), LAYOUT, "2026-01-04T00:00:00Z", 1, retry="t")
    assert [(a.stage, a.name) for a in r.actions] == [("export", f"{RUN}-i{export.iteration}-export-r1")]
    assert r.status.phase == "Running"


def test_current_keeps_the_latest_retry_of_each_stage():
    sim, final = failed_run()
    old, new = obs(2, "train", "failed"), obs(2, "train", "running", retry=1)
    assert current([old, new], final.status) == [new]
    assert current([new, old], final.status) == [new]
    # a status that recorded the retry drops the old execution even when the new one is not seen
    p = plan(RUN, sim.spec, final.status, list(sim.observed.values()), LAYOUT, "2026-01-03T00:00:00Z", 1, retry="t")
    assert all(o.key != (2, "train") for o in current([old], p.status))
