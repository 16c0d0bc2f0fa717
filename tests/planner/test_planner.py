"""plan(): the I-SHEEP loop driven by simulated observations until the run is done."""

from __future__ import annotations

import pytest

from sheepdog.api.status import RunStatus
from sheepdog.planner import StageObservation, plan, plan_invalid_spec
from tests.planner.simulate import LAYOUT, RUN, Simulation, make_spec, summary_for

D = LAYOUT.run_dir  # /data/runs/demo
ALL = ("synthesize", "curate", "train")


def stages_in_order(iterations: int, stages=ALL) -> list[tuple[int, str]]:
    return [(i, s) for i in range(1, iterations + 1) for s in stages]


# --- every strategy over 3 iterations, exact lineage --------------------------------------------


def test_one_base_trains_the_base_on_each_iterations_data_generated_by_the_last_model():
    sim = Simulation(make_spec())
    final = sim.run()
    assert final.done and final.status.phase == "Succeeded" and final.status.reason == "Completed"
    assert sim.executed == stages_in_order(3)
    gen = {i: c.generator_model for i, c in sim.configs("synthesize").items()}
    assert gen == {1: "/data/models/base", 2: f"{D}/i1/model", 3: f"{D}/i2/model"}
    train = sim.configs("train")
    assert {i: c.base_model for i, c in train.items()} == {i: "/data/models/base" for i in (1, 2, 3)}
    assert {i: c.train_data for i, c in train.items()} == {i: [f"{D}/i{i}/curate/kept.jsonl"] for i in (1, 2, 3)}
    assert {i: c.model_out for i, c in train.items()} == {i: f"{D}/i{i}/model" for i in (1, 2, 3)}
    assert {c.data_size for c in train.values()} == {10000}
    records = final.status.iterations
    assert [(r.generator_model, r.base_model, r.model) for r in records] == [
        ("models/base", "models/base", "runs/demo/i1/model"),
        ("runs/demo/i1/model", "models/base", "runs/demo/i2/model"),
        ("runs/demo/i2/model", "models/base", "runs/demo/i3/model"),
    ]
    assert final.status.best_iteration == 3 and final.status.best_model == "runs/demo/i3/model"
    # no stopping metric compared the iterations: the model is the last one, never called "best"
    assert final.status.best_by is None
    assert final.status.message == "3 iterations finished; last iteration 3"


def test_one_last_trains_the_last_model():
    sim = Simulation(make_spec(training={"strategy": "one_last"}))
    final = sim.run()
    assert final.status.reason == "Completed" and sim.executed == stages_in_order(3)
    train = sim.configs("train")
    assert {i: c.base_model for i, c in train.items()} == {
        1: "/data/models/base", 2: f"{D}/i1/model", 3: f"{D}/i2/model"}
    assert {i: c.generator_model for i, c in sim.configs("synthesize").items()} == {
        1: "/data/models/base", 2: f"{D}/i1/model", 3: f"{D}/i2/model"}
    assert {i: c.train_data for i, c in train.items()} == {i: [f"{D}/i{i}/curate/kept.jsonl"] for i in (1, 2, 3)}
    assert [r.base_model for r in final.status.iterations] == ["models/base", "runs/demo/i1/model", "runs/demo/i2/model"]


def test_total_base_trains_the_base_on_all_data_so_far():
    sim = Simulation(make_spec(training={"strategy": "total_base"}))
    final = sim.run()
    assert final.status.reason == "Completed" and sim.executed == stages_in_order(3)
    train = sim.configs("train")
    assert {i: c.base_model for i, c in train.items()} == {i: "/data/models/base" for i in (1, 2, 3)}
    assert {i: c.train_data for i, c in train.items()} == {
        1: [f"{D}/i1/curate/kept.jsonl"],
        2: [f"{D}/i1/curate/kept.jsonl", f"{D}/i2/curate/kept.jsonl"],
        3: [f"{D}/i1/curate/kept.jsonl", f"{D}/i2/curate/kept.jsonl", f"{D}/i3/curate/kept.jsonl"],
    }
    assert {i: c.generator_model for i, c in sim.configs("synthesize").items()} == {
        1: "/data/models/base", 2: f"{D}/i1/model", 3: f"{D}/i2/model"}


def test_direct_is_one_iteration_of_iterations_times_data_size_from_the_base():
    sim = Simulation(make_spec(training={"strategy": "direct"}, synthesis={"dataSize": 100}))
    final = sim.run()
    assert final.status.reason == "Completed"
    assert sim.executed == stages_in_order(1)
    for stage in ALL:
        config = sim.configs(stage)[1]
        assert config.data_size == 300
        assert config.generator_model == config.base_model == "/data/models/base"
    assert sim.configs("train")[1].train_data == [f"{D}/i1/curate/kept.jsonl"]
    assert [r.iteration for r in final.status.iterations] == [1]
    assert final.status.best_iteration == 1


def test_evaluate_runs_after_train_when_enabled_and_m0_first():
    sim = Simulation(make_spec(evaluation={"enabled": True}, iterations=2), metrics={0: 0.05})
    final = sim.run()
    assert sim.executed == [(0, "evaluate")] + stages_in_order(2, ALL + ("evaluate",))
    assert [r.evaluation for r in final.status.iterations] == [
        {"ifeval-smoke.promptStrict": 0.05}, {"ifeval-smoke.promptStrict": 0.1}, {"ifeval-smoke.promptStrict": 0.2}]
    assert [r.evaluation_gain for r in final.status.iterations] == [
        None, {"ifeval-smoke.promptStrict": 0.05}, {"ifeval-smoke.promptStrict": 0.15}]


def test_m0_is_evaluated_once_as_iteration_0_on_the_base_model():
    sim = Simulation(make_spec(evaluation={"enabled": True}, iterations=1))
    first = sim.step()
    [action] = first.actions
    assert (action.name, action.iteration, action.stage) == ("demo-i0-evaluate", 0, "evaluate")
    assert action.config.model_out == "/data/models/base"
    assert action.config.out_dir == f"{D}/i0/evaluate"
    assert (first.status.iteration, first.status.stage) == (0, "evaluate")
    final = sim.run()
    assert sim.executed.count((0, "evaluate")) == 1 and sim.executed[1] == (1, "synthesize")
    # iteration 1 generates with M_0 as before: the baseline changes no lineage
    assert sim.configs("synthesize")[1].generator_model == "/data/models/base"
    wire = final.status.to_wire()["iterations"][0]
    assert {k for k in wire if k not in ("stages", "startedAt", "finishedAt", "gpuSeconds")} == {
        "iteration", "model", "evaluation"}
    assert (wire["iteration"], wire["model"]) == (0, "models/base")
    assert wire["stages"]["evaluate"]["job"] == "demo-i0-evaluate"
    assert final.status.best_iteration == 1


def test_without_evaluation_there_is_no_iteration_0():
    final = Simulation(make_spec(iterations=1)).run()
    assert [r.iteration for r in final.status.iterations] == [1]


def test_evaluation_switched_on_after_the_start_evaluates_nothing_past():
    sim = Simulation(make_spec(iterations=2))
    sim.step()
    sim.spec, sim.generation = make_spec(iterations=2, evaluation={"enabled": True}), 2
    final = sim.run()
    assert (0, "evaluate") not in sim.executed and (1, "evaluate") in sim.executed
    assert all(r.evaluation_gain is None for r in final.status.iterations)


def test_a_failed_m0_evaluation_fails_the_run():
    def outcome(i, stage):
        return ("failed", None, "judge unreachable") if i == 0 else ("succeeded", summary_for(i, stage), "")

    final = Simulation(make_spec(evaluation={"enabled": True}), outcome=outcome).run()
    assert (final.status.phase, final.status.stage, final.status.iteration) == ("Failed", "evaluate", 0)
    assert "iteration 0 evaluate failed" in final.status.message


# --- what the status records ------------------------------------------------------------------


def test_records_carry_every_figure_and_times():
    sim = Simulation(make_spec(iterations=1, evaluation={"enabled": True}))
    final = sim.run()
    [m0, r] = final.status.iterations
    assert m0.iteration == 0 and r.evaluation_gain == {"ifeval-smoke.promptStrict": 0.1}
    assert (r.generated, r.assessed, r.parse_failures, r.kept, r.keep_rate) == (100, 90, 1, 50, 0.5)
    assert r.mean_quality == pytest.approx(7.1) and r.mean_following == pytest.approx(6.1)
    assert r.train_loss == 2.0 and r.evaluation == {"ifeval-smoke.promptStrict": 0.1}
    assert r.started_at is not None and r.finished_at is not None and r.started_at < r.finished_at
    assert set(r.stages) == {"synthesize", "curate", "train", "evaluate"}
    assert all(s.phase == "Succeeded" and s.attempts == 1 for s in r.stages.values())
    assert r.stages["curate"].job == "demo-i1-curate"
    # the stage record keeps the rest of the summary, not a second copy of the figures
    assert r.stages["curate"].summary["dropped"] == {"score": 40} and "kept" not in r.stages["curate"].summary
    wire = final.status.to_wire()["iterations"][1]
    for key in ("generated", "assessed", "parseFailures", "kept", "keepRate", "meanQuality",
                "meanFollowing", "trainLoss", "evaluation", "evaluationGain", "generatorModel", "baseModel", "model",
                "startedAt", "finishedAt", "stages"):
        assert key in wire
    assert final.status.started_at and final.status.finished_at


def test_one_stage_at_a_time_and_messages_while_running():
    sim = Simulation(make_spec(iterations=1))
    first = sim.step()
    assert [a.name for a in first.actions] == ["demo-i1-synthesize"]
    assert (first.status.phase, first.status.reason, first.status.stage) == ("Running", "StageStarting", "synthesize")
    running = sim.plan_once()  # synthesize observed running
    assert running.actions == ()
    assert (running.status.reason, running.status.message) == ("StageRunning", "iteration 1: synthesize running")
    assert running.status.iterations[0].stages["synthesize"].phase == "Running"


def test_a_succeeded_stage_is_recorded_and_announced_exactly_once():
    sim = Simulation(make_spec(iterations=1))
    sim.step()
    sim.step()  # synthesize runs, then finishes
    after = sim.plan_once()
    assert after.status.iterations[0].generated == 100
    assert [e.reason for e in after.events] == ["StageSucceeded", "StageStarting"]
    assert after.events[0].message.startswith("iteration 1 synthesize succeeded: generated 100, assessed 90")
    # the same observation again (an executor re-lists) changes nothing and says nothing
    tampered = dict(sim.observed)
    tampered[(1, "synthesize")] = StageObservation(1, "synthesize", "succeeded", summary={"generated": 7})
    again = plan(RUN, sim.spec, after.status, list(tampered.values()), LAYOUT, "2026-01-01T01:00:00Z", 1)
    assert again.events == ()
    assert again.status.iterations[0].generated == 100
    assert again.actions == after.actions


# --- idempotence and restarts ---------------------------------------------------------------


def test_planning_twice_on_the_same_inputs_gives_the_same_plan_and_a_fixed_point():
    sim = Simulation(make_spec(evaluation={"enabled": True}))
    for _ in range(9):
        sim.step()
    status, observed = sim.status, list(sim.observed.values())
    a = plan(RUN, sim.spec, status, observed, LAYOUT, "2026-01-02T00:00:00Z", 1)
    b = plan(RUN, sim.spec, status, observed, LAYOUT, "2026-01-02T00:00:00Z", 1)
    assert a == b
    # writing a's status and planning again: same status, same actions, no new events
    c = plan(RUN, sim.spec, a.status, observed, LAYOUT, "2026-01-02T00:05:00Z", 1)
    assert c.status == a.status and c.actions == a.actions and c.events == ()


def test_a_requested_stage_not_yet_seen_is_requested_again_under_the_same_name():
    spec = make_spec()
    first = plan(RUN, spec, None, [], LAYOUT, "2026-01-01T00:00:00Z", 1)
    second = plan(RUN, spec, first.status, [], LAYOUT, "2026-01-01T00:00:10Z", 1)
    assert [a.name for a in second.actions] == [a.name for a in first.actions] == ["demo-i1-synthesize"]
    assert second.events == () and second.status == first.status


def test_restart_mid_run_from_status_and_observations_continues_without_repeating():
    sim = Simulation(make_spec())
    for _ in range(8):  # into iteration 2
        sim.step()
    done_before = [k for k, o in sim.observed.items() if o.state == "succeeded"]
    assert (1, "train") in done_before
    # a new executor process: same status and observations, fresh simulation object
    resumed = Simulation(sim.spec, status=sim.status, observed=dict(sim.observed), clock=sim.clock)
    final = resumed.run()
    assert final.status.reason == "Completed"
    assert not set(resumed.executed) & set(done_before)
    assert sorted(set(sim.executed) | set(resumed.executed)) == sorted(stages_in_order(3))


def test_restart_with_the_status_lost_rebuilds_records_from_observations():
    sim = Simulation(make_spec())
    for _ in range(8):
        sim.step()
    rebuilt = Simulation(sim.spec, status=None, observed=dict(sim.observed), clock=sim.clock)
    final = rebuilt.run()
    assert final.status.reason == "Completed"
    assert not set(rebuilt.executed) & set(k for k, o in sim.observed.items() if o.state == "succeeded")
    assert [r.generated for r in final.status.iterations] == [100, 200, 300]
    assert final.status.iterations[0].finished_at is not None


def test_a_running_stage_whose_execution_vanished_is_started_again():
    sim = Simulation(make_spec(iterations=1))
    sim.step()
    running = sim.plan_once()
    assert running.status.iterations[0].stages["synthesize"].phase == "Running"
    vanished = plan(RUN, sim.spec, running.status, [], LAYOUT, "2026-01-01T02:00:00Z", 1)
    assert [a.name for a in vanished.actions] == ["demo-i1-synthesize"]
    assert [e.reason for e in vanished.events] == ["StageRestarted"]
    assert vanished.status.iterations[0].stages["synthesize"].phase == "Pending"


# --- failure and retries ------------------------------------------------------------------------


def test_a_failed_stage_fails_the_run_naming_iteration_stage_and_message():
    def outcome(i, stage):
        if (i, stage) == (2, "curate"):
            return "failed", {"ok": False, "error": "kept.jsonl: disk full"}, ""
        return "succeeded", summary_for(i, stage), ""

    sim = Simulation(make_spec(), outcome=outcome)
    final = sim.run()
    assert final.done
    s = final.status
    assert (s.phase, s.reason, s.iteration, s.stage) == ("Failed", "StageFailed", 2, "curate")
    assert s.message == "iteration 2 curate failed after 1 attempt: kept.jsonl: disk full"
    assert sim.executed == stages_in_order(1) + [(2, "synthesize"), (2, "curate")]
    assert {c.type: c.status for c in s.conditions} == {
        "Ready": "False", "Progressing": "False", "Failed": "True", "Suspended": "False", "Stuck": "False"}
    warnings = [e for e in sim.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["StageFailed"]
    assert s.best_iteration == 1  # what finished is still usable
    # Failed is final: planning again starts nothing, even with a spec edit
    again = plan(RUN, make_spec(iterations=5), s, list(sim.observed.values()), LAYOUT, "2026-01-03T00:00:00Z", 2)
    assert again.done and again.actions == () and again.status.phase == "Failed"
    assert again.status.observed_generation == 2 and again.events == ()


def test_retries_show_as_attempts_and_a_warning_then_success():
    spec = make_spec(iterations=1, retries=2)
    first = plan(RUN, spec, None, [], LAYOUT, "t1", 1)
    r1 = [StageObservation(1, "synthesize", "running", attempts=1, started_at="t1")]
    s1 = plan(RUN, spec, first.status, r1, LAYOUT, "t2", 1)
    r2 = [StageObservation(1, "synthesize", "running", attempts=2, started_at="t1", message="OOMKilled")]
    s2 = plan(RUN, spec, s1.status, r2, LAYOUT, "t3", 1)
    assert [(e.type, e.reason) for e in s2.events] == [("Warning", "StageRetrying")]
    assert s2.events[0].message == "iteration 1 synthesize: attempt 2 of 3 (OOMKilled)"
    assert s2.status.message == "iteration 1: synthesize running (attempt 2 of 3)"
    done = [StageObservation(1, "synthesize", "succeeded", attempts=2, summary=summary_for(1, "synthesize"),
                             started_at="t1", finished_at="t4")]
    s3 = plan(RUN, spec, s2.status, done, LAYOUT, "t4", 1)
    assert s3.status.iterations[0].stages["synthesize"].attempts == 2
    assert [a.stage for a in s3.actions] == ["curate"]


def test_failed_message_falls_back_to_the_summary_error():
    spec = make_spec(iterations=1)
    first = plan(RUN, spec, None, [], LAYOUT, "t1", 1)
    failed = [StageObservation(1, "synthesize", "failed", attempts=3, summary={"ok": False, "error": "CUDA OOM"})]
    p = plan(RUN, spec, first.status, failed, LAYOUT, "t2", 1)
    assert p.status.message == "iteration 1 synthesize failed after 3 attempts: CUDA OOM"
    assert p.done


# --- missing summary ----------------------------------------------------------------------------


@pytest.mark.parametrize("summary", [None, {}])
def test_a_missing_summary_records_unknown_figures_and_warns_without_failing(summary):
    def outcome(i, stage):
        if stage == "synthesize" and i == 1:
            return "succeeded", summary, ""
        return "succeeded", summary_for(i, stage), ""

    sim = Simulation(make_spec(iterations=1), outcome=outcome)
    final = sim.run()
    assert final.status.reason == "Completed"
    r = final.status.iterations[0]
    assert (r.generated, r.assessed, r.mean_quality) == (None, None, None)
    assert r.kept == 50  # later stages still report
    assert sim.reasons().count("SummaryMissing") == 1
    assert r.stages["synthesize"].phase == "Succeeded"


def test_a_train_without_summary_still_names_its_model():
    def outcome(i, stage):
        return ("succeeded", None if stage == "train" else summary_for(i, stage), "")

    final = Simulation(make_spec(iterations=2), outcome=outcome).run()
    assert [r.model for r in final.status.iterations] == ["runs/demo/i1/model", "runs/demo/i2/model"]
    assert [r.train_loss for r in final.status.iterations] == [None, None]
    assert final.status.best_model == "runs/demo/i2/model"


# --- suspend / resume ---------------------------------------------------------------------------


def test_suspend_lets_the_running_stage_finish_then_holds_and_resume_continues():
    sim = Simulation(make_spec(iterations=1))
    sim.step()  # synthesize requested, then observed running
    sim.spec = make_spec(iterations=1, suspend=True)
    sim.generation = 2
    suspending = sim.step()
    assert (suspending.status.phase, suspending.status.reason) == ("Running", "Suspending")
    assert suspending.actions == ()
    held = sim.step()  # synthesize finished: nothing new starts
    assert (held.status.phase, held.status.reason) == ("Suspended", "Suspended")
    assert held.status.message == "suspended before iteration 1 curate"
    assert held.actions == () and not held.done
    assert {c.type: c.status for c in held.status.conditions}["Suspended"] == "True"
    assert sim.plan_once().events == ()  # still suspended: no repeated event
    sim.spec = make_spec(iterations=1)
    sim.generation = 3
    resumed = sim.step()
    assert (resumed.status.phase, resumed.status.reason) == ("Running", "Resumed")
    assert [a.stage for a in resumed.actions] == ["curate"]
    assert "Resumed" in [e.reason for e in resumed.events]
    final = sim.run()
    assert final.status.reason == "Completed"
    assert sim.executed == stages_in_order(1)
    assert sim.reasons().count("Suspended") == 1


def test_suspended_from_creation_starts_nothing():
    p = plan(RUN, make_spec(suspend=True), None, [], LAYOUT, "t1", 1)
    assert p.actions == () and p.status.phase == "Suspended" and p.status.iterations == []
    assert p.status.message == "suspended before iteration 1 synthesize"


def test_suspend_while_a_request_is_unseen_holds_it_and_resume_requests_it_again():
    spec = make_spec()
    first = plan(RUN, spec, None, [], LAYOUT, "t1", 1)
    held = plan(RUN, make_spec(suspend=True), first.status, [], LAYOUT, "t2", 2)
    assert held.actions == () and held.status.phase == "Suspended"
    again = plan(RUN, spec, held.status, [], LAYOUT, "t3", 3)
    assert [a.name for a in again.actions] == ["demo-i1-synthesize"]


# --- stopping -----------------------------------------------------------------------------------


def stopping_spec(**stopping):
    return make_spec(iterations=5, evaluation={"enabled": True},
                     stopping={"metric": "ifeval-smoke.promptStrict"} | stopping)


def test_stopping_improving_runs_all_iterations_and_the_last_is_best():
    sim = Simulation(stopping_spec(), metrics={1: 0.30, 2: 0.33, 3: 0.36, 4: 0.40, 5: 0.41})
    final = sim.run()
    assert final.status.reason == "Completed" and final.status.iteration == 5
    assert final.status.best_iteration == 5 and final.status.best_model == "runs/demo/i5/model"


def test_stopping_flat_stops_after_patience_and_keeps_the_best():
    sim = Simulation(stopping_spec(patience=2), metrics={1: 0.30, 2: 0.35, 3: 0.35, 4: 0.35, 5: 0.5})
    final = sim.run()
    s = final.status
    assert (s.phase, s.reason, s.iteration) == ("Succeeded", "EarlyStopped", 4)
    assert s.best_iteration == 2 and s.best_model == "runs/demo/i2/model"
    assert s.message == ("stopped after iteration 4 of 5: ifeval-smoke.promptStrict has not improved by more than 0 "
                         "for 2 iterations; best iteration 2 (ifeval-smoke.promptStrict 0.35)")
    assert (5, "synthesize") not in sim.executed
    assert sim.reasons()[-1] == "EarlyStopped"


def test_stopping_falling_stops_at_once_with_patience_1():
    sim = Simulation(stopping_spec(), metrics={1: 0.40, 2: 0.38, 3: 0.50})
    final = sim.run()
    assert (final.status.reason, final.status.iteration, final.status.best_iteration) == ("EarlyStopped", 2, 1)


def test_stopping_min_delta_treats_small_gains_as_no_improvement():
    sim = Simulation(stopping_spec(minDelta=0.05), metrics={1: 0.30, 2: 0.32, 3: 0.9})
    final = sim.run()
    assert (final.status.reason, final.status.iteration, final.status.best_iteration) == ("EarlyStopped", 2, 1)


def test_stopping_compares_with_m0_and_m0_can_stay_the_best():
    sim = Simulation(stopping_spec(), metrics={0: 0.50, 1: 0.45, 2: 0.9})
    final = sim.run()
    s = final.status
    assert (s.reason, s.iteration, s.best_iteration, s.best_model) == ("EarlyStopped", 1, 0, "models/base")
    assert s.message.endswith("best iteration 0 (ifeval-smoke.promptStrict 0.5)")
    assert s.record(1).evaluation_gain == {"ifeval-smoke.promptStrict": -0.05}


def test_stopping_at_the_last_iteration_is_completed_not_early():
    sim = Simulation(stopping_spec(), metrics={1: 0.4, 2: 0.5, 3: 0.5, 4: 0.6, 5: 0.6})
    sim.spec = stopping_spec().model_copy(update={"iterations": 2})
    final = sim.run()
    assert final.status.reason == "Completed" and final.status.iteration == 2
    assert final.status.message == "2 iterations finished; best iteration 2 (ifeval-smoke.promptStrict 0.5)"
    assert final.status.best_by == "ifeval-smoke.promptStrict"


def test_a_missing_metric_warns_and_does_not_count():
    def outcome(i, stage):
        if stage == "evaluate":
            values = {0: {"ifeval-smoke.promptStrict": 0.1}, 1: {"ifeval-smoke.promptStrict": 0.3}, 2: {"other": 1.0},
                      3: {"ifeval-smoke.promptStrict": 0.2}}
            return "succeeded", {"ok": True, "evaluation": values[i]}, ""
        return "succeeded", summary_for(i, stage), ""

    sim = Simulation(stopping_spec(), outcome=outcome)
    final = sim.run()
    assert sim.reasons().count("MetricMissing") == 1
    assert (final.status.reason, final.status.iteration, final.status.best_iteration) == ("EarlyStopped", 3, 1)


# --- spec edits while running -------------------------------------------------------------------


def test_raising_iterations_mid_run_runs_more():
    sim = Simulation(make_spec(iterations=2))
    for _ in range(4):
        sim.step()
    sim.spec, sim.generation = make_spec(iterations=3), 2
    final = sim.run()
    assert final.status.reason == "Completed" and sim.executed == stages_in_order(3)
    assert "SpecChanged" in sim.reasons()


def test_lowering_iterations_below_the_current_one_finishes_the_current_iteration():
    sim = Simulation(make_spec(iterations=3))
    while (2, "curate") not in sim.observed:
        sim.step()
    sim.spec, sim.generation = make_spec(iterations=1), 2
    final = sim.run()
    assert final.status.reason == "Completed" and final.status.iteration == 2
    assert sim.executed == stages_in_order(2)
    assert final.status.best_iteration == 2


def test_raising_iterations_after_success_extends_the_run():
    sim = Simulation(make_spec(iterations=1))
    assert sim.run().status.reason == "Completed"
    sim.spec, sim.generation = make_spec(iterations=2), 2
    final = sim.run()
    assert final.status.reason == "Completed" and sim.executed == stages_in_order(2)
    assert sim.reasons().count("Completed") == 2


def test_edits_apply_from_the_next_stage_that_starts():
    sim = Simulation(make_spec(iterations=2))
    sim.step()  # synthesize of iteration 1 starts with threshold 8
    sim.spec, sim.generation = make_spec(iterations=2, filter={"threshold": 5}), 2
    sim.run()
    assert sim.configs("synthesize")[1].spec.filter.threshold == 8
    assert sim.configs("curate")[1].spec.filter.threshold == 5


def test_evaluation_switched_off_mid_iteration_skips_evaluate_from_now_on():
    sim = Simulation(make_spec(iterations=2, evaluation={"enabled": True}))
    while (1, "evaluate") not in sim.observed:
        sim.step()
    sim.spec, sim.generation = make_spec(iterations=2), 2
    final = sim.run()
    assert sim.executed == [(0, "evaluate")] + stages_in_order(1, ALL + ("evaluate",)) + stages_in_order(2)[3:]
    assert final.status.reason == "Completed"


def test_observed_generation_is_written_and_conditions_keep_their_transition_times():
    sim = Simulation(make_spec(iterations=1))
    first = sim.step()
    assert first.status.observed_generation == 1
    assert all(c.observed_generation == 1 for c in first.status.conditions)
    since = {c.type: c.last_transition_time for c in first.status.conditions}
    sim.generation = 4
    later = sim.step()
    assert later.status.observed_generation == 4
    assert {c.type: c.last_transition_time for c in later.status.conditions} == since  # still Running
    final = sim.run()
    progressing = {c.type: c for c in final.status.conditions}["Progressing"]
    assert progressing.status == "False" and progressing.last_transition_time != since["Progressing"]


def test_an_invalid_spec_holds_the_run_without_failing_it():
    sim = Simulation(make_spec(iterations=1))
    sim.step()
    p = plan_invalid_spec(sim.status, ["spec.filter.threshold: must be between 0 and 10 (got 12)"], "t9", 2)
    assert (p.status.phase, p.status.reason) == ("Running", "InvalidSpec")
    assert "threshold" in p.status.message and p.actions == () and not p.done
    assert [e.reason for e in p.events] == ["InvalidSpec"]
    assert plan_invalid_spec(p.status, ["spec.filter.threshold: must be between 0 and 10 (got 12)"], "t10", 2).events == ()
    fresh = plan_invalid_spec(None, ["spec.model.base: required"], "t1", 1)
    assert fresh.status.phase == "Pending" and fresh.status.reason == "InvalidSpec"
    recovered = plan(RUN, sim.spec, p.status, list(sim.observed.values()), LAYOUT, "t11", 3)
    assert recovered.status.reason in ("StageRunning", "StageStarting")


def test_observations_may_be_given_as_a_dict():
    spec = make_spec(iterations=1)
    first = plan(RUN, spec, RunStatus(), {}, LAYOUT, "t1", 1)
    obs = {(1, "synthesize"): StageObservation(1, "synthesize", "running")}
    assert plan(RUN, spec, first.status, obs, LAYOUT, "t2", 1).status.reason == "StageRunning"


def test_foreign_observations_are_ignored():
    spec = make_spec(iterations=1)
    first = plan(RUN, spec, None, [], LAYOUT, "t1", 1)
    odd = [StageObservation(1, "deploy", "succeeded"), StageObservation(0, "synthesize", "succeeded")]
    p = plan(RUN, spec, first.status, odd, LAYOUT, "t2", 1)
    assert p.status == first.status and p.events == ()
