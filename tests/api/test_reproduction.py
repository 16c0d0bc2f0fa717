"""A run labelled `sheepdog.dev/reproduces: isheep-scripts` is checked against the authors'
scripts: `sheepdog validate` warns, without failing, about each field that departs (issue 23)."""

from __future__ import annotations

from sheepdog.api.load import load_run
from sheepdog.api.reproduction import SCRIPTS_SETTINGS, departures, is_scripts_reproduction
from sheepdog.cli import main

from tests.jobs.conftest import REPO

PAPER = REPO / "examples" / "paper.yaml"


def test_the_paper_file_is_a_reproduction_that_departs_from_nothing():
    from sheepdog.api.reproduction import CHATML
    from sheepdog_jobs.prompts import CHATML_RESPONSE_PROMPT

    run = load_run(PAPER)
    assert is_scripts_reproduction(run) and departures(run.spec) == []
    # the operator's copy of the scripts' wrapper (it does not import the stage programs)
    assert CHATML == CHATML_RESPONSE_PROMPT == run.spec.synthesis.later_response_prompt


def test_each_departure_is_named_with_the_scripts_value_and_source():
    run = load_run(PAPER, ["spec.assessment.judge=current", "spec.synthesis.dedupScope=global",
                           "spec.assessment.promptTail=sheepdog"])
    found = departures(run.spec)
    assert len(found) == 3
    assert any(line.startswith("spec.assessment.judge is 'current'; the scripts ran 'base' (qwen72B_all.sh")
               for line in found)
    assert any(line.startswith("spec.synthesis.dedupScope is 'global'; the scripts ran 'window'") for line in found)


def test_defaults_depart_where_sheepdog_differs_from_the_scripts():
    run = load_run(REPO / "examples" / "paper-sheepdog.yaml")
    assert not is_scripts_reproduction(run)  # no label: not checked by validate
    fields = {line.split(" is ")[0] for line in departures(run.spec)}
    for field in ("synthesis.laterResponsePrompt", "synthesis.instructionParser", "synthesis.dedupScope",
                  "assessment.judge", "assessment.promptTail", "filter.ruleSet", "training.prompt"):
        assert f"spec.{field}" in fields and field in SCRIPTS_SETTINGS


def test_validate_warns_but_passes(capsys):
    assert main(["validate", str(PAPER), "--set", "spec.filter.ruleSet=sheepdog"]) == 0
    err = capsys.readouterr().err
    assert "warning: spec.filter.ruleSet is 'sheepdog'; the scripts ran 'authors'" in err
    assert "1 setting(s) depart from the authors' scripts" in err
    assert main(["validate", str(PAPER)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["validate", str(REPO / "examples" / "paper-sheepdog.yaml")]) == 0
    assert "warning" not in capsys.readouterr().err
