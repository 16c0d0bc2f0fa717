"""sheepdog.api.load: problems name the camelCase field path, the allowed values and the line."""

from __future__ import annotations

import pytest

from sheepdog.api.load import RunSpecError, dump_run, load_run, load_run_text

HEAD = """apiVersion: sheepdog.dev/v1alpha1
kind: SelfAlignmentRun
metadata:
  name: demo
spec:
  model:
    base: models/tiny
"""


def problems_of(text: str, source: str = "run.yaml") -> list[str]:
    with pytest.raises(RunSpecError) as info:
        load_run_text(text, source=source)
    return info.value.problems


def test_a_valid_file_loads_with_the_paper_defaults():
    run = load_run_text(HEAD)
    assert run.metadata.name == "demo"
    assert run.spec.model.base == "models/tiny"
    assert run.spec.filter.threshold == 8
    assert run.spec.training.strategy == "one_base"


def test_threshold_out_of_range_names_path_range_value_and_line():
    problems = problems_of(HEAD + "  filter:\n    threshold: 12\n")
    assert problems == ["run.yaml:9: spec.filter.threshold: must be between -1 and 10 (got 12)"]


def test_unknown_field_lists_the_allowed_fields_and_a_guess():
    [problem] = problems_of(HEAD + "  filter:\n    treshold: 3\n")
    assert problem.startswith("run.yaml:9: spec.filter.treshold: unknown field (allowed: rules, method, threshold,")
    assert "keepFraction" in problem
    assert problem.endswith("did you mean threshold?")


def test_bad_enum_lists_the_allowed_values():
    [problem] = problems_of(HEAD + "  training:\n    strategy: two_base\n")
    assert problem == ("run.yaml:9: spec.training.strategy: must be one of one_base, one_last, "
                       "total_base or direct (got 'two_base')")


def test_all_problems_are_reported_at_once_in_file_order():
    text = HEAD.replace("    base: models/tiny\n", "    chatTemplate: none\n") + (
        "  iterations: 0\n"
        "  assessment:\n    scoring: guess\n"
        "  training:\n    lora: {targetModules: 5}\n"
    )
    problems = problems_of(text)
    assert problems == [
        "run.yaml:6: spec.model.base: required",
        "run.yaml:8: spec.iterations: must be between 1 and 100 (got 0)",
        "run.yaml:10: spec.assessment.scoring: must be one of text or logprobs (got 'guess')",
        "run.yaml:12: spec.training.lora.targetModules: must be a string or a list of strings (got 5)",
    ]
    message = str(RunSpecError(problems))
    assert message.startswith("invalid run (4 problems):\n  - run.yaml:6: spec.model.base: required")


def test_unparsable_yaml_names_file_line_and_column():
    problems = problems_of(HEAD + "  filter: [1, 2\n  iterations: 3\n", source="bad.yaml")
    assert len(problems) == 1
    assert problems[0].startswith("bad.yaml:9:")
    assert "invalid YAML" in problems[0]


def test_cross_field_rules_are_reported_on_spec():
    [problem] = problems_of(HEAD + "  stopping: {metric: ifeval.promptStrict}\n")
    assert problem == "run.yaml:5: spec: stopping needs evaluation.enabled: true (it reads evaluation metrics)"


def test_header_and_name_problems():
    text = HEAD.replace("sheepdog.dev/v1alpha1", "v1").replace("name: demo", "name: Demo_Run")
    problems = problems_of(text)
    assert problems[0] == "run.yaml:1: apiVersion: must be sheepdog.dev/v1alpha1 (got 'v1')"
    assert problems[1].startswith("run.yaml:4: metadata.name: must be a DNS label")


def test_not_a_mapping_and_several_documents():
    assert "expected a mapping" in problems_of("- a\n- b\n")[0]
    assert "expected one YAML document" in problems_of(HEAD + "---\n" + HEAD)[0]


def test_load_run_reads_a_file_and_names_a_missing_one(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(HEAD + "  filter: {threshold: -2}\n")  # -1 is the paper's "keep every scored pair"
    with pytest.raises(RunSpecError) as info:
        load_run(path)
    assert info.value.problems == [f"{path}:8: spec.filter.threshold: must be between -1 and 10 (got -2)"]
    with pytest.raises(RunSpecError, match="no such file"):
        load_run(tmp_path / "absent.yaml")


def test_dump_round_trips():
    run = load_run_text(HEAD + "  iterations: 2\n  training: {strategy: total_base}\n")
    assert load_run_text(dump_run(run)) == run
    short = dump_run(run, defaults=False)
    assert "threshold" not in short and "total_base" in short
    assert load_run_text(short) == run
