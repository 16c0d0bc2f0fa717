"""The operator's sweep decisions (pure): children created once, maxParallelRuns, an invalid
cell refusing the whole sweep, per-cell status from the children, no duplicate after a restart
(the plan reads the listing only), a run of a child's name not owned is left alone."""

from __future__ import annotations

import copy

from sheepdog.api.sweep_status import SweepStatus
from sheepdog.sweep.policy import plan_sweep

NOW = "2026-12-07T17:00:00Z"
SWEEP = {
    "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentSweep",
    "metadata": {"name": "thr", "namespace": "ns", "uid": "sweep-uid", "generation": 1, "resourceVersion": "5"},
    "spec": {"template": {"model": {"base": "models/tiny"}, "iterations": 1},
             "axes": [{"field": "filter.threshold", "name": "c", "values": [-1, 5, 8]}]},
}


def sweep(**spec):
    s = copy.deepcopy(SWEEP)
    s["spec"].update(spec)
    return s


def child(manifest, phase=None, **status):
    c = copy.deepcopy(manifest)
    if phase:
        c["status"] = {"phase": phase, **status}
    return c


def test_creates_every_child_once_with_owner_and_labels():
    plan = plan_sweep(sweep(), [], NOW)
    assert [m["metadata"]["name"] for m in plan.creates] == ["thr-c-m1", "thr-c-5", "thr-c-8"]
    ref = plan.creates[0]["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("SelfAlignmentSweep", "sweep-uid", True)
    assert plan.creates[1]["spec"]["filter"] == {"threshold": 5}
    assert [r for _, r, _ in plan.events] == ["RunCreated"] * 3
    SweepStatus.model_validate(plan.status)
    assert plan.status["phase"] == "Running" and plan.status["runs"] == 3
    # the next reconcile (or a restarted operator) lists them and creates nothing
    again = plan_sweep(sweep(), [child(m) for m in plan.creates], NOW)
    assert again.creates == [] and not [e for e in again.events if e[1] == "RunCreated"]


def test_max_parallel_runs_creates_the_next_as_earlier_ones_finish():
    s = sweep(maxParallelRuns=2)
    first = plan_sweep(s, [], NOW)
    assert [m["metadata"]["name"] for m in first.creates] == ["thr-c-m1", "thr-c-5"]
    assert [c["phase"] for c in first.status["cells"]] == ["Pending", "Pending", "NotCreated"]
    assert first.status["cells"][2]["reason"] == "MaxParallelRuns"
    running = [child(m, "Running") for m in first.creates]
    assert plan_sweep(s, running, NOW).creates == []
    one_done = [child(first.creates[0], "Succeeded"), child(first.creates[1], "Running")]
    assert [m["metadata"]["name"] for m in plan_sweep(s, one_done, NOW).creates] == ["thr-c-8"]


def test_status_per_cell_and_the_finished_sweep():
    plan = plan_sweep(sweep(), [], NOW)
    done = []
    for i, m in enumerate(plan.creates):
        done.append(child(m, "Succeeded", gpuSeconds=10.0 + i, iterations=[
            {"iteration": 1, "kept": 10 - 3 * i, "trainLoss": 1.0, "evaluation": {"ifeval-smoke.promptLoose": 0.5},
             "stages": {"synthesize": ({"reusedFrom": "ns/thr-c-m1/iteration-1/synthesize"} if i else
                                       {"gpuSeconds": 7.0})}}]))
    final = plan_sweep(sweep(), done, NOW)
    st = final.status
    assert (st["phase"], st["progress"], st["succeeded"]) == ("Succeeded", "3/3", 3)
    assert [c["iterations"][0]["kept"] for c in st["cells"]] == [10, 7, 4]
    assert "stages" not in st["cells"][0]["iterations"][0]  # the status stays small
    assert st["cells"][1]["reused"] == [{"iteration": 1, "stage": "synthesize",
                                         "from": "ns/thr-c-m1/iteration-1/synthesize"}]
    assert st["gpuSeconds"] == 33.0 and st["savedGpuSeconds"] == 14.0 and st["reusedStages"] == 2
    assert ("Normal", "SweepSucceeded") in [(t, r) for t, r, _ in final.events]
    # written once: the same inputs with that status give no new event
    s = sweep()
    s["status"] = st
    assert plan_sweep(s, done, NOW).events == []


def test_one_invalid_cell_refuses_the_sweep_and_creates_nothing():
    plan = plan_sweep(sweep(axes=[{"field": "filter.threshold", "values": [5, 42]}]), [], NOW)
    assert plan.creates == []
    assert plan.status["phase"] == "Invalid"
    assert "cell threshold-42 (filter.threshold=42): spec.filter.threshold: must be between -1 and 10" in plan.status["message"]
    assert {c["type"]: c["status"] for c in plan.status["conditions"]} == {"Invalid": "True", "Ready": "False"}
    [(type_, reason, message)] = plan.events
    assert (type_, reason) == ("Warning", "InvalidSweep") and "threshold-42" in message
    s = sweep(axes=[{"field": "filter.threshold", "values": [5, 42]}])
    s["status"] = plan.status
    assert plan_sweep(s, [], NOW).events == []  # said once per generation


def test_a_run_of_a_childs_name_not_owned_is_left_alone():
    foreign = {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun",
               "metadata": {"name": "thr-c-5", "namespace": "ns"}, "status": {"phase": "Running"}}
    plan = plan_sweep(sweep(), [foreign], NOW)
    assert [m["metadata"]["name"] for m in plan.creates] == ["thr-c-m1", "thr-c-8"]
    assert plan.status["cells"][1]["phase"] == "NameTaken"


def test_suspend_creates_nothing_more():
    plan = plan_sweep(sweep(suspend=True), [], NOW)
    assert plan.creates == [] and {c["reason"] for c in plan.status["cells"]} == {"Suspended"}
