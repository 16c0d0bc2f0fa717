"""The local executor runs a sharded synthesize as K processes at once (the fake stage program
waits until all K have started, so a sequential launch fails), and merges their summaries."""

from __future__ import annotations

import io
import json

from sheepdog.local import run_local

SHARDED = """  stages:
    synthesize:
      shards: 3
"""


def run(project):
    out = io.StringIO()
    result = run_local(project.run_file, project.workdir, out=out, plot=False)
    return result, out.getvalue()


def test_a_sharded_synthesize_runs_k_processes_at_once(project):
    project.write_run(iterations=1, extra=SHARDED)
    result, out = run(project)
    assert result.exit_code == 0 and result.status.phase == "Succeeded", out
    synth = [d for d in project.logged() if d["stage"] == "synthesize"]
    assert sorted(d["shard"]["index"] for d in synth) == [0, 1, 2]
    assert {d["shard"]["count"] for d in synth} == {3}
    assert [d["shard"] for d in project.logged() if d["stage"] != "synthesize"] == [{"count": 1}] * 2
    i1 = project.workdir / "i1"
    for k in range(3):  # each shard its own log and summary
        assert json.loads((i1 / f"synthesize.shard-{k}.summary.json").read_text())["shard"] == k
        assert "synthesize: 3/3" in (i1 / f"synthesize.shard-{k}.log").read_text()
    summary = json.loads((i1 / "synthesize.summary.json").read_text())
    assert (summary["generated"], summary["assessed"], summary["parseFailures"], summary["pods"]) == (10, 9, 1, 3)
    assert json.loads((i1 / "synthesize.attempts.json").read_text())["attempts"] == 1
    [rec] = project.report()["iterations"]
    assert (rec["generated"], rec["assessed"], rec["parseFailures"]) == (10, 9, 1)


def test_a_failed_shard_is_retried_alone(project, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_SHARD_ONCE", "1")
    project.write_run(iterations=1, retries=1, extra=SHARDED)
    result, out = run(project)
    assert result.exit_code == 0 and result.status.phase == "Succeeded", out
    synth = [d["shard"]["index"] for d in project.logged() if d["stage"] == "synthesize"]
    assert sorted(synth) == [0, 1, 1, 2]  # only shard 1 ran again
    record = json.loads((project.workdir / "i1" / "synthesize.attempts.json").read_text())
    assert record["attempts"] == 2 and record["exitCode"] == 0 and record["shards"] == 3


def test_a_shard_that_keeps_failing_fails_the_stage_with_its_message(project, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1:synthesize")
    project.write_run(iterations=1, retries=0, extra=SHARDED)
    result, out = run(project)
    assert result.status.phase == "Failed"
    record = json.loads((project.workdir / "i1" / "synthesize.attempts.json").read_text())
    assert record["exitCode"] == 1 and record["message"].startswith("shard 0: boom in iteration 1 synthesize")
