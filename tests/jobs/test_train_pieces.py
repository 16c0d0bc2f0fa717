"""The train stage's pure pieces: step counting, the split, checkpoint trust, step logs, tracking."""

from __future__ import annotations

import json

import pytest

from sheepdog_jobs.stages.train import split, total_steps, warmup_for
from sheepdog_jobs.training import LOG_FILE, checkpoints, progress, tracking


@pytest.mark.parametrize("n,world,batch,accum,epochs,expected", [
    (4, 1, 1, 2, 2, 4),     # the stage test: 4 examples, accumulation 2, 2 epochs
    (5, 2, 1, 2, 1, 2),     # 2 ranks get 3 micro-batches each: an epoch's partial accumulation is a step
    (16, 8, 1, 2, 3, 3),    # the paper's shape: effective batch 16, one step an epoch
    (10, 1, 4, 1, 1.5, 5),  # 3 steps an epoch, 1.5 epochs rounds up
    (1, 4, 1, 8, 1, 1),     # never zero
])
def test_total_steps_follow_the_world_size(n, world, batch, accum, epochs, expected):
    assert total_steps(n, world, batch, accum, epochs) == expected


@pytest.mark.parametrize("requested,steps", [(2, 1), (1, 1), (20, 2), (20, 3), (0, 1), (20, 1500)])
def test_the_last_optimizer_step_trains_at_the_full_rate(requested, steps):
    """With the Trainer's own scheduler: warmup starts at a rate of 0, so a warmup as long as the
    training (paper-tiny: 1 step, warmupSteps 2) left every weight as it was."""
    import torch
    from transformers import get_scheduler

    warmup = warmup_for(requested, steps)
    assert warmup == min(requested, steps - 1)
    for kind in ("cosine", "linear"):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=steps)
        rates = []
        for _ in range(steps):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert rates[warmup] == pytest.approx(1.0), (kind, rates[:5])
        assert all(r > 0 for r in rates[warmup:]), (kind, rates[:5])


def test_split_is_seeded_and_keeps_a_training_record():
    records = list(range(10))
    train, val = split(records, 0.3, seed=7, iteration=1)
    assert len(val) == 3 and sorted(train + val) == records
    assert split(records, 0.3, seed=7, iteration=1) == (train, val)
    assert split(records, 0.3, seed=7, iteration=2) != (train, val)
    assert split([1], 0.9, seed=7, iteration=1) == ([1], [])


def write_checkpoint(root, step, fp="fp", marked=True):
    d = root / f"checkpoint-{step}"
    (d / "global_step").mkdir(parents=True)
    (d / "global_step" / "optim.pt").write_bytes(b"x" * 100)
    (d / "trainer_state.json").write_text("{}")
    if marked:
        checkpoints.mark_complete(d, fp, step)
    return d


def test_only_complete_checkpoints_of_the_same_training_are_trusted(tmp_path):
    assert checkpoints.latest_complete(tmp_path / "none", "fp") is None
    write_checkpoint(tmp_path, 2)
    four = write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 6, marked=False)   # killed while saving
    write_checkpoint(tmp_path, 8, fp="other")     # another spec or data set
    (tmp_path / "checkpoint-x").mkdir()           # not a checkpoint name
    assert checkpoints.latest_complete(tmp_path, "fp") == four
    # A shard cut short after the marker was written: no longer complete.
    with open(four / "global_step" / "optim.pt", "r+b") as fh:
        fh.truncate(50)
    assert checkpoints.latest_complete(tmp_path, "fp") == tmp_path / "checkpoint-2"
    dropped = checkpoints.drop_untrusted(tmp_path, "fp")
    assert sorted(d.name for d in dropped) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    assert [s for s, _ in checkpoints.checkpoints(tmp_path)] == [2]


def test_step_rows_and_lines():
    row = progress.step_row({"loss": 1.23456, "learning_rate": 1e-4, "grad_norm": 0.5, "epoch": 0.5}, 3, 12, 0.5)
    assert row == {"step": 3, "totalSteps": 12, "epoch": 0.5, "loss": 1.23456, "learningRate": 1e-4, "gradNorm": 0.5}
    row.update(samplesPerSecond=2.5, etaSeconds=3725)
    line = progress.step_line(row)
    assert line == "train: step 3/12 epoch 0.50 loss 1.2346 lr 1.000e-04 grad_norm 0.500 samples/s 2.50 eta 1:02:05"
    assert not line.startswith("{")  # the summary is the stage's only JSON line on stdout
    assert progress.step_line(progress.step_row({"eval_loss": 2.0}, 6, 12, 1.0)) == \
        "train: step 6/12 epoch 1.00 eval_loss 2.0000"


def test_eta_and_print_interval():
    assert progress.eta_seconds(step=4, total=10, first_step=0, elapsed=8.0) == 12.0
    assert progress.eta_seconds(step=6, total=10, first_step=4, elapsed=4.0) == 8.0  # resumed at 4
    assert progress.eta_seconds(step=4, total=10, first_step=4, elapsed=1.0) is None
    assert progress.format_eta(None) == "?"
    assert progress.print_every(7) == 1 and progress.print_every(1000) == 50


def test_step_log_prints_the_progress_it_writes(tmp_path, capsys, monkeypatch):
    """Rank 0's progress line on stdout (what the operator reads from the pod log) and
    progress.json (what the local executor reads) hold the same record, through one parser;
    the line comes with each human step line, else at most every PROGRESS_LINE_SECONDS."""
    from types import SimpleNamespace

    from sheepdog.progress import parse_progress_log, progress_record

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = progress.StepLog(tmp_path, effective_batch=4)
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=100, epoch=0.0)
    log.on_train_begin(None, state, None)
    printed = []
    for step in (1, 2, 3):  # 1: a human line; 2, 3: within 10 s of the last progress line
        clock[0] += 1
        state.global_step, state.epoch = step, step / 100
        log.on_log(None, state, None, logs={"loss": 1.0, "learning_rate": 1e-4})
        printed.append(capsys.readouterr().out)
        written = progress_record(json.loads((tmp_path / progress.PROGRESS_FILE).read_text()))
        assert written["step"] == step
    assert parse_progress_log(printed[0]) == {"step": 1, "totalSteps": 100, "epoch": 0.01, "etaSeconds": 99.0}
    assert printed[1] == printed[2] == ""
    clock[0] += progress.PROGRESS_LINE_SECONDS
    state.global_step, state.epoch = 4, 0.04
    log.on_log(None, state, None, logs={"loss": 1.0})
    out = capsys.readouterr().out
    assert not any(line.startswith("{") for line in out.splitlines())  # the summary stays the only one
    assert parse_progress_log(out) == progress_record(json.loads((tmp_path / progress.PROGRESS_FILE).read_text()))
    assert parse_progress_log(out)["step"] == 4
    assert progress.progress_line_due(False, None, 0.0) and not progress.progress_line_due(False, 5.0, 6.0)


def test_step_log_survives_a_line_cut_by_sigkill(tmp_path):
    (tmp_path / LOG_FILE).write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + '{"step": 2, "lo')
    assert progress.read_log(tmp_path) == [{"step": 1, "loss": 2.0}]
    assert progress.read_log(tmp_path / "missing") == []


def test_tracking_settings():
    assert tracking.trainer_reports(["tensorboard", "mlflow"]) == ["tensorboard"]
    assert tracking.trainer_reports(["mlflow"]) == ["none"]
    assert tracking.flatten({"training": {"lora": {"rank": 8}, "reportTo": ["mlflow"]}, "x": None}) == {
        "training.lora.rank": "8", "training.reportTo": "['mlflow']", "x": "None"}
    assert tracking.numeric({"a": 1, "b": True, "c": "x", "d": 0.5, "e": None}) == {"a": 1.0, "d": 0.5}


def test_mlflow_runs_are_found_again_and_take_the_evaluation(tmp_path, make_config):
    """A restarted attempt (or the evaluate stage) finds its iteration's child run by its tags;
    the evaluation goes there as evaluation/<metric>. (A SQLite store: the model test
    test_reports_to_tensorboard_mlflow_and_wandb uses a real tracking server.)"""
    from mlflow.tracking import MlflowClient

    cfg = make_config(tmp_path, "evaluate", spec={"training": {"reportTo": ["mlflow"]}})
    spec = cfg.spec.model_dump(mode="json", by_alias=True)
    uri = tracking.tracking_uri(cfg)
    assert uri == f"sqlite:///{tmp_path}/i1/train/mlflow.db"
    first = tracking.MlflowTracker(uri, "t", 1, spec).start()
    assert tracking.MlflowTracker(uri, "t", 1, spec).start() == first
    tracking.log_evaluation(cfg, {"ifeval-smoke.promptStrict": 0.25, "flag": True})
    client = MlflowClient(uri)
    assert client.get_run(first).data.metrics == {"evaluation/ifeval-smoke.promptStrict": 0.25}
    tracking.MlflowTracker(uri, "t", 2, spec).start()
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert sorted(r.data.tags["sheepdog.iteration"] for r in runs) == ["1", "2", "all"]

    quiet = make_config(tmp_path / "quiet", "evaluate", spec={"training": {"reportTo": ["tensorboard"]}})
    tracking.log_evaluation(quiet, {"ifeval-smoke.promptStrict": 0.5})
    assert not (tmp_path / "quiet" / "i1" / "train").exists()
