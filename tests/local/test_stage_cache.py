"""The stage cache on one machine (sheepdog/local/stage_cache.py) with the fake stage program:
a stage another run finished with the same key is reused, not run; a run waits for a stage
another run is producing; links, not copies, make the outputs this run's."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from sheepdog.local import run_local
from sheepdog.planner.stage_cache_policy import stage_key
from sheepdog.local.stage_cache import cache_inputs
from sheepdog.api.load import load_run
from sheepdog.stage_config import Layout

THRESHOLD = "  filter:\n    threshold: {threshold}\n"


def run_in(project, workdir, cache, **kwargs):
    out = io.StringIO()
    result = run_local(project.run_file, project.root / workdir, out=out, plot=False, stage_cache=cache, **kwargs)
    return result, out.getvalue()


def invocations_since(project, n):
    return project.invocations()[n:]


def status_of(project, workdir):
    return json.loads((project.root / workdir / "status.json").read_text())


def test_a_second_run_with_another_threshold_reuses_synthesize(project):
    cache = project.root / "cache"
    project.write_run(iterations=1, extra=THRESHOLD.format(threshold=5))
    first, _ = run_in(project, "a", cache)
    assert first.status.phase == "Succeeded"
    assert project.invocations() == [(1, "synthesize"), (1, "curate"), (1, "train")]

    project.write_run(iterations=1, extra=THRESHOLD.format(threshold=8))
    second, out = run_in(project, "b", cache)
    assert second.status.phase == "Succeeded"
    # no second synthesize process; curate and train (their keys differ) ran
    assert invocations_since(project, 3) == [(1, "curate"), (1, "train")]
    synth = status_of(project, "b")["iterations"][0]["stages"]["synthesize"]
    producer = str(project.root.resolve() / "a" / "i1" / "synthesize")
    assert synth["phase"] == "Succeeded" and synth["reusedFrom"] == producer and synth["attempts"] == 0
    assert synth["cacheKey"] == status_of(project, "a")["iterations"][0]["stages"]["synthesize"]["cacheKey"]
    assert status_of(project, "b")["iterations"][0]["stages"]["curate"]["cacheKey"] != \
        status_of(project, "a")["iterations"][0]["stages"]["curate"]["cacheKey"]
    # the producer's figures, and its output read through a link (no copy): both workdirs link
    # to the one object in the cache
    assert second.status.iterations[0].generated == 10
    stored = cache.resolve() / "objects" / synth["cacheKey"] / "i1" / "synthesize"
    linked = project.root / "b" / "i1" / "synthesize"
    assert linked.is_symlink() and linked.resolve() == stored == Path(producer).resolve()
    assert os.readlink(linked) == f"../../cache/objects/{synth['cacheKey']}/i1/synthesize"
    assert (linked / "output.txt").read_text() == "synthesize"
    curate = [d for d in project.logged() if d["stage"] == "curate"][-1]
    assert curate["reuseLinks"] == {str(project.root.resolve() / "b/i1/synthesize"): str(stored)}
    assert f"[reused] iteration 1 synthesize: reused {producer}" in out


def test_a_raised_iterations_run_reuses_iteration_one(project):
    cache = project.root / "cache"
    project.write_run(iterations=1)
    run_in(project, "a", cache)
    project.write_run(iterations=2)
    second, _ = run_in(project, "c", cache)
    assert second.status.phase == "Succeeded"
    assert invocations_since(project, 3) == [(2, "synthesize"), (2, "curate"), (2, "train")]
    stages = status_of(project, "c")["iterations"][0]["stages"]
    assert all(stages[s]["reusedFrom"].endswith(f"/a/i1/{s}") for s in ("synthesize", "curate", "train"))
    # iteration 2 generates with iteration 1's model, at this run's path (a link to the producer's)
    model = project.root / "c" / "i1" / "model"
    assert model.is_symlink() and (model / "config.json").is_file()
    synth2 = [d for d in project.logged() if d["stage"] == "synthesize"][-1]
    assert synth2["generator"] == str(project.root.resolve() / "c" / "i1" / "model")
    assert [r["model"] for r in json.loads((project.root / "c" / "report.json").read_text())["iterations"]] == ["i1/model", "i2/model"]


def test_the_default_cache_is_beside_the_workdir_and_none_turns_it_off(project):
    project.write_run(iterations=1)
    run_local(project.run_file, project.root / "runs" / "one", out=io.StringIO(), plot=False)
    assert list((project.root / "runs" / ".stage-cache").glob("*.json"))  # published there
    run_local(project.run_file, project.root / "runs" / "two", out=io.StringIO(), plot=False)
    assert len(project.invocations()) == 3  # all three reused
    run_local(project.run_file, project.root / "runs" / "three", out=io.StringIO(), plot=False, stage_cache=None)
    assert project.invocations()[3:] == [(1, "synthesize"), (1, "curate"), (1, "train")]
    off = project.root / "runs" / "three" / "status.json"
    assert "cacheKey" not in json.dumps(json.loads(off.read_text()))


def test_a_rerun_of_a_deleted_workdir_reuses_its_stages_until_the_cache_goes(project):
    cache = project.root / "cache"
    project.write_run(iterations=1)
    run_in(project, "a", cache)
    shutil.rmtree(project.root / "a")  # the links go; the outputs stay in the cache
    again, _ = run_in(project, "a", cache)
    assert again.status.phase == "Succeeded" and project.invocations()[3:] == []
    assert (project.root / "a" / "i1" / "model" / "config.json").is_file()
    assert all(again.status.iterations[0].stages[s].reused_from for s in ("synthesize", "curate", "train"))
    shutil.rmtree(project.root / "a")
    shutil.rmtree(cache / "objects")  # the outputs themselves gone: a miss
    run_in(project, "a", cache)
    assert project.invocations()[3:] == [(1, "synthesize"), (1, "curate"), (1, "train")]


def test_a_moved_output_is_linked_back_after_a_kill(project):
    """A kill between the move into the cache and the link leaves the workdir without the
    stage's directory: the next settle links it."""
    from sheepdog.local.stage_cache import LocalStageCache
    from sheepdog.local.workdir_files import read_status

    cache = project.root / "cache"
    project.write_run(iterations=1)
    run_in(project, "a", cache)
    work = project.root / "a"
    key = read_status(work).iterations[0].stages["curate"].cache_key
    (work / "i1" / "curate").unlink()  # as if killed after the rename
    run = load_run(project.run_file)
    root = str(work.resolve())
    entry = cache / f"{key}.json"
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "state": "running", "pid": os.getpid()}))
    layout = Layout(root=str(project.root.resolve()), run_dir=root)  # the run file's paths resolve there
    LocalStageCache(cache, work, layout, run.spec).settle(read_status(work))
    assert (work / "i1" / "curate").is_symlink() and (work / "i1" / "curate" / "_SUCCESS").is_file()
    assert json.loads(entry.read_text())["state"] == "succeeded"


def _entry_file(project, cache, stage="synthesize"):
    run = load_run(project.run_file)
    root = str((project.root / "x").resolve())
    key = stage_key(run.spec, 1, stage, cache_inputs(run.spec, Layout(root=str(project.root), run_dir=root)))
    return cache / f"{key}.json"


def test_a_run_waits_for_the_producer_then_reuses(project):
    cache = project.root / "cache"
    project.write_run(iterations=1)
    run_in(project, "a", cache)
    entry = _entry_file(project, cache)
    published = entry.read_text()
    holder = subprocess.Popen(["sleep", "60"])  # a live producer process
    try:
        entry.write_text(json.dumps({**json.loads(published), "state": "running", "pid": holder.pid}))
        done = threading.Event()
        thread = threading.Thread(target=lambda: (run_in(project, "b", cache, wait_seconds=0.05), done.set()))
        thread.start()
        status_file = project.root / "b" / "status.json"
        for _ in range(400):  # until b says whom it waits for
            if status_file.exists() and json.loads(status_file.read_text())["reason"] == "WaitingForStage":
                break
            time.sleep(0.05)
        status = json.loads(status_file.read_text())
        assert status["reason"] == "WaitingForStage" and not done.is_set()
        waiting = status["iterations"][0]["stages"]["synthesize"]
        assert waiting["phase"] == "Pending" and waiting["waitingFor"].endswith("/a/i1/synthesize")
        assert "waits for" in status["message"]
        entry.write_text(published)  # the producer finished
        thread.join(30)
        assert done.is_set()
    finally:
        holder.kill()
        holder.wait()
    assert project.invocations()[3:] == []  # everything reused (same spec)
    assert status_of(project, "b")["iterations"][0]["stages"]["synthesize"]["reusedFrom"]


def test_a_dead_producers_claim_does_not_block(project):
    cache = project.root / "cache"
    project.write_run(iterations=1)
    run_in(project, "a", cache)
    entry = _entry_file(project, cache)
    dead = subprocess.Popen(["true"])
    dead.wait()
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "state": "running", "pid": dead.pid}))
    result, _ = run_in(project, "b", cache, wait_seconds=0.05)
    assert result.status.phase == "Succeeded"
    assert project.invocations()[3:4] == [(1, "synthesize")]  # produced it itself
    assert json.loads(entry.read_text())["owner"].startswith(str((project.root / "b").resolve()) + "#")


def test_a_stage_whose_output_is_never_offered_is_not_claimed(project):
    # storage.keepModels: last may delete a train's model later: it is never an entry, so a
    # claim would only make another run wait for nothing
    from sheepdog.api.status import RunStatus
    from sheepdog.local.stage_cache import LocalStageCache
    from sheepdog.planner import StartStage

    cache = project.root / "cache"
    project.write_run(iterations=1, extra="  storage:\n    keepModels: last\n")
    run_in(project, "a", cache)
    status = RunStatus.model_validate(status_of(project, "a"))
    train_key = status.record(1).stages["train"].cache_key
    synth_key = status.record(1).stages["synthesize"].cache_key
    assert train_key and not (cache / f"{train_key}.json").exists()  # not published
    run = load_run(project.run_file)
    layout = Layout(root=str(project.root.resolve()), run_dir=str((project.root / "b").resolve()))  # seeds/, models/
    index = LocalStageCache(cache, project.root / "b", layout, run.spec)
    assert index.claim(StartStage(1, "train", config=None), status)
    assert not (cache / f"{train_key}.json").exists()  # no claim written
    (cache / f"{synth_key}.json").unlink()
    assert index.claim(StartStage(1, "synthesize", config=None), status)
    assert json.loads((cache / f"{synth_key}.json").read_text())["state"] == "running"  # offered: claimed
