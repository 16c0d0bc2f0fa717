"""sheepdog.api.overrides: `--set key=value` on a run document, paths checked against the models."""

from __future__ import annotations

import pytest

from sheepdog.api.load import RunSpecError, load_run_text
from sheepdog.api.overrides import OverrideError, apply_overrides, parse_override
from tests.api.test_load import HEAD as MINIMAL

HEAD = MINIMAL + "  synthesis:\n    dataSize: 100\n"

DOC = {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun", "metadata": {"name": "demo"},
       "spec": {"model": {"base": "models/tiny"}, "synthesis": {"dataSize": 100}}}


def problems_of(overrides: list[str]) -> list[str]:
    with pytest.raises(OverrideError) as info:
        apply_overrides(DOC, overrides)
    return info.value.problems


def test_values_are_read_as_yaml_scalars():
    assert parse_override("synthesis.dataSize=40") == (["spec", "synthesis", "dataSize"], 40)
    assert parse_override("filter.keepFraction=0.5")[1] == 0.5
    assert parse_override("suspend=true")[1] is True
    assert parse_override("stopping=null")[1] is None
    assert parse_override("model.base=org/name")[1] == "org/name"
    assert parse_override("model.base='123'")[1] == "123"  # quoted: a string, not an int
    assert parse_override("evaluation.suites=[ifeval, mtbench]")[1] == ["ifeval", "mtbench"]
    assert parse_override("model.chatTemplate=a=b")[1] == "a=b"  # only the first = splits
    # spec. may be written out; metadata. is a path from the top
    assert parse_override("spec.iterations=2")[0] == ["spec", "iterations"]
    assert parse_override("metadata.name=other")[0] == ["metadata", "name"]


def test_overrides_set_nested_values_create_sections_and_leave_the_input_alone():
    out = apply_overrides(DOC, ["synthesis.dataSize=40", "filter.keepFraction=0.5", "iterations=2"])
    assert out["spec"]["synthesis"] == {"dataSize": 40}
    assert out["spec"]["filter"] == {"keepFraction": 0.5}  # absent in the file: created
    assert out["spec"]["iterations"] == 2
    assert DOC["spec"]["synthesis"]["dataSize"] == 100 and "filter" not in DOC["spec"]


def test_a_later_set_of_the_same_key_wins_and_snake_case_names_the_camel_case_key():
    out = apply_overrides(DOC, ["synthesis.data_size=40", "synthesis.dataSize=41"])
    assert out["spec"]["synthesis"] == {"dataSize": 41}


def test_free_form_mappings_take_any_key_and_lists_take_an_index():
    doc = {**DOC, "spec": {**DOC["spec"], "stages": {"train": {"tolerations": [{"key": "a"}]}}}}
    out = apply_overrides(doc, ["stages.train.podTemplate.labels.team=ml",
                                "stages.train.tolerations.0.key=gpu"])
    assert out["spec"]["stages"]["train"]["podTemplate"]["labels"] == {"team": "ml"}
    assert out["spec"]["stages"]["train"]["tolerations"] == [{"key": "gpu"}]


def test_unknown_paths_are_errors_naming_the_field_and_a_guess():
    [problem] = problems_of(["synthesis.dataSise=40"])
    assert problem.startswith("--set spec.synthesis.dataSise: spec.synthesis has no field 'dataSise' (it has: ")
    assert problem.endswith("did you mean spec.synthesis.dataSize?")
    [problem] = problems_of(["nosuch=1"])
    assert "spec has no field 'nosuch'" in problem
    # deeper than a single value
    [problem] = problems_of(["iterations.count=3"])
    assert problem == "--set spec.iterations.count: spec.iterations is a single value (int), it has no field 'count'"


def test_every_bad_set_is_reported_at_once():
    problems = problems_of(["filter.treshold=3", "dataSize", "stages.train.tolerations.x=1",
                            "stages.train.tolerations.0.key=a"])
    assert len(problems) == 4
    assert "did you mean spec.filter.threshold?" in problems[0]
    assert "expected KEY=VALUE" in problems[1]
    assert "is a list; name an element by its index (got 'x')" in problems[2]
    assert "has 0 element(s); no index 0" in problems[3]


def test_load_run_text_applies_sets_and_validates_their_values():
    run = load_run_text(HEAD, overrides=["synthesis.dataSize=40", "filter.keepFraction=0.5"])
    assert run.spec.synthesis.data_size == 40 and run.spec.filter.keep_fraction == 0.5
    with pytest.raises(RunSpecError) as info:
        load_run_text(HEAD, source="run.yaml", overrides=["filter.threshold=12"])
    assert info.value.problems == ["run.yaml with --set: spec.filter.threshold: must be between -1 and 10 (got 12)"]
    with pytest.raises(RunSpecError) as info:
        load_run_text(HEAD, source="run.yaml", overrides=["filter.bogus=1"])
    assert str(info.value).startswith("run.yaml: invalid run: --set spec.filter.bogus: spec.filter has no field")
