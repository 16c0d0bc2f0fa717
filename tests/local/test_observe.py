"""Disk -> observations: what counts as succeeded, failed or not (yet) there."""

from __future__ import annotations

import json

from sheepdog.local.observe import observe_run_dir, observe_stage
from sheepdog.stage_config import Layout
from tests.planner.simulate import make_spec


def put(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def test_states_from_files(tmp_path):
    spec = make_spec(retries=1)  # 2 attempts
    L = Layout(root=str(tmp_path), run_dir=str(tmp_path))
    i1 = tmp_path / "i1"
    assert observe_stage(spec, L, 1, "synthesize") is None

    put(i1 / "synthesize.attempts.json", {"attempts": 1, "exitCode": 0, "startedAt": "a", "finishedAt": "b"})
    put(i1 / "synthesize.summary.json", {"ok": True, "generated": 3})
    obs = observe_stage(spec, L, 1, "synthesize")
    assert (obs.state, obs.summary, obs.attempts, obs.started_at) == ("succeeded", {"ok": True, "generated": 3}, 1, "a")

    put(i1 / "curate.attempts.json", {"attempts": 1, "exitCode": 0})
    put(i1 / "curate.summary.json", "{not json")
    assert observe_stage(spec, L, 1, "curate").summary is None  # succeeded, summary unreadable

    put(i1 / "train.attempts.json", {"attempts": 1, "exitCode": 2, "message": "exit code 2: oops"})
    assert observe_stage(spec, L, 1, "train") is None  # one attempt left
    put(i1 / "train.attempts.json", {"attempts": 2, "exitCode": 2, "message": "exit code 2: oops"})
    assert observe_stage(spec, L, 1, "train").message == "exit code 2: oops"
    put(i1 / "train.summary.json", {"ok": False, "error": "CUDA out of memory"})
    obs = observe_stage(spec, L, 1, "train")
    assert (obs.state, obs.message) == ("failed", "CUDA out of memory")

    put(i1 / "evaluate.attempts.json", {"attempts": 2, "exitCode": None})  # interrupted
    assert observe_stage(spec, L, 1, "evaluate") is None


def test_outputs_made_elsewhere_count_when_manifest_and_ok_summary_exist(tmp_path):
    spec = make_spec()
    L = Layout(root=str(tmp_path), run_dir=str(tmp_path))
    put(tmp_path / "i1" / "synthesize.summary.json", {"ok": True})
    assert observe_stage(spec, L, 1, "synthesize") is None  # no manifest
    put(tmp_path / "i1" / "synthesize" / "_SUCCESS", "{}")
    assert observe_stage(spec, L, 1, "synthesize").state == "succeeded"


def test_observe_run_dir_walks_iteration_directories_only(tmp_path):
    spec = make_spec()
    L = Layout(root=str(tmp_path), run_dir=str(tmp_path))
    for it in (1, 2, 10):
        put(tmp_path / f"i{it}" / "synthesize.attempts.json", {"attempts": 1, "exitCode": 0})
    put(tmp_path / "seeds" / "x.jsonl", "")
    (tmp_path / "i0x").mkdir()
    assert [(o.iteration, o.stage) for o in observe_run_dir(spec, L)] == [(1, "synthesize"), (2, "synthesize"), (10, "synthesize")]


def test_gpu_seconds_are_the_stages_gpus_times_its_wall_time(tmp_path):
    spec = make_spec(retries=0, stages={"train": {"gpus": 2}})
    L = Layout(root=str(tmp_path), run_dir=str(tmp_path))
    i1 = tmp_path / "i1"
    times = {"startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:02:30Z"}
    put(i1 / "train.attempts.json", {"attempts": 1, "exitCode": 0, **times})
    put(i1 / "train.summary.json", {"ok": True})
    assert observe_stage(spec, L, 1, "train").gpu_seconds == 300  # 2 GPUs x 150 s
    put(i1 / "curate.attempts.json", {"attempts": 1, "exitCode": 1, **times})
    assert observe_stage(spec, L, 1, "curate").gpu_seconds == 0  # failed, and no GPU to pay for
    put(i1 / "synthesize.attempts.json", {"attempts": 1, "exitCode": 0})  # no times recorded
    put(i1 / "synthesize.summary.json", {"ok": True})
    assert observe_stage(spec, L, 1, "synthesize").gpu_seconds is None
