"""sheepdog CLI: commands and exit codes (0 ok, 1 run failed, 2 invalid input)."""

from __future__ import annotations

import pytest

from sheepdog.cli import main


def test_validate(project, capsys):
    assert main(["validate", str(project.run_file)]) == 0
    assert "valid SelfAlignmentRun demo: 1 iteration(s)" in capsys.readouterr().out
    project.write_run(extra="  filter: {threshold: 12}\n")
    assert main(["validate", str(project.run_file)]) == 2
    assert "spec.filter.threshold: must be between -1 and 10 (got 12)" in capsys.readouterr().err


def test_validate_with_workdir_checks_inputs(project, capsys):
    project.seeds.write_text("")
    assert main(["validate", str(project.run_file)]) == 0
    assert main(["validate", str(project.run_file), "--workdir", str(project.workdir)]) == 2
    assert "empty: no seed tasks" in capsys.readouterr().err


def test_run_exit_codes(project, monkeypatch, capsys):
    argv = ["run", str(project.run_file), "--workdir", str(project.workdir), "--no-plot"]
    assert main(argv) == 0
    assert main(["status", str(project.workdir)]) == 0
    assert "run demo: Succeeded (Completed)" in capsys.readouterr().out

    monkeypatch.setenv("FAKE_FAIL", "1:synthesize")
    # --no-stage-cache: the same run beside the first would reuse its stages (docs/stage-cache.md)
    failing = ["run", str(project.run_file), "--workdir", str(project.root / "other"), "--no-plot",
               "--no-stage-cache"]
    assert main(failing) == 1
    err = capsys.readouterr().err
    assert "run demo failed: iteration 1 synthesize failed after 2 attempts" in err and "--retry-failed" in err
    assert main(["status", str(project.root / "other")]) == 1

    project.seeds.unlink()
    assert main(["run", str(project.run_file), "--workdir", str(project.root / "third")]) == 2
    assert "spec.seed.path: no seed file" in capsys.readouterr().err
    assert not (project.root / "third").exists()


def test_run_default_workdir_is_runs_name(project, monkeypatch):
    monkeypatch.chdir(project.root)
    assert main(["run", "run.yaml", "--no-plot"]) == 0
    assert (project.root / "runs" / "demo" / "report.json").exists()
    assert main(["status", "--name", "demo"]) == 0


def test_status_usage_errors(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err
    assert main(["status"]) == 2


def test_render_prints_jobs_or_commands(project, capsys):
    assert main(["render", str(project.run_file), "--commands"]) == 0
    out = capsys.readouterr().out
    assert "# demo-i1-synthesize" in out and "-m sheepdog_jobs curate --config" in out
    assert "--summary-file /dev/termination-log" in out
    assert main(["render", str(project.run_file), "--namespace", "ml"]) == 0
    out = capsys.readouterr().out
    assert "kind: Job" in out and "name: demo-i1-train" in out and "namespace: ml" in out
    assert main(["render", str(project.root / "absent.yaml")]) == 2


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_version_prints_the_package_version(capsys):
    import tomllib
    from pathlib import Path

    import sheepdog

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sheepdog {sheepdog.__version__}"
    # the package's metadata takes its version from the same attribute: one version, not two
    pyproject = tomllib.loads((Path(sheepdog.__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sheepdog.__version__"}


def test_set_overrides_on_validate_render_and_run(project, capsys):
    argv = ["validate", str(project.run_file), "--set", "iterations=2", "--set", "synthesis.dataSize=40"]
    assert main(argv) == 0
    assert "demo: 2 iteration(s), strategy one_base, 40 instructions per iteration" in capsys.readouterr().out
    assert main(["validate", str(project.run_file), "--set", "synthesis.dataSise=40"]) == 2
    assert "did you mean spec.synthesis.dataSize?" in capsys.readouterr().err
    assert main(["validate", str(project.run_file), "--set", "filter.threshold=12"]) == 2
    assert "spec.filter.threshold: must be between -1 and 10 (got 12)" in capsys.readouterr().err

    assert main(["render", str(project.run_file), "--commands", "--iteration", "2", "--set", "iterations=2"]) == 0
    assert "# demo-i2-synthesize" in capsys.readouterr().out
    assert main(["render", str(project.run_file), "--set", "bogus=1"]) == 2

    argv = ["run", str(project.run_file), "--workdir", str(project.workdir), "--no-plot", "--set", "iterations=2"]
    assert main(argv) == 0
    # the effective run, override included, is what the workdir records
    assert "iterations: 2" in (project.workdir / "run.yaml").read_text()
    assert {i for i, _ in project.invocations()} == {1, 2}
    assert main(["run", str(project.run_file), "--workdir", str(project.root / "x"), "--set", "nope=1"]) == 2
    assert not (project.root / "x").exists()
