"""stage_cache_policy: a stage's key holds its inputs' keys and exactly the settings it reads."""

from __future__ import annotations

import pytest

from sheepdog.planner.stage_cache_policy import (
    CacheEntry, CacheInputs, StageCache, lookup, reused_paths, stage_key,
)
from tests.planner.simulate import make_spec

INPUTS = CacheInputs(base_model="models/base", seed="sha256:abc")
STAGES = [(1, "synthesize"), (1, "curate"), (1, "train"), (1, "evaluate"),
          (2, "synthesize"), (2, "curate"), (2, "train"), (2, "evaluate")]


def keys(spec, inputs=INPUTS) -> dict[tuple[int, str], str]:
    return {(t, s): stage_key(spec, t, s, inputs) for t, s in STAGES}


def changed(a, b) -> set[tuple[int, str]]:
    return {k for k in a if a[k] != b[k]}


def test_keys_are_stable_and_distinct():
    spec = make_spec()
    assert keys(spec) == keys(make_spec())
    assert len(set(keys(spec).values())) == len(STAGES)
    assert all(len(k) == 64 for k in keys(spec).values())


def test_curate_threshold_leaves_synthesize_and_changes_curate_on():
    a = keys(make_spec(filter={"threshold": 5}))
    b = keys(make_spec(filter={"threshold": 8}))
    assert a[(1, "synthesize")] == b[(1, "synthesize")]
    # curate 1 and everything that descends from it (train 1 trains on its data; iteration 2's
    # generator is train 1's model)
    assert changed(a, b) == set(STAGES) - {(1, "synthesize")}


@pytest.mark.parametrize("section", [{"synthesis": {"temperature": 0.7}}, {"assessment": {"prompt": "simple"}},
                                     {"filter": {"rules": False}}, {"seed": {"examples_per_request": 3}}])
def test_a_synthesize_setting_changes_every_key(section):
    assert changed(keys(make_spec()), keys(make_spec(**section))) == set(STAGES)


def test_a_training_setting_leaves_iteration_one_data_stages():
    a, b = keys(make_spec()), keys(make_spec(training={"learning_rate": 1e-4}))
    assert changed(a, b) == set(STAGES) - {(1, "synthesize"), (1, "curate")}


def test_an_evaluation_setting_changes_evaluate_only():
    a = keys(make_spec(evaluation={"enabled": True, "suites": ["ifeval-smoke"]}))
    b = keys(make_spec(evaluation={"enabled": True, "suites": ["ifeval-smoke"], "limit": 5}))
    assert changed(a, b) == {(1, "evaluate"), (2, "evaluate")}


def test_what_no_stage_reads_changes_nothing():
    base = keys(make_spec())
    for other in (make_spec(iterations=7), make_spec(retries=9), make_spec(suspend=True),
                  make_spec(storage={"sub_path": "elsewhere", "keep_models": "last"}),
                  make_spec(stages={"synthesize": {"active_deadline_seconds": 5, "node_selector": {"a": "b"}}}),
                  make_spec(training={"report_to": ["tensorboard"]})):
        assert keys(other) == base


def test_inputs_change_every_key():
    base = keys(make_spec())
    assert changed(base, keys(make_spec(), CacheInputs("models/base", "sha256:other"))) == set(STAGES)
    assert changed(base, keys(make_spec(), CacheInputs("models/other", "sha256:abc"))) == set(STAGES)


def test_iterations_matter_for_direct_only():
    """direct generates iterations x dataSize at once, so iterations is a synthesize setting there."""
    one = stage_key(make_spec(iterations=1), 1, "synthesize", INPUTS)
    assert one == stage_key(make_spec(iterations=3), 1, "synthesize", INPUTS)
    direct = {"strategy": "direct"}
    assert stage_key(make_spec(iterations=1, training=direct), 1, "synthesize", INPUTS) != \
        stage_key(make_spec(iterations=3, training=direct), 1, "synthesize", INPUTS)


def test_strategy_follows_the_lineage():
    """Iteration 1 is the same in every strategy but direct (whose data size differs); from
    iteration 2 the generator (one_base) or base (one_last) differ."""
    one_base, one_last = keys(make_spec()), keys(make_spec(training={"strategy": "one_last"}))
    assert changed(one_base, one_last) == {(2, "train"), (2, "evaluate")}
    total = keys(make_spec(training={"strategy": "total_base"}))
    assert changed(one_base, total) == {(2, "train"), (2, "evaluate")}


def test_judge_base_changes_synthesize_from_iteration_two():
    a, b = keys(make_spec()), keys(make_spec(assessment={"judge": "base"}))
    assert changed(a, b) == set(STAGES)  # assessment is a synthesize setting, so all differ
    # ...and the judge model itself is an input: same settings, other judge identity
    spec = make_spec(assessment={"judge": "base"})
    assert stage_key(spec, 2, "synthesize", INPUTS) != stage_key(spec, 2, "synthesize",
                                                                 CacheInputs("models/x", "sha256:abc"))


def test_m0_evaluate_and_bad_stages():
    spec = make_spec(evaluation={"enabled": True, "suites": ["ifeval-smoke"]})
    assert stage_key(spec, 0, "evaluate", INPUTS) != stage_key(spec, 1, "evaluate", INPUTS)
    with pytest.raises(ValueError, match="export"):
        stage_key(spec, 1, "export", INPUTS)
    with pytest.raises(ValueError, match="iteration 0"):
        stage_key(spec, 0, "synthesize", INPUTS)


def entry(key: str, state: str, owner: str) -> CacheEntry:
    return CacheEntry(key=key, state=state, producer=f"ns/{owner}/iteration-1/synthesize", owner=owner,
                      run_dir=f"/data/runs/{owner}", iteration=1, stage="synthesize", summary={"generated": 3})


def test_lookup_verdicts():
    spec = make_spec()
    key = stage_key(spec, 1, "synthesize", INPUTS)
    cache = lambda *entries: StageCache(owner="ns/me", inputs=INPUTS, entries={e.key: e for e in entries})
    assert lookup(cache(), spec, 1, "synthesize").verdict == "produce"
    assert lookup(cache(entry(key, "succeeded", "ns/other")), spec, 1, "synthesize").verdict == "reuse"
    assert lookup(cache(entry(key, "running", "ns/other")), spec, 1, "synthesize").verdict == "wait"
    # a run's own entry (it claimed, then restarted): produce again, idempotently
    assert lookup(cache(entry(key, "running", "ns/me")), spec, 1, "synthesize").verdict == "produce"
    assert lookup(cache(), spec, 1, "export") is None


def test_reused_paths():
    assert reused_paths("curate", 2, "/data/runs/a", "/data/runs/b/") == {
        "/data/runs/b/i2/curate": "/data/runs/a/i2/curate"}
    assert reused_paths("train", 1, "/w/a", "/w/b") == {"/w/b/i1/train": "/w/a/i1/train",
                                                        "/w/b/i1/model": "/w/a/i1/model"}


# --- the planner with a cache --------------------------------------------------------------------

from sheepdog.planner import StageObservation, plan  # noqa: E402
from tests.planner.simulate import LAYOUT, RUN, summary_for  # noqa: E402

NOW = "2026-01-01T00:00:00Z"


def producer_entries(spec, stages, state="succeeded", owner="uid-a", run_dir="/data/runs/a"):
    return {k: CacheEntry(key=k, state=state, producer=f"ns/a/iteration-{t}/{s}", owner=owner, run_dir=run_dir,
                          iteration=t, stage=s, summary=summary_for(t, s))
            for t, s in stages for k in [stage_key(spec, t, s, INPUTS)]}


def test_plan_reuses_finished_stages_and_links_them_for_the_next():
    spec = make_spec(iterations=1, filter={"threshold": 8})
    other = make_spec(iterations=1, filter={"threshold": 5})  # the producer: same synthesize
    cache = StageCache("uid-b", INPUTS, producer_entries(other, [(1, "synthesize"), (1, "curate")]))
    p = plan(RUN, spec, None, [], LAYOUT, NOW, cache=cache)
    (action,) = p.actions
    assert (action.iteration, action.stage) == (1, "curate")  # curate's key differs: it runs
    synth = p.status.record(1).stages["synthesize"]
    assert synth.phase == "Succeeded" and synth.reused_from == "ns/a/iteration-1/synthesize"
    assert synth.reused_run_dir == "runs/a" and synth.gpu_seconds == 0 and synth.attempts == 0
    assert p.status.record(1).generated == 100  # the producer's figures
    assert p.status.record(1).stages["curate"].cache_key == stage_key(spec, 1, "curate", INPUTS)
    assert action.config.reuse_links == {"/data/runs/demo/i1/synthesize": "/data/runs/a/i1/synthesize"}
    assert [e.reason for e in p.events].count("StageReused") == 1
    # planning again on the same inputs decides the same (a restarted operator)
    again = plan(RUN, spec, p.status, [], LAYOUT, NOW, cache=cache)
    assert again.status == p.status and again.actions == p.actions


def test_plan_reuses_a_whole_iteration_and_succeeds_without_running_anything():
    spec = make_spec(iterations=1)
    stages = [(1, "synthesize"), (1, "curate"), (1, "train")]
    p = plan(RUN, spec, None, [], LAYOUT, NOW, cache=StageCache("uid-b", INPUTS, producer_entries(spec, stages)))
    assert p.actions == () and p.status.phase == "Succeeded"
    assert p.status.record(1).model == "runs/demo/i1/model"  # the summary's model (summary_for)


def test_plan_waits_for_a_producer_then_reuses_or_runs_itself():
    spec = make_spec(iterations=1)
    running = StageCache("uid-b", INPUTS, producer_entries(spec, [(1, "synthesize")], state="running"))
    p = plan(RUN, spec, None, [], LAYOUT, NOW, cache=running)
    assert p.actions == () and p.status.reason == "WaitingForStage" and p.status.phase == "Running"
    rec = p.status.record(1).stages["synthesize"]
    assert rec.phase == "Pending" and rec.waiting_for == "ns/a/iteration-1/synthesize"
    # the producer succeeded: reused
    done = StageCache("uid-b", INPUTS, producer_entries(spec, [(1, "synthesize")]))
    p2 = plan(RUN, spec, p.status, [], LAYOUT, NOW, cache=done)
    assert p2.status.record(1).stages["synthesize"].reused_from and p2.actions[0].stage == "curate"
    # the producer failed (its claim is gone): this run produces it
    p3 = plan(RUN, spec, p.status, [], LAYOUT, NOW, cache=StageCache("uid-b", INPUTS, {}))
    assert p3.actions[0].stage == "synthesize"
    assert p3.status.record(1).stages["synthesize"].waiting_for is None


def test_plan_ignores_its_own_entries_a_running_stage_and_spec_stage_cache_false():
    spec = make_spec(iterations=1)
    own = StageCache("uid-a", INPUTS, producer_entries(spec, [(1, "synthesize")]))
    assert plan(RUN, spec, None, [], LAYOUT, NOW, cache=own).actions[0].stage == "synthesize"
    off = make_spec(iterations=1, stage_cache=False)
    other = StageCache("uid-b", INPUTS, producer_entries(off, [(1, "synthesize")]))
    p = plan(RUN, off, None, [], LAYOUT, NOW, cache=other)
    assert p.actions[0].stage == "synthesize" and p.status.record(1).stages["synthesize"].cache_key is None
    # a stage this run already runs is never swapped for a cached one
    first = plan(RUN, spec, None, [], LAYOUT, NOW, cache=StageCache("uid-b", INPUTS, {}))
    running = [StageObservation(1, "synthesize", "running", started_at=NOW)]
    cache = StageCache("uid-b", INPUTS, producer_entries(spec, [(1, "synthesize")]))
    later = plan(RUN, spec, first.status, running, LAYOUT, NOW, cache=cache)
    assert later.status.record(1).stages["synthesize"].reused_from is None


def test_plan_leaves_another_runs_entry_in_its_own_directory_to_the_stage():
    """A deleted run's rerun under the same name: the stage program decides (run marker)."""
    spec = make_spec(iterations=1)
    entries = producer_entries(spec, [(1, "synthesize")], run_dir=LAYOUT.run_dir)
    p = plan(RUN, spec, None, [], LAYOUT, NOW, cache=StageCache("uid-b", INPUTS, entries, run_dir=LAYOUT.run_dir))
    assert p.actions[0].stage == "synthesize" and p.actions[0].config.reuse_links == {}


def test_carry_keys_keeps_what_the_first_plan_decided():
    """A plan made again once the new Job is observed (the operator's _as_started) keeps the
    first plan's reuse and keys."""
    from sheepdog.planner.stage_cache_policy import carry_keys

    spec = make_spec(iterations=1, filter={"threshold": 8})
    other = make_spec(iterations=1, filter={"threshold": 5})
    cache = StageCache("uid-b", INPUTS, producer_entries(other, [(1, "synthesize")]))
    waited = plan(RUN, spec, None, [], LAYOUT, NOW,
                  cache=StageCache("uid-b", INPUTS, {k: CacheEntry(**{**e.__dict__, "state": "running"})
                                                       for k, e in cache.entries.items()}))
    first = plan(RUN, spec, waited.status, [], LAYOUT, NOW, cache=cache)
    assert first.actions[0].stage == "curate"
    running = [StageObservation(1, "curate", "running", started_at=NOW)]
    again = plan(RUN, spec, waited.status, running, LAYOUT, NOW, cache=cache)
    assert again.status.record(1).stages["synthesize"].phase == "Pending"  # what the fix is for
    fixed = carry_keys(first.status, again.status).record(1)
    assert fixed.stages["synthesize"].reused_from == "ns/a/iteration-1/synthesize"
    assert fixed.stages["synthesize"].phase == "Succeeded" and fixed.generated == 100
    assert fixed.stages["curate"].cache_key == first.status.record(1).stages["curate"].cache_key
    assert fixed.stages["curate"].phase == "Running"
