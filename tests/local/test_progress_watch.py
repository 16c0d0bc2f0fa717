"""`sheepdog run` shows a running train's progress: progress.json -> status.json (the same
stages.train.progress field the operator writes) and a [progress] line on the terminal."""

from __future__ import annotations

import io
import json
import threading
import time

from sheepdog.local import run_local


def train_record(status_path):
    try:
        status = json.loads(status_path.read_text())
    except (OSError, ValueError):
        return None
    for rec in status.get("iterations") or ():
        if rec.get("iteration") == 1:
            return (rec.get("stages") or {}).get("train")
    return None


def test_a_running_train_shows_its_progress_then_its_summary(project, monkeypatch):
    gate = project.root / "let-train-finish"
    monkeypatch.setenv("FAKE_TRAIN_GATE", str(gate))  # the fake train waits at step 2 of 4
    out = io.StringIO()
    runner = threading.Thread(target=run_local, args=(project.run_file, project.workdir),
                              kwargs={"out": out, "plot": False, "progress_seconds": 0.05})
    runner.start()
    try:
        seen = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and runner.is_alive():
            record = train_record(project.workdir / "status.json")
            if record and (record.get("progress") or {}).get("step") == 2:  # where the fake waits
                seen = record
                break
            time.sleep(0.05)
    finally:
        gate.touch()
        runner.join(timeout=120)
    assert seen is not None, out.getvalue()
    progress = seen["progress"]
    assert {k: progress[k] for k in ("step", "totalSteps", "epoch", "etaSeconds")} == \
        {"step": 2, "totalSteps": 4, "epoch": 0.5, "etaSeconds": 4.0}
    assert progress["observedAt"].endswith("Z")
    assert "[progress] iteration 1 train: step 2/4, epoch 0.50, eta 0:00:04" in out.getvalue()
    final = train_record(project.workdir / "status.json")
    assert final["phase"] == "Succeeded" and "progress" not in final  # the summary reports the end


def test_a_failed_train_keeps_how_far_it_got(project, monkeypatch):
    project.write_run(retries=0)
    monkeypatch.setenv("FAKE_FAIL", "1:train")
    out = io.StringIO()
    # no poll while it runs (a minute apart): the read when the stage has ended is what counts
    result = run_local(project.run_file, project.workdir, out=out, plot=False, progress_seconds=60)
    assert result.exit_code == 1
    record = train_record(project.workdir / "status.json")
    assert record["phase"] == "Failed" and record["progress"]["step"] == 2, record
    assert result.status.record(1).stages["train"].progress.step == 2
