"""Bad input stops the run with one clear message before any stage starts, writing nothing."""

from __future__ import annotations

import io

import pytest

from sheepdog.api.load import RunSpecError
from sheepdog.local import InputError, run_local


def refused(project, error=InputError) -> list[str]:
    with pytest.raises(error) as info:
        run_local(project.run_file, project.workdir, out=io.StringIO(), plot=False)
    assert not project.workdir.exists(), "nothing may be written"
    assert project.invocations() == []
    return info.value.problems


def test_missing_seed_file(project):
    project.seeds.unlink()
    [problem] = refused(project)
    assert problem.startswith("spec.seed.path: no seed file 'seeds/tasks.jsonl' (looked at ")
    assert str(project.workdir / "seeds/tasks.jsonl") in problem and str(project.seeds) in problem


def test_empty_seed_file(project):
    project.seeds.write_text("\n  \n")
    assert refused(project) == [f"{project.seeds}: empty: no seed tasks (one JSON object per line, each with an \"instruction\")"]


def test_malformed_seed_lines_are_named_by_line(project):
    project.seeds.write_text('{"instruction": "ok"}\n{"instruction": "broken"\n[1, 2]\n{"input": "x"}\n{"instruction": "  "}\n')
    problems = refused(project)
    assert problems[0].startswith(f"{project.seeds}:2: not valid JSON (")
    assert problems[1] == f"{project.seeds}:3: a seed task must be a JSON object, got list"
    assert problems[2] == f'{project.seeds}:4: seed task has no "instruction" (a non-empty string)'
    assert problems[3] == f'{project.seeds}:5: seed task has no "instruction" (a non-empty string)'


def test_many_bad_lines_are_summarised(project):
    project.seeds.write_text("x\n" * 9)
    problems = refused(project)
    assert len(problems) == 6 and problems[-1] == f"{project.seeds}: ... and 4 more"


def test_missing_model_path(project):
    project.run_file.write_text(project.run_file.read_text().replace("models/tiny", "models/absent"))
    [problem] = refused(project)
    assert problem.startswith("spec.model.base: no model at 'models/absent' (looked at ")


def test_missing_absolute_model_path(project, tmp_path):
    project.run_file.write_text(project.run_file.read_text().replace("models/tiny", str(tmp_path / "nope")))
    assert refused(project) == [f"spec.model.base: no model at '{tmp_path / 'nope'}' (looked at {tmp_path / 'nope'})"]


def test_seed_and_model_problems_are_reported_together(project):
    project.seeds.write_text("")
    project.run_file.write_text(project.run_file.read_text().replace("models/tiny", "models/absent"))
    assert len(refused(project)) == 2


def test_unparsable_yaml_names_the_line(project):
    project.run_file.write_text(project.run_file.read_text().replace("  iterations: 1", "  iterations: [1"))
    [problem] = refused(project, RunSpecError)
    assert problem.startswith(f"{project.run_file}:") and "invalid YAML" in problem


def test_threshold_outside_minus_1_to_10(project):
    project.write_run(extra="  filter: {threshold: 12}\n")
    [problem] = refused(project, RunSpecError)
    assert problem == f"{project.run_file}:14: spec.filter.threshold: must be between -1 and 10 (got 12)"


def test_paths_in_the_workdir_win_over_paths_beside_the_run_file(project):
    (project.workdir / "seeds").mkdir(parents=True)
    (project.workdir / "seeds" / "tasks.jsonl").write_text('{"instruction": "from the workdir"}\n')
    result = run_local(project.run_file, project.workdir, out=io.StringIO(), plot=False)
    assert result.status.phase == "Succeeded"
    assert {d["seed"] for d in project.logged()} == {str((project.workdir / "seeds" / "tasks.jsonl").resolve())}


def test_a_hub_id_is_accepted_with_a_note(project):
    project.run_file.write_text(project.run_file.read_text().replace("models/tiny", "HuggingFaceTB/SmolLM2-135M"))
    out = io.StringIO()
    result = run_local(project.run_file, project.workdir, out=out, plot=False)
    assert result.status.phase == "Succeeded"
    assert "loading it as a hub id" in out.getvalue()
    assert result.status.iterations[0].generator_model == "HuggingFaceTB/SmolLM2-135M"


def test_a_missing_path_under_models_is_not_taken_for_a_hub_id(project, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    project.run_file.write_text(project.run_file.read_text().replace("models/tiny", "models/smollm2"))
    import shutil

    shutil.rmtree(project.root / "models")
    [problem] = refused(project)
    assert problem.startswith("spec.model.base: no model at 'models/smollm2'")


def test_no_seed_path_means_the_built_in_seed_tasks(project):
    """No seed file is looked for or checked: the stage gets seedFile null and reads the 175
    Self-Instruct tasks shipped with sheepdog_jobs (tests/jobs/test_builtin_seeds.py)."""
    project.run_file.write_text(project.run_file.read_text().replace("  seed:\n    path: seeds/tasks.jsonl\n", ""))
    project.seeds.unlink()
    result = run_local(project.run_file, project.workdir, out=io.StringIO(), plot=False)
    assert result.status.phase == "Succeeded"
    assert {d["seed"] for d in project.logged()} == {None}
