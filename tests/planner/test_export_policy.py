"""spec.export: the best iteration's model is exported before the run succeeds."""

from __future__ import annotations

from sheepdog.planner.export_policy import StartExport
from tests.planner.simulate import Simulation, make_spec, summary_for

EVAL = {"evaluation": {"enabled": True}}


def exported(to: str = "s3://models/demo"):
    def outcome(iteration: int, stage: str):
        if stage == "export":
            return "succeeded", {"stage": "export", "ok": True, "to": to, "files": 5, "bytes": 123, "seconds": 1}, ""
        return "succeeded", summary_for(iteration, stage), ""
    return outcome


def test_the_last_iteration_is_exported_before_the_run_succeeds():
    sim = Simulation(make_spec(iterations=2, export={"to": "s3://models/demo"}), outcome=exported())
    final = sim.run()
    assert final.status.phase == "Succeeded" and final.status.reason == "Completed"
    assert sim.executed[-2:] == [(2, "train"), (2, "export")]
    exporting = [p for p in sim.plans if p.status.reason == "Exporting"]
    assert exporting and all(p.status.phase == "Running" and not p.done for p in exporting)
    assert exporting[0].status.message == "iteration 2: exporting the model to s3://models/demo"
    action = next(a for a in sim.started if isinstance(a, StartExport))
    assert action.name == "demo-i2-export"
    assert (action.config.iteration, action.config.model_dir, action.config.to) == (
        2, "/data/runs/demo/i2/model", "s3://models/demo")
    assert [r["iteration"] for r in action.config.records] == [1, 2]
    record = final.status.record(2).stages["export"]
    assert record.phase == "Succeeded" and record.summary == {"to": "s3://models/demo", "files": 5, "bytes": 123}
    assert sim.reasons().count("Exporting") == 1 and sim.reasons().count("Exported") == 1
    assert sim.reasons()[-1] == "Completed"


def test_with_stopping_the_best_iteration_is_exported_to_a_path_on_the_volume():
    spec = make_spec(iterations=3, export={"to": "exports/demo"}, stopping={"metric": "ifeval-smoke.promptStrict"}, **EVAL)
    sim = Simulation(spec, metrics={0: 0.1, 1: 0.5, 2: 0.4, 3: 0.9}, outcome=None)
    sim.outcome = lambda i, s: exported("/data/exports/demo")(i, s) if s == "export" else (
        "succeeded", summary_for(i, s, sim.metrics), "")
    final = sim.run()
    assert final.status.reason == "EarlyStopped" and final.status.best_iteration == 1
    assert sim.executed[-1] == (1, "export")
    action = next(a for a in sim.started if isinstance(a, StartExport))
    assert (action.config.model_dir, action.config.to) == ("/data/runs/demo/i1/model", "/data/exports/demo")
    assert (3, "synthesize") not in sim.executed


def test_a_failed_export_fails_the_run_with_its_error():
    def outcome(iteration: int, stage: str):
        if stage == "export":
            return "failed", {"ok": False, "error": "NoSuchBucket"}, "NoSuchBucket: the bucket does not exist"
        return "succeeded", summary_for(iteration, stage), ""

    sim = Simulation(make_spec(iterations=1, export={"to": "s3://nobucket/x"}), outcome=outcome)
    final = sim.run()
    assert final.done and final.status.phase == "Failed" and final.status.reason == "ExportFailed"
    assert final.status.message == ("iteration 1 export to s3://nobucket/x failed after 1 attempt: "
                                    "NoSuchBucket: the bucket does not exist")
    assert "ExportFailed" in sim.reasons()


def test_export_added_to_a_succeeded_run_exports_it_once():
    sim = Simulation(make_spec(iterations=1), outcome=exported())
    assert sim.run().status.phase == "Succeeded"
    assert not any(isinstance(a, StartExport) for a in sim.started)
    sim.spec, sim.generation = make_spec(iterations=1, export={"to": "s3://models/demo"}), 2
    final = sim.run()
    assert final.status.phase == "Succeeded" and sim.executed[-1] == (1, "export")
    again = sim.plan_once()  # nothing more to do: no second export
    assert again.done and not again.actions and again.status.phase == "Succeeded"
    assert [a.stage for a in sim.started].count("export") == 1


def test_without_export_nothing_is_exported():
    sim = Simulation(make_spec(iterations=1))
    final = sim.run()
    assert final.status.reason == "Completed" and "export" not in final.status.record(1).stages


def test_nothing_is_exported_when_no_iteration_beats_m0():
    spec = make_spec(iterations=3, export={"to": "s3://models/demo"}, stopping={"metric": "ifeval-smoke.promptStrict"}, **EVAL)
    sim = Simulation(spec, metrics={0: 0.5, 1: 0.4, 2: 0.3, 3: 0.2}, outcome=None)
    final = sim.run()
    assert final.status.phase == "Succeeded" and final.status.best_iteration == 0
    assert not any(isinstance(a, StartExport) for a in sim.started)
    record = final.status.record(0).stages["export"]
    assert record.summary == {"skipped": True} and "no iteration beat M_0" in record.message
    assert sim.reasons().count("ExportSkipped") == 1
