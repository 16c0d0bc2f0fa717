"""Multi-rank train Jobs run for real (issue 12): the operator's Job, its exact container
command, executed by the pod executor on the CPU (gloo), with the tiny model.

Synthesize and curate are kwok pods with canned summaries (conftest: RUN_SUMMARIES); what
train reads from curate, a small kept.jsonl with its _SUCCESS manifest, is put on the run's
volume first. Train is steered onto a pod-executor node that has 2 fake GPUs:
- `gpus: 2, nodes: 1`: one pod, `torchrun --standalone --nproc-per-node=2`;
- `gpus: 1, nodes: 2`: an Indexed Job of two pods meeting at `<job>-0.<job>-rdzv:29500` (the
  pod executor resolves the headless Service's names to 127.0.0.1); one rank's worker is
  SIGKILLed in the middle of training and both pods' torchrun agents restart the group in place
  (docs/design.md, "GPUs"). This one test proves the shape and the group restart (CI budget).
Run one two-node train per machine at a time: every executor pod is 127.0.0.1, so a second one
(another pytest process) would share port 29500 and the rendezvous (seen: both hung until the
rendezvous timeout, 900 s).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.cluster.fixture import PodExecutorProcess
from tests.cluster.pod_executor import TOLERATION
from tests.jobs.conftest import tiny_model  # noqa: F401  (session fixture: the converted SmolLM2)
from tests.operator.conftest import run_manifest, stage_jobs, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(1500)]

# Tiny on purpose (CI budget): 8 short pairs, one epoch, one example a step.
TRAINING = {"maxSamples": 8, "epochs": 1, "cutoffLength": 96, "warmupSteps": 0, "validationFraction": 0,
            "gradientAccumulation": 1, "perDeviceBatchSize": 1, "zeroStage": 2, "precision": "fp32",
            "learningRate": 1.0e-4}
PAIRS = [{"instruction": f"Name a colour number {i}.", "input": "", "output": c}
         for i, c in enumerate(["red", "blue", "green", "black", "white", "pink", "grey", "brown"])]
# The train program logs its world size at the start of training (summary key worldSize or world).
WORLD_2 = re.compile(r"world(?:Size|_size| size)?\W{0,3}2\b")


def world_2_lines(log: str) -> list[str]:
    """The train program's log lines saying world size 2, one per rank (not the summary line,
    which rank 0 alone prints, nor torchrun's own, e.g. `group_world_size=2`)."""
    return [line for line in log.splitlines()
            if WORLD_2.search(line) and "train:" in line and not line.lstrip().startswith("{")]


@pytest.fixture
def rank_executor(cluster, namespace, tmp_path, tiny_model, monkeypatch):  # noqa: F811
    """A pod-executor node with 2 fake GPUs; its claim `sheepdog-data` holds models/tiny."""
    volume_root = tmp_path / "volumes"
    claim = volume_root / "sheepdog-data"
    (claim / "models").mkdir(parents=True)
    (claim / "models" / "tiny").symlink_to(Path(tiny_model).resolve(), target_is_directory=True)
    # The Job runs `torchrun`/`python` from PATH: the venv's, with torch and sheepdog_jobs.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("SHEEPDOG_TORCH_THREADS", "1")  # two ranks on a 2-core machine
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # What a compile killed midway leaves: DeepSpeed's CPU comm op's lock. The train program
    # builds no op on the CPU, so no rank waits on it (a rank that did waited for ever in CI).
    extensions = tmp_path / "torch_extensions"
    (extensions / "deepspeed_shm_comm").mkdir(parents=True)
    (extensions / "deepspeed_shm_comm" / "lock").touch()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions))
    # the GPU label too, in case the operator's defaults select GPU nodes by it
    label = {"sheepdog.test/ranks": namespace}
    node = f"ranks-{namespace}"
    ex = PodExecutorProcess(cluster, node, volume_root, labels={**label, "nvidia.com/gpu.present": "true"},
                            capacity={"nvidia.com/gpu": "2"})
    try:
        yield ex, label, claim, cluster.control_plane.state_dir / f"pod-executor-{node}"
    finally:
        ex.stop()


def start_run(cluster, namespace: str, name: str, claim: Path, label: dict, train: dict, retries: int,
              training: dict = TRAINING) -> None:
    from sheepdog_jobs import storage

    curate = claim / "runs" / name / "i1" / "curate"  # where train reads iteration 1's kept pairs
    curate.mkdir(parents=True)
    storage.write_jsonl(curate / "kept.jsonl", PAIRS)
    storage.write_manifest(curate, [curate / "kept.jsonl"], "test", counts={"kept": len(PAIRS)})
    stages = {
        "synthesize": {"gpus": 1, "tensorParallel": 1},
        "curate": {},
        "train": {**train, "nodeSelector": label, "tolerations": [TOLERATION]},
    }
    cluster.apply(run_manifest(name, namespace, iterations=1, stages=stages, training=training, retries=retries))


def pod_logs(work: Path, namespace: str, pod_prefix: str) -> dict[str, str]:
    """The output of every pod the executor ran whose name starts with pod_prefix."""
    return {p.parent.name: p.read_text(errors="replace")
            for p in sorted(work.glob(f"{namespace}.{pod_prefix}*/output.log"))}


def check_model_loads(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(**tok("Name a colour.", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()


def world_size(summary: dict) -> int:
    return summary.get("worldSize", summary.get("world"))


def succeeded_train(cluster, namespace: str, name: str) -> tuple[dict, dict]:
    """Waits for the run; it Succeeded with its train stage in one attempt of world size 2.
    Returns the train stage record and the train Job."""
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=900)
    assert status["phase"] == "Succeeded", status
    [rec] = status["iterations"]
    train = rec["stages"]["train"]
    assert train["attempts"] == 1 and world_size(train["summary"]) == 2, train
    [job] = [j for j in stage_jobs(cluster, namespace, name) if j["metadata"]["name"] == f"{name}-i1-train"]
    return train, job


def test_two_ranks_in_one_pod(cluster, namespace, storage, crd, rank_executor, operator_process):
    """Also the ZeRO-3 case with a validation split: every ZeRO-3 collective is matched across the
    ranks (an uneven validation shard once hung here), ranks train on equal shares, and rank 0 alone
    writes the summary."""
    executor, label, claim, work = rank_executor
    name = "ranks2x1"
    training = {**TRAINING, "zeroStage": 3, "validationFraction": 0.2}
    start_run(cluster, namespace, name, claim, label, {"gpus": 2, "nodes": 1}, retries=0, training=training)
    train, job = succeeded_train(cluster, namespace, name)
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=2"], cmd
    [log] = pod_logs(work, namespace, f"{name}-i1-train").values()
    assert len(world_2_lines(log)) == 2, log[-3000:]  # both ranks say so
    summary = train["summary"]
    assert summary["validationSamples"] >= 1 and summary["samples"] + summary["validationSamples"] == len(PAIRS)
    # 1 example a device x 1 accumulation x 2 ranks; the shorter shard repeats one to even them
    assert summary["effectiveBatchSize"] == 2 and summary["step"] == summary["totalSteps"] > 0, summary
    # rank 0 alone printed the summary line (the termination message), with both losses
    [printed] = [json.loads(line) for line in log.splitlines() if line.lstrip().startswith("{")]
    assert math.isfinite(printed["trainLoss"]) and math.isfinite(printed["evalLoss"]), printed
    check_model_loads(claim / "runs" / name / "i1" / "model")


def marked_checkpoints(directory: Path) -> list[int]:
    """Steps of the checkpoints every rank has finished writing (rank 0's marker is in them)."""
    from sheepdog_jobs.training.checkpoints import MARKER, checkpoints

    return [step for step, d in checkpoints(directory) if (d / MARKER).exists()]


def _names(config_file: bytes, volume: Path) -> bool:
    try:
        return str(volume) in Path(config_file.decode()).read_text()
    except (OSError, UnicodeDecodeError):
        return False


def train_worker(volume: Path, rank: int) -> int:
    """The pid of the train worker of global rank `rank`, a child of one pod's torchrun agent:
    its config file (the pod's mounted ConfigMap, named on its command line) holds the run's
    volume (the config's paths), its environment its rank."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = dict(kv.split(b"=", 1) for kv in (proc / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except OSError:  # gone, or not ours
            continue
        if (b"sheepdog_jobs" in argv and b"--config" in argv and _names(argv[argv.index(b"--config") + 1], volume)
                and b"TORCHELASTIC_RESTART_COUNT" in env and env.get(b"RANK") == str(rank).encode()):
            found.append(int(proc.name))
    assert len(found) == 1, f"train workers of rank {rank}: {found}"
    return found[0]


def test_two_pods_restart_as_a_group_when_a_rank_is_killed(cluster, namespace, storage, crd, rank_executor,
                                                           operator_process):
    executor, label, claim, work = rank_executor
    name = "ranks1x2"
    # retries 1: one group restart in place (torchrun --max-restarts=1); a checkpoint every 2 of
    # the 4 steps (8 pairs / world 2), so the restarted group has one to resume from.
    start_run(cluster, namespace, name, claim, label, {"gpus": 1, "nodes": 2}, retries=1,
              training={**TRAINING, "checkpointEvery": 2})
    out = claim / "runs" / name / "i1" / "train"
    cluster.wait_for("the two ranks' checkpoint at step 2", lambda: 2 in marked_checkpoints(out / "checkpoints"),
                     timeout=600, interval=0.2)
    # rank 0: the rank that hosts the round's store and writes the outputs
    os.kill(train_worker(claim, rank=0), signal.SIGKILL)
    resume_from = max(marked_checkpoints(out / "checkpoints"))  # 2 unless step 4's was already marked

    train, job = succeeded_train(cluster, namespace, name)
    assert job["spec"]["completionMode"] == "Indexed" and job["status"]["succeeded"] == 2
    assert not job["status"].get("failed"), job["status"]  # no pod failed: no Job attempt spent
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"--rdzv-endpoint={name}-i1-train-0.{name}-i1-train-rdzv:29500" in cmd, cmd
    assert "--max-restarts=1" in cmd, cmd
    logs = pod_logs(work, namespace, f"{name}-i1-train")
    assert len(logs) == 2, sorted(logs)  # the same two pods, none replaced
    for pod, text in logs.items():
        # each agent restarted its rank once (the killed rank's for its failure, the other for
        # the node waiting at the rendezvous, or for its own rank's broken collective), both
        # met twice, and each round's rank in this pod was in a world of 2
        assert text.count("will restart worker group") == 1, (pod, text[-3000:])
        assert text.count("Rendezvous complete for workers") == 2, (pod, text[-3000:])
        assert len(world_2_lines(text)) == 2, (pod, text[-3000:])
    assert any("Worker group FAILED" in text for text in logs.values())
    summary = train["summary"]
    # resumed from the checkpoint, to the same 4 optimizer steps as a run without the kill
    assert (summary["resumedFromStep"], summary["step"], summary["totalSteps"]) == (resume_from, 4, 4), summary
    from sheepdog_jobs.training.progress import read_log

    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4]  # each step logged once
    check_model_loads(claim / "runs" / name / "i1" / "model")
