"""Per-iteration figures for the trackers (training/iteration_tracking.py), read back from what
each tracker wrote (TensorBoard's event reader, W&B's offline run file) and compared with the
iteration record that report.json holds (planner/records.apply_summary, from the same stage
summaries). MLflow's figures: tests/jobs/test_train_trainer.py (a real MLflow server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sheepdog.api.status import IterationRecord
from sheepdog.planner.records import apply_summary
from sheepdog.stage_config import Layout
from sheepdog_jobs import storage
from sheepdog_jobs.stages.train import _upstream_figures
from sheepdog_jobs.training import iteration_tracking
from tests.jobs.wandb_records import history, run_record

SYNTHESIZE = {"ok": True, "generated": 16, "assessed": 15, "parseFailures": 1, "meanQuality": 6.25,
              "meanFollowing": 7.5, "engine": "vllm"}
CURATE = {"ok": True, "kept": 7, "keepRate": 0.4667}
TRAIN = {"ok": True, "trainLoss": 1.2345, "evalLoss": 2.5, "model": "i1/model"}
EVALUATE = {"ok": True, "evaluation": {"ifeval-smoke.promptLoose": 0.25, "ifeval-smoke.promptStrict": 0.125}}
PAIRS = [{"id": f"p{i}", "instruction": f"Task {i}", "input": "", "output": f"Answer {i}",
          "scores": {"quality": 9, "following": 8}} for i in range(25)]


def report_record(layout: Layout) -> dict:
    """The iteration's record as report.json has it, built from the same summaries."""
    record = IterationRecord(iteration=1)
    for stage, summary in (("synthesize", SYNTHESIZE), ("curate", CURATE), ("train", TRAIN), ("evaluate", EVALUATE)):
        apply_summary(record, stage, summary, layout)
    return record.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.fixture
def finished_iteration(tmp_path, make_config):
    """i1's synthesize and curate done (their manifests), as the train stage finds them."""
    storage.write_manifest(tmp_path / "i1" / "synthesize", [], "test", summary=SYNTHESIZE)
    storage.write_jsonl(tmp_path / "i1" / "curate" / "kept.jsonl", PAIRS)
    storage.write_manifest(tmp_path / "i1" / "curate", ["kept.jsonl"], "test", summary=CURATE)
    return make_config(tmp_path, "train", spec={"training": {"reportTo": ["tensorboard", "wandb"]}})


def log_as_the_stages_do(cfg, out_train: Path, out_eval: Path) -> None:
    """What train (its figures) and evaluate (its metrics) hand to the trackers."""
    figures = iteration_tracking.numeric({**_upstream_figures(cfg), "trainLoss": TRAIN["trainLoss"],
                                          "evalLoss": TRAIN["evalLoss"]})
    iteration_tracking.report_iteration(cfg.spec.training.report_to, Path(cfg.run_dir), out_train, cfg.run, 1,
                                        figures=figures,
                                        pairs=iteration_tracking.sampled_pairs(Path(cfg.train_data[-1])))
    iteration_tracking.report_iteration(cfg.spec.training.report_to, Path(cfg.run_dir), out_eval, cfg.run, 1,
                                        evaluation=EVALUATE["evaluation"])


def test_tensorboard_gets_the_reports_figures_per_iteration(finished_iteration, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = finished_iteration.model_copy(update={"spec": finished_iteration.spec.model_copy(update={
        "training": finished_iteration.spec.training.model_copy(update={"report_to": ["tensorboard"]})})})
    log_as_the_stages_do(cfg, tmp_path / "i1" / "train", tmp_path / "i1" / "evaluate")
    events = EventAccumulator(str(iteration_tracking.tensorboard_dir(tmp_path)))
    events.Reload()
    logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    record = report_record(Layout(root=str(tmp_path), run_dir=str(tmp_path)))
    expected = {f"iteration/{k}": record[k] for k in ("generated", "assessed", "parseFailures", "meanQuality",
                                                        "meanFollowing", "kept", "keepRate", "trainLoss")}
    expected.update({f"evaluation/{k}": v for k, v in record["evaluation"].items()})
    expected["iteration/evalLoss"] = TRAIN["evalLoss"]  # a train figure report.json keeps in the stage record
    assert set(logged) == set(expected)
    for tag, value in expected.items():
        assert [s for s, _ in logged[tag]] == [1], tag  # one point, at step = the iteration
        assert logged[tag][0][1] == pytest.approx(value, rel=1e-6), tag


def test_wandb_gets_the_figures_a_group_per_run_and_a_table_of_pairs(finished_iteration, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = finished_iteration.model_copy(update={"spec": finished_iteration.spec.model_copy(update={
        "training": finished_iteration.spec.training.model_copy(update={"report_to": ["wandb"]})})})
    log_as_the_stages_do(cfg, tmp_path / "i1" / "train", tmp_path / "i1" / "evaluate")
    record = report_record(Layout(root=str(tmp_path), run_dir=str(tmp_path)))
    rows = {}
    for stage in ("train", "evaluate"):
        files = list((tmp_path / "i1" / stage / "wandb").glob("offline-run-*/run-*.wandb"))  # offline: no key
        assert len(files) == 1, stage
        run = run_record(files[0])
        assert (run.run_id, run.run_group) == ("t-iteration-1", "t")  # one W&B run per iteration, group = run
        (row,) = history(files[0])
        rows[stage] = row
    train, evaluate = rows["train"], rows["evaluate"]
    for key in ("generated", "assessed", "parseFailures", "meanQuality", "meanFollowing", "kept", "keepRate",
                "trainLoss"):
        assert float(train[f"iteration/{key}"]) == pytest.approx(record[key], rel=1e-6), key
    for metric, value in record["evaluation"].items():
        assert float(evaluate[f"evaluation/{metric}"]) == pytest.approx(value), metric
    assert train["iteration"] == evaluate["iteration"] == "1"
    # the sampled pairs: the first 20 kept pairs with their scores, as a W&B table file
    table_path = json.loads(train["sampled_pairs/path"])
    (table_file,) = (tmp_path / "i1" / "train" / "wandb").glob(f"offline-run-*/files/{table_path}")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["instruction", "input", "output", "quality", "following"]
    assert len(table["data"]) == iteration_tracking.SAMPLED_PAIRS
    assert table["data"][0] == ["Task 0", "", "Answer 0", 9, 8]


def test_wandb_is_online_with_a_key_and_offline_without(monkeypatch):
    assert iteration_tracking.wandb_mode({}) == "offline"
    assert iteration_tracking.wandb_mode({"WANDB_API_KEY": "k"}) == "online"
    assert iteration_tracking.wandb_mode({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}) == "offline"


def test_a_tracker_that_fails_does_not_fail_the_stage(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    iteration_tracking.report_iteration(["tensorboard"], blocked, tmp_path, "t", 1, figures={"kept": 1.0})
    assert "TensorBoard did not take iteration 1's figures" in caplog.text
