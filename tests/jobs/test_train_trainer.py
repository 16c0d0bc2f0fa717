"""Stage train on transformers' Trainer: the same training as the hand loop it replaced, resume
after SIGKILL, and the trackers (TensorBoard, a real MLflow server, W&B offline)."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sheepdog_jobs import storage
from sheepdog_jobs.training import LOG_FILE

from .conftest import REPO, stage_args, stage_env
from .test_train_deepspeed import write_curated

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

# One full batch (4 training examples, batch 4, no accumulation) and no LoRA dropout: the data
# order and the dropout masks, the two things the Trainer draws differently from the hand loop,
# do not enter, so what remains is the optimisation itself (docs/training.md, "Same training").
EQUIVALENCE = {"training": {"zeroStage": 2, "precision": "fp32", "epochs": 3, "learningRate": 2e-3,
                            "warmupSteps": 1, "validationFraction": 0.34, "perDeviceBatchSize": 4,
                            "gradientAccumulation": 1, "lora": {"dropout": 0}}}
# The hand loop's numbers (git 712c886's train.py on this data, by the script in docs/training.md).
HAND_LOOP = {"trainLoss": 1.78276, "evalLoss": 2.6337, "stepLosses": [3.43727, 3.43727, 1.78276]}
REL_TOLERANCE = 1e-3


def test_same_training_as_the_hand_loop(tmp_path, make_config, run_cli, tiny_model):
    data = write_curated(tmp_path)
    cfg = make_config(tmp_path, "train", spec=EQUIVALENCE, model=tiny_model, train_data=[data])
    proc, summary = run_cli(cfg, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert summary["samples"] == 4 and summary["validationSamples"] == 2 and summary["step"] == 3
    rows = [r for r in storage.read_jsonl(tmp_path / "i1" / "train" / LOG_FILE) if "loss" in r]
    got = {"trainLoss": summary["trainLoss"], "evalLoss": summary["evalLoss"],
           "stepLosses": [r["loss"] for r in rows]}
    print(f"\ntrainer {got}\nhand loop {HAND_LOOP}")
    for key in ("trainLoss", "evalLoss"):
        assert math.isclose(got[key], HAND_LOOP[key], rel_tol=REL_TOLERANCE), key
    assert len(got["stepLosses"]) == len(HAND_LOOP["stepLosses"])
    for mine, theirs in zip(got["stepLosses"], HAND_LOOP["stepLosses"]):
        assert math.isclose(mine, theirs, rel_tol=REL_TOLERANCE), (got["stepLosses"], HAND_LOOP["stepLosses"])
    # That the merged model loads in vLLM is proven by the front door (tests/test_front_door.py):
    # its iteration 2 generates with iteration 1's merged model on vLLM (one vLLM start less here).


def test_killed_train_resumes_from_its_checkpoint(tmp_path, make_config, run_cli, tiny_model):
    """SIGKILL in the middle of the epoch, after the step-2 checkpoint: the next attempt starts
    from a checkpoint, not step 0, and ends at the same step count and with the same adapter
    as an uninterrupted run (no LoRA dropout: nothing random is drawn after the restore that
    the checkpoint's RNG states would not reproduce)."""
    data = write_curated(tmp_path)
    spec = {"training": {"epochs": 1, "validationFraction": 0, "perDeviceBatchSize": 1, "gradientAccumulation": 1,
                         "checkpointEvery": 2, "reportTo": [], "lora": {"dropout": 0}}}
    cfg = make_config(tmp_path, "train", spec=spec, model=tiny_model, train_data=[data])
    out = tmp_path / "i1" / "train"
    first = subprocess.Popen(stage_args(cfg, tmp_path / "first.json"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=stage_env(), cwd=REPO)
    marker = out / "checkpoints" / "checkpoint-2" / "sheepdog_checkpoint.json"
    deadline = time.monotonic() + 600
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL, "the stage ended before it could be killed"
    assert marker.exists() and not (out / storage.MANIFEST).exists() and not (tmp_path / "i1" / "model").exists()

    proc, summary = run_cli(cfg, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming from checkpoint-" in proc.stderr
    # 6 examples, batch 1, one epoch: 6 optimizer steps, as without the kill.
    assert summary["resumedFromStep"] >= 2 and summary["step"] == summary["totalSteps"] == 6
    steps = [r["step"] for r in storage.read_jsonl(out / LOG_FILE) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not (out / "checkpoints").exists()  # the model is written: checkpoints are dropped
    assert storage.verify_manifest(out, None) is not None

    straight_dir = tmp_path / "straight"
    straight = make_config(straight_dir, "train", spec=spec, model=tiny_model, train_data=[write_curated(straight_dir)])
    proc, reference = run_cli(straight, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert reference["resumedFromStep"] == 0 and reference["step"] == 6
    resumed, uninterrupted = (_adapter(d / "i1" / "train") for d in (tmp_path, straight_dir))
    assert resumed.keys() == uninterrupted.keys() and resumed
    import torch

    for name, tensor in uninterrupted.items():
        if "lora_B" in name:  # LoRA's B starts at zero: trained means moved
            assert tensor.abs().sum() > 0, name
        # fp32 on the same CPU, the checkpoint's optimizer and RNG states restored: the same
        # weights up to summation order.
        assert torch.allclose(resumed[name], tensor, rtol=1e-5, atol=1e-7), name


def _adapter(train_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(train_dir / "adapter" / "adapter_model.safetensors"))


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on 127.0.0.1 (a free port), its store in tmp_path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
                             "--default-artifact-root", str(tmp_path / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mlflow.log", "wb"),
                            # no job runner: it starts a dozen worker processes the tracking API never uses
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "mlflow server did not come up"
        time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def test_reports_to_tensorboard_mlflow_and_wandb(tmp_path, make_config, run_cli, tiny_model, mlflow_server):
    from mlflow.tracking import MlflowClient

    data = write_curated(tmp_path)
    # The iteration's curate figures, as the curate stage records them in its manifest.
    storage.write_manifest(Path(data).parent, ["kept.jsonl"], "test", summary={"kept": 6, "keepRate": 0.5})
    spec = {"training": {"epochs": 1, "validationFraction": 0.34, "reportTo": ["tensorboard", "mlflow", "wandb"],
                         "trackingUri": mlflow_server}}
    cfg = make_config(tmp_path, "train", spec=spec, model=tiny_model, train_data=[data])
    proc, summary = run_cli(cfg, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "i1" / "train"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert list((out / "wandb").glob("offline-run-*"))

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("t")  # one sheepdog run, one experiment
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags["sheepdog.iteration"] == "all")
    child = next(r for r in runs if r.data.tags["sheepdog.iteration"] == "1")
    assert len(runs) == 2 and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.run_name == "iteration-1" and child.info.status == "FINISHED"
    assert child.data.params["training.learningRate"] == str(cfg.spec.training.learning_rate)
    assert child.data.metrics["trainLoss"] == summary["trainLoss"]
    assert child.data.metrics["evalLoss"] == summary["evalLoss"]
    assert child.data.metrics["kept"] == 6 and child.data.metrics["keepRate"] == 0.5
    history = client.get_metric_history(child.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, summary["totalSteps"] + 1))
