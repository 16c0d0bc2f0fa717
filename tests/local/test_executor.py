"""run_local with the fake stage program: the whole loop, resume, retries, failure."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from sheepdog.local import WorkdirBusy, run_local
from sheepdog.local.workdir_files import WorkdirLock

THREE = ("synthesize", "curate", "train")


def stages(n: int, order=THREE) -> list[tuple[int, str]]:
    return [(i, s) for i in range(1, n + 1) for s in order]


def run(project, **kwargs):
    out = io.StringIO()
    result = run_local(project.run_file, project.workdir, out=out, plot=kwargs.pop("plot", False), **kwargs)
    return result, out.getvalue()


def test_a_run_goes_to_the_end_and_reports_every_iteration(project):
    project.write_run(iterations=2)
    result, out = run(project, plot=True)
    assert result.exit_code == 0 and result.status.phase == "Succeeded"
    assert project.invocations() == stages(2)
    report = project.report()
    assert report["run"] == "demo" and report["phase"] == "Succeeded"
    assert [(r["iteration"], r["generated"], r["assessed"], r["parseFailures"], r["kept"], r["keepRate"])
            for r in report["iterations"]] == [(1, 10, 9, 1, 4, 0.5), (2, 20, 18, 2, 8, 0.5)]
    assert [r["model"] for r in report["iterations"]] == ["i1/model", "i2/model"]
    assert report["iterations"] == project.status()["iterations"]  # the same records
    # one line per finished stage with its counts, then the table
    assert "[done] iteration 1 synthesize succeeded: generated 10, assessed 9, parse failures 1" in out
    assert "[done] iteration 2 curate succeeded: kept 8, keep rate 0.5" in out
    table = out[out.index("iteration  generated"):]
    assert table.splitlines()[2].split()[:6] == ["1", "10", "9", "1", "4", "50.0%"]
    png = project.workdir / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (project.workdir / "i1" / "synthesize.log").read_text().count("synthesize: 3/3") == 1


def test_lineage_reaches_the_stage_programs(project):
    project.write_run(iterations=3, strategy="total_base")
    run(project)
    trains = {d["iteration"]: d for d in project.logged() if d["stage"] == "train"}
    wd = str(project.workdir.resolve())
    assert trains[3]["trainData"] == [f"{wd}/i{t}/curate/kept.jsonl" for t in (1, 2, 3)]
    assert trains[3]["base"] == str(project.root / "models" / "tiny")  # found beside the run file
    gens = {d["iteration"]: d["generator"] for d in project.logged() if d["stage"] == "synthesize"}
    assert gens == {1: str(project.root / "models" / "tiny"), 2: f"{wd}/i1/model", 3: f"{wd}/i2/model"}


def test_a_finished_run_run_again_runs_nothing(project):
    project.write_run(iterations=2)
    run(project)
    before = project.invocations()
    result, out = run(project)
    assert result.exit_code == 0 and project.invocations() == before
    assert "[done]" not in out


def test_resume_after_killing_the_executor_mid_run(project):
    project.write_run(iterations=2)
    env = dict(os.environ, FAKE_KILL_PARENT="2:curate")
    killed = subprocess.run(
        [sys.executable, "-m", "sheepdog.cli", "run", str(project.run_file), "--workdir", str(project.workdir),
         "--no-plot"], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert project.invocations() == stages(1) + [(2, "synthesize"), (2, "curate")]
    assert project.status()["phase"] == "Running" and project.status()["stage"] == "curate"

    result, _ = run(project)  # the same command again
    assert result.status.phase == "Succeeded"
    calls = project.invocations()
    assert calls == stages(1) + [(2, "synthesize"), (2, "curate"), (2, "curate"), (2, "train")]
    # the interrupted attempt did not count as a retry
    record = result.status.record(2).stages["curate"]
    assert (record.phase, record.attempts) == ("Succeeded", 1)


def test_a_failing_stage_is_retried_then_fails_the_run(project, monkeypatch):
    project.write_run(retries=2)
    monkeypatch.setenv("FAKE_FAIL", "1:curate")
    result, out = run(project)
    assert result.exit_code == 1
    assert project.invocations() == [(1, "synthesize")] + [(1, "curate")] * 3
    report = project.report()
    assert report["phase"] == "Failed" and report["reason"] == "StageFailed"
    assert report["message"] == "iteration 1 curate failed after 3 attempts: boom in iteration 1 curate"
    assert "warning: iteration 1 curate failed after 3 attempts" in out
    # Failed is final: running again does not re-run anything
    again, _ = run(project)
    assert again.exit_code == 1 and project.invocations().count((1, "curate")) == 3


def test_an_error_no_retry_can_fix_fails_the_stage_at_its_first_attempt(project, monkeypatch):
    """Exit code 3 (EXIT_UNFIXABLE), as the podFailurePolicy's FailJob rule in a cluster."""
    project.write_run(retries=2)
    monkeypatch.setenv("FAKE_UNFIXABLE", "1:curate")
    result, _ = run(project)
    assert result.exit_code == 1 and project.invocations() == [(1, "synthesize"), (1, "curate")]
    assert result.status.message == "iteration 1 curate failed after 1 attempt: boom in iteration 1 curate"


def test_retry_failed_retries_only_the_failed_stage(project, monkeypatch):
    project.write_run(iterations=2)
    monkeypatch.setenv("FAKE_FAIL", "1:train")
    assert run(project)[0].exit_code == 1
    monkeypatch.delenv("FAKE_FAIL")
    result, out = run(project, retry_failed=True)
    assert result.exit_code == 0 and "retrying iteration 1 train" in out
    calls = project.invocations()
    assert calls.count((1, "synthesize")) == 1 and calls.count((1, "curate")) == 1
    assert calls.count((1, "train")) == 3  # 2 failed attempts (retries 1), then the retry
    assert calls[-3:] == [(2, "synthesize"), (2, "curate"), (2, "train")]


def test_a_failure_message_without_summary_is_the_stderr_tail(project, monkeypatch):
    project.write_run(retries=0)
    monkeypatch.setenv("FAKE_CRASH", "1:synthesize")
    result, _ = run(project)
    assert result.status.message == ("iteration 1 synthesize failed after 1 attempt: exit code 4: "
                                     "synthesize: 3/3 | Traceback (most recent call last): | "
                                     "ValueError: the tokenizer is missing")


def test_one_failed_attempt_then_success(project, monkeypatch):
    project.write_run(iterations=2)
    monkeypatch.setenv("FAKE_FAIL_ONCE", "2:synthesize")
    result, out = run(project)
    assert result.exit_code == 0
    assert project.invocations().count((2, "synthesize")) == 2
    assert result.status.record(2).stages["synthesize"].attempts == 2


def test_a_missing_summary_warns_and_the_run_goes_on(project, monkeypatch):
    monkeypatch.setenv("FAKE_NO_SUMMARY", "1:synthesize")
    result, out = run(project)
    assert result.exit_code == 0
    assert "warning: iteration 1 synthesize succeeded but its summary is missing" in out
    first = project.report()["iterations"][0]
    assert first["kept"] == 4 and "generated" not in first


def test_stopping_locally(project, monkeypatch):
    project.write_run(iterations=3, extra="  evaluation: {enabled: true}\n  stopping: {metric: ifeval-smoke.promptStrict}\n")
    monkeypatch.setenv("FAKE_METRICS", "0.4,0.35,0.9")
    result, _ = run(project)
    assert (result.status.reason, result.status.best_iteration, result.status.best_model) == ("EarlyStopped", 1, "i1/model")
    assert project.invocations() == [(0, "evaluate")] + stages(2, THREE + ("evaluate",))


def test_m0_is_evaluated_first_and_gains_and_stopping_are_relative_to_it(project, monkeypatch):
    project.write_run(iterations=3, extra="  evaluation: {enabled: true}\n  stopping: {metric: ifeval-smoke.promptStrict}\n")
    monkeypatch.setenv("FAKE_BASELINE", "0.5")
    monkeypatch.setenv("FAKE_METRICS", "0.45,0.9")
    result, out = run(project)
    assert project.invocations() == [(0, "evaluate")] + stages(1, THREE + ("evaluate",))
    base = str(project.root / "models" / "tiny")
    evaluations = {d["iteration"]: d for d in project.logged() if d["stage"] == "evaluate"}
    assert evaluations[0]["modelOut"] == base  # M_0 is the base model
    s = result.status
    assert (s.reason, s.best_iteration, s.best_model) == ("EarlyStopped", 0, base)
    m0, first = project.report()["iterations"]
    bookkeeping = ("stages", "startedAt", "finishedAt", "gpuSeconds")
    assert {k for k in m0 if k not in bookkeeping} == {"iteration", "model", "evaluation"}
    assert (m0["iteration"], m0["model"], m0["evaluation"]) == (0, base, {"ifeval-smoke.promptStrict": 0.5})
    assert first["evaluationGain"] == {"ifeval-smoke.promptStrict": -0.05}
    assert (project.workdir / "i0" / "evaluate.summary.json").is_file()
    assert "ifeval-smoke.promptStrict=0.45(-0.05)" in out
    # resumed: nothing runs again, M_0 included
    before = project.invocations()
    run(project)
    assert project.invocations() == before


def test_suspend_in_the_file_stops_before_the_next_stage_and_resume_continues(project):
    project.write_run(iterations=2, extra="  suspend: true\n")
    result, out = run(project)
    assert result.status.phase == "Suspended" and result.exit_code == 0
    assert project.invocations() == [] and "suspended" in out
    project.write_run(iterations=2)
    result, out = run(project)
    assert result.status.phase == "Succeeded" and project.invocations() == stages(2)
    assert result.status.observed_generation == 2  # the edit was noticed


def test_raising_iterations_after_the_end_extends_the_run(project):
    run(project)
    project.write_run(iterations=2)
    result, _ = run(project)
    assert result.status.phase == "Succeeded" and project.invocations() == stages(2)


def test_a_second_executor_on_the_same_workdir_is_refused(project):
    with WorkdirLock(project.workdir):
        with pytest.raises(WorkdirBusy, match="another sheepdog run is working here"):
            run(project)
    assert project.invocations() == []


def test_a_workdir_of_another_run_is_refused(project):
    project.write_run(iterations=2)
    from sheepdog.local import InputError

    run(project)
    project.run_file.write_text(project.run_file.read_text().replace("name: demo", "name: other"))
    with pytest.raises(InputError, match="holds run 'demo', not 'other'"):
        run(project)


def test_lowered_retries_still_rerun_an_interrupted_attempt(project):
    project.write_run(iterations=2)
    import json

    run(project)
    record = project.workdir / "i2" / "train.attempts.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps(data | {"attempts": 3, "exitCode": None}))  # killed in attempt 3
    status = project.status()
    status["iterations"][1]["stages"]["train"] = {"phase": "Pending", "attempts": 0}
    status["phase"], status["reason"] = "Running", "StageStarting"
    (project.workdir / "status.json").write_text(json.dumps(status))
    project.write_run(iterations=2, retries=0)  # now 1 attempt at most
    result, _ = run(project)
    assert result.status.phase == "Succeeded"
    assert project.invocations().count((2, "train")) == 2
