"""`sheepdog run` keeps the terminal short: each stage's output goes to its log file
(i<N>/<stage>.log) and the terminal gets one line per stage event; --verbose shows the stages'
output there too. (The fake stage program draws a progress bar "<stage>: k/3" on stderr.)"""

from __future__ import annotations

from sheepdog.cli import main


def run(project, capsys, *extra: str) -> tuple[str, str]:
    argv = ["run", str(project.run_file), "--workdir", str(project.workdir), "--no-plot", *extra]
    assert main(argv) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_stage_output_goes_to_the_log_file_and_the_terminal_gets_one_line_per_event(project, capsys):
    out, err = run(project, capsys)
    assert "synthesize: 3/3" not in out + err
    assert "synthesize: 3/3" in (project.workdir / "i1" / "synthesize.log").read_text()
    assert f"stage output: {project.workdir}/i<N>/<stage>.log" in out
    events = [line for line in out.splitlines() if line.startswith("[")]
    assert any(line.startswith("[done]") and "synthesize succeeded" in line for line in events)
    assert "run demo: Succeeded (Completed)" in out


def test_verbose_shows_the_stage_output_too(project, capsys):
    out, err = run(project, capsys, "--verbose")
    assert "synthesize: 3/3" in err
    assert "stage output:" not in out
    assert "synthesize: 3/3" in (project.workdir / "i1" / "synthesize.log").read_text()


def test_a_crashed_stage_still_says_why_on_the_terminal(project, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CRASH", "1:synthesize")
    argv = ["run", str(project.run_file), "--workdir", str(project.workdir), "--no-plot"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    # the crash's last log lines reach the terminal in the failure's one line, not as a stream
    assert "ValueError: the tokenizer is missing" in captured.err
    assert "Traceback (most recent call last)" not in captured.err.splitlines()
