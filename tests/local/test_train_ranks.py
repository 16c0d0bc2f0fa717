"""`sheepdog run` starts a train of `gpus: N` as N ranks on the CPU, with the command its pod
runs (torchrun --standalone --nproc-per-node=N): a laptop reproduces a pod (issue 12)."""

from __future__ import annotations

import io
import json

from sheepdog.api.load import load_run
from sheepdog.kube.jobs import container_command
from sheepdog.local import run_local
from sheepdog.planner import stage_config
from sheepdog.stage_config import kube_layout


def test_train_gpus_2_runs_two_ranks_with_the_pods_command(project):
    project.write_run(extra="  stages:\n    train: {gpus: 2}\n")
    out = io.StringIO()
    result = run_local(project.run_file, project.workdir, out=out, plot=False)
    assert result.exit_code == 0 and result.status.phase == "Succeeded", out.getvalue()

    train = [d for d in project.logged() if d["stage"] == "train"]
    assert sorted(d["rank"] for d in train) == ["0", "1"] and {d["worldSize"] for d in train} == {"2"}
    attempts = json.loads((project.workdir / "i1" / "train.attempts.json").read_text())
    assert attempts["attempts"] == 1
    local = attempts["command"]  # the program without its config document
    run = load_run(project.run_file)
    config = stage_config(run.metadata.name, run.spec, 1, "train", kube_layout(run.metadata.name, run.spec))
    pod = container_command(run.spec, config, "demo-i1-train")
    assert pod[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=2"]
    # the same launcher and flags; only where torchrun lives and the stage module (fake) differ
    assert local[0].endswith("/torchrun") and local[1:4] == pod[1:4]
    assert local[4:] == ["-m", "sheepdog_fake_jobs", "train"]
    [rec] = project.report()["iterations"]
    assert rec["stages"]["train"]["summary"]["worldSize"] == 2  # what rank 0 reported


def test_one_rank_is_the_plain_stage_command(project):
    project.write_run(extra="  stages:\n    train: {gpus: 1}\n")
    result = run_local(project.run_file, project.workdir, out=io.StringIO(), plot=False)
    assert result.exit_code == 0
    [train] = [d for d in project.logged() if d["stage"] == "train"]
    assert train["rank"] is None  # no launcher
    attempts = json.loads((project.workdir / "i1" / "train.attempts.json").read_text())
    assert attempts["command"][1:] == ["-m", "sheepdog_fake_jobs", "train"]
