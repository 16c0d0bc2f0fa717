"""kube/stage_cache.py: the runs' statuses as the stage cache's index, and the in-memory claims
that keep two runs reconciled at once from both producing a stage (no cluster needed)."""

from __future__ import annotations

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.kube.cache import WatchCache
from sheepdog.kube.stage_cache import (
    CLAIM_SECONDS, ClusterStageCache, cluster_inputs, entries_of_runs, for_reconciler, recheck_after,
)
from sheepdog.planner import plan
from sheepdog.planner.reasons import Reason
from sheepdog.planner.stage_cache_policy import stage_key
from sheepdog.stage_config import kube_layout

NOW = "2026-01-01T00:00:00Z"


def spec_of(**extra) -> dict:
    return {"model": {"base": "models/m"}, "iterations": 1, **extra}


def run_obj(name: str, uid: str, spec: dict, status: dict | None = None, created: str = "2026-01-01T00:00:00Z",
            rv: str = "1") -> dict:
    return {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv,
                         "creationTimestamp": created},
            "spec": spec, "status": status or {}}


def planned(run: dict, cache: ClusterStageCache | None = None):
    spec = RunSpec.model_validate(run["spec"])
    layout = kube_layout(run["metadata"]["name"], spec)
    view = cache.view(run, spec, layout) if cache else None
    status = RunStatus.model_validate(run["status"]) if run["status"] else None
    return plan(run["metadata"]["name"], spec, status, [], layout, NOW, cache=view), spec, layout


def finished(run: dict, *stages: str) -> dict:
    """The run's status with `stages` of iteration 1 succeeded (as the operator records them)."""
    p, spec, _ = planned(run)
    status = p.status.model_copy(deep=True)
    rec = status.record(1)
    for stage in stages:
        rec.stages.setdefault(stage, rec.stages.get("synthesize").model_copy())
        rec.stages[stage].phase = "Succeeded"
    for stage in stages:
        rec.stages[stage].cache_key = stage_key(spec, 1, stage, cluster_inputs(spec))
    rec.generated = 12
    return {**run, "status": status.to_wire()}


def test_a_finished_keyed_stage_is_an_entry_with_its_figures():
    a = finished(run_obj("a", "uid-a", spec_of(filter={"threshold": 5})), "synthesize")
    (entry,) = entries_of_runs([a], "sheepdog-data").values()
    assert entry.state == "succeeded" and entry.producer == "ns/a/iteration-1/synthesize"
    assert entry.run_dir == "/data/runs/a" and entry.owner == "uid-a" and entry.summary["generated"] == 12
    assert entries_of_runs([a], "other-claim") == {}
    deleting = {**a, "metadata": {**a["metadata"], "deletionTimestamp": NOW}}
    assert entries_of_runs([deleting], "sheepdog-data") == {}
    off = finished(run_obj("a", "uid-a", spec_of(stageCache=False)), "synthesize")
    assert entries_of_runs([off], "sheepdog-data") == {}


def test_a_run_reuses_another_runs_synthesize_from_the_cache():
    cache = WatchCache()
    index = for_reconciler(cache)
    cache.put_run(finished(run_obj("a", "uid-a", spec_of(filter={"threshold": 5})), "synthesize"))
    b = run_obj("b", "uid-b", spec_of(filter={"threshold": 8}))
    cache.put_run(b)
    p, _, _ = planned(b, index)
    synth = p.status.record(1).stages["synthesize"]
    assert synth.reused_from == "ns/a/iteration-1/synthesize" and synth.reused_run_dir == "runs/a"
    assert p.actions[0].stage == "curate"
    assert p.actions[0].config.reuse_links == {"/data/runs/b/i1/synthesize": "/data/runs/a/i1/synthesize"}


def test_the_first_claim_wins_and_the_other_run_waits():
    clock = [0.0]
    cache = WatchCache()
    index = ClusterStageCache(cache.runs_in, cache.run, clock=lambda: clock[0])
    a, b = run_obj("a", "uid-a", spec_of()), run_obj("b", "uid-b", spec_of(), created="2026-01-01T00:00:01Z")
    cache.put_run(a)
    cache.put_run(b)
    pa, spec, layout = planned(a, index)
    pb, _, _ = planned(b, index)
    assert pa.actions[0].stage == pb.actions[0].stage == "synthesize"  # both would start it
    assert index.claim(a, spec, layout, pa.actions[0], pa.status)
    assert index.claim(a, spec, layout, pa.actions[0], pa.status)  # again (a retried reconcile): still its
    assert not index.claim(b, spec, kube_layout("b", spec), pb.actions[0], pb.status)
    again, _, _ = planned(b, index)  # b planned again: it waits for a
    assert again.actions == () and again.status.reason == Reason.WAITING_FOR_STAGE
    assert again.status.record(1).stages["synthesize"].waiting_for == "ns/a/iteration-1/synthesize"
    assert recheck_after(again.status, None) == 5.0 and recheck_after(pa.status, 30.0) == 30.0
    # a's status write records the stage: the status says it from now on (a is producing)
    cache.put_run({**a, "status": pa.status.to_wire(), "metadata": {**a["metadata"], "resourceVersion": "2"}})
    assert planned(b, index)[0].status.reason == Reason.WAITING_FOR_STAGE
    assert index._claims == {}
    # a claim that no status write followed (the operator failed to write) ends after a while
    pc, _, _ = planned(run_obj("c", "uid-c", spec_of(synthesis={"temperature": 0.5})), index)
    c = run_obj("c", "uid-c", spec_of(synthesis={"temperature": 0.5}))
    assert index.claim(c, RunSpec.model_validate(c["spec"]), kube_layout("c", spec), pc.actions[0], pc.status)
    d = run_obj("d", "uid-d", spec_of(synthesis={"temperature": 0.5}))
    assert planned(d, index)[0].status.reason == Reason.WAITING_FOR_STAGE
    clock[0] += CLAIM_SECONDS + 1
    assert planned(d, index)[0].actions[0].stage == "synthesize"


def test_a_producer_that_failed_leaves_the_stage_to_the_waiter():
    cache = WatchCache()
    index = for_reconciler(cache)
    a = finished(run_obj("a", "uid-a", spec_of()), "synthesize")
    a["status"]["iterations"][0]["stages"]["synthesize"]["phase"] = "Failed"
    cache.put_run(a)
    p, _, _ = planned(run_obj("b", "uid-b", spec_of()), index)
    assert p.actions[0].stage == "synthesize"


def test_parsed_once_per_resource_version():
    cache = WatchCache()
    index = for_reconciler(cache)
    cache.put_run(finished(run_obj("a", "uid-a", spec_of()), "synthesize"))
    assert len(index._entries("ns", "sheepdog-data")) == 1
    memo = index._parsed[("ns", "a")]
    index._entries("ns", "sheepdog-data")
    assert index._parsed[("ns", "a")] is memo
    cache.drop_run("ns", "a")
    assert index._entries("ns", "sheepdog-data") == {} and ("ns", "a") not in index._parsed


def test_a_reconciled_run_records_its_keys_and_its_claims_end():
    """Through the Reconciler (tests/operator/test_observe.py's in-memory API): the status the
    creating reconcile writes (the Job already observed) keeps each stage's key, so the run's
    finished stages are entries and its claims give way to its status."""
    import json

    from tests.operator.test_observe import SUMMARY, FakeKube, make_run_obj, reconciler

    kube = FakeKube(make_run_obj())
    rec = reconciler(kube, stage_cache=True)
    rec.reconcile("ns", "r")
    for stage, summary in (("synthesize", SUMMARY), ("curate", {"kept": 3, "keepRate": 0.75}),
                           ("train", {"trainLoss": 0.5})):
        kube.finish(f"r-i1-{stage}", message=json.dumps(summary))
        result = rec.reconcile("ns", "r")
    assert result.phase == "Succeeded"
    stages = kube.run["status"]["iterations"][0]["stages"]
    assert all(len(stages[s]["cacheKey"]) == 64 for s in ("synthesize", "curate", "train"))
    entries = entries_of_runs([kube.cache.run("ns", "r")], "sheepdog-data")
    assert sorted(e.stage for e in entries.values()) == ["curate", "synthesize", "train"]
    assert {e.state for e in entries.values()} == {"succeeded"} and rec.stage_cache._claims == {}


def test_a_reused_stage_is_no_execution_in_the_stage_metrics():
    """sheepdog_stage_* count executions: a stage reused from another run ran nowhere here."""
    from sheepdog.kube.reconcile import Reconciler

    calls = []

    class Recorder:
        def stage_retried(self, *args):
            pass

        def stage_finished(self, namespace, stage, result, seconds):
            calls.append((stage, result))

    rec = Reconciler.__new__(Reconciler)  # only _transitions is exercised: it reads self.metrics
    rec.metrics = Recorder()
    done = {"phase": "Succeeded", "startedAt": NOW, "finishedAt": NOW}
    new = {"iterations": [{"iteration": 1, "stages": {
        "synthesize": {**done, "reusedFrom": "ns/a/iteration-1/synthesize"}, "curate": done}}]}
    rec._transitions("ns", {}, new)
    assert calls == [("curate", "succeeded")]


def test_a_deleted_producers_claim_ends_at_once():
    clock = [0.0]
    cache = WatchCache()
    index = ClusterStageCache(cache.runs_in, cache.run, clock=lambda: clock[0])
    for how in ("gone", "deleting", "replaced"):
        a, b = run_obj("a", "uid-a", spec_of()), run_obj("b", "uid-b", spec_of())
        cache.put_run(a)
        pa, spec, layout = planned(a, index)
        assert index.claim(a, spec, layout, pa.actions[0], pa.status)
        assert planned(b, index)[0].status.reason == Reason.WAITING_FOR_STAGE
        if how == "gone":
            cache.drop_run("ns", "a")
        elif how == "deleting":
            cache.put_run({**a, "metadata": {**a["metadata"], "deletionTimestamp": NOW, "resourceVersion": "2"}})
        else:
            cache.drop_run("ns", "a")
            cache.put_run(run_obj("a", "uid-a2", spec_of(), rv="3"))  # a new run of its name, not yet started
        # no CLAIM_SECONDS to sit out: b produces the stage itself now
        assert planned(b, index)[0].actions[0].stage == "synthesize", how
        assert index._claims == {}
        cache.drop_run("ns", "a")


def test_a_stage_whose_output_will_not_be_offered_is_not_waited_for():
    cache = WatchCache()
    index = for_reconciler(cache)
    doomed = run_obj("a", "uid-a", spec_of(storage={"deleteDataOnDelete": True}))
    cache.put_run(doomed)
    pa, spec, layout = planned(doomed, index)
    assert pa.actions[0].stage == "synthesize"
    assert index.claim(doomed, spec, layout, pa.actions[0], pa.status) and index._claims == {}  # no claim
    cache.put_run({**doomed, "status": pa.status.to_wire(), "metadata": {**doomed["metadata"], "resourceVersion": "2"}})
    assert pa.status.record(1).stages["synthesize"].cache_key  # it is producing a keyed stage...
    p, _, _ = planned(run_obj("b", "uid-b", spec_of()), index)
    assert p.actions[0].stage == "synthesize"  # ...which b does not wait for: its data goes with its run
    assert p.status.reason != Reason.WAITING_FOR_STAGE
