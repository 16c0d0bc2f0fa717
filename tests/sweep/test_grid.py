"""The sweep grid (pure): axes crossed, named cells, repeats as seeds, stable DNS-safe child
names, every child validated before any is used, and the sweep file's own problems."""

from __future__ import annotations

import copy
import re

import pytest

from sheepdog.api.load import parse_run
from sheepdog.sweep.grid import LABEL_CELL, LABEL_SWEEP, SweepInvalid, child_name, expand, slug
from sheepdog.sweep.load import load_sweep, parse_sweep

BASE = {
    "apiVersion": "sheepdog.dev/v1alpha1",
    "kind": "SelfAlignmentSweep",
    "metadata": {"name": "abl", "namespace": "team"},
    "spec": {"template": {"model": {"base": "models/tiny"}, "iterations": 1, "synthesis": {"randomSeed": 7}}},
}


def sweep(**spec):
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec)
    return parse_sweep(doc)


def test_axes_are_crossed_first_axis_slowest():
    cells = expand(sweep(axes=[{"field": "filter.threshold", "values": [-1, 8]},
                               {"field": "training.strategy", "values": ["one_base", "one_last"]}]))
    assert [c.name for c in cells] == ["threshold-m1-strategy-one-base", "threshold-m1-strategy-one-last",
                                       "threshold-8-strategy-one-base", "threshold-8-strategy-one-last"]
    assert cells[1].settings == {"filter.threshold": -1, "training.strategy": "one_last"}
    spec = cells[1].manifest["spec"]
    assert spec["filter"] == {"threshold": -1} and spec["training"] == {"strategy": "one_last"}
    assert spec["model"] == {"base": "models/tiny"}  # the template's fields, as set
    meta = cells[1].manifest["metadata"]
    assert meta["labels"] == {LABEL_SWEEP: "abl", LABEL_CELL: "threshold-m1-strategy-one-last"}
    assert meta["namespace"] == "team"
    for c in cells:  # each a valid run of its own name
        assert parse_run(c.manifest).metadata.name == c.run == f"abl-{c.name}"[:40] or len(c.run) == 40


def test_named_cells_crossed_with_an_axis_and_repeats_as_seeds():
    cells = expand(sweep(
        cells=[{"name": "rules", "settings": {"filter.rules": True}},
               {"name": "none", "settings": {"filter.rules": False, "filter.threshold": -1}}],
        axes=[{"field": "synthesis.dataSize", "name": "i", "values": [10, 20]}],
        repeats=2))
    assert [c.name for c in cells][:4] == ["rules-i-10-s0", "rules-i-10-s1", "rules-i-20-s0", "rules-i-20-s1"]
    assert {c.group for c in cells} == {"rules-i-10", "rules-i-20", "none-i-10", "none-i-20"}
    none = [c for c in cells if c.group == "none-i-20"]
    # repeat r: the template's seed + r
    assert [c.manifest["spec"]["synthesis"] for c in none] == [
        {"randomSeed": 7, "dataSize": 20}, {"randomSeed": 8, "dataSize": 20}]
    assert none[0].manifest["spec"]["filter"] == {"rules": False, "threshold": -1}


def test_owner_reference_points_at_the_sweep():
    [cell] = expand(sweep(axes=[{"field": "iterations", "values": [2]}]), owner={"uid": "u-1"})
    [ref] = cell.manifest["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentSweep", "name": "abl",
                   "uid": "u-1", "controller": True}


def test_slugs():
    assert [slug(v) for v in (-1, 0.5, 8, "one_base", ["quality", "following"], [], True, None)] == [
        "m1", "0-5", "8", "one-base", "quality-following", "none", "true", "unset"]


def test_child_names_are_stable_dns_labels_and_hashed_when_long():
    long = child_name("a-rather-long-sweep-name", "assessment-quality-following-threshold-8")
    assert len(long) == 40 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", long)
    assert long == child_name("a-rather-long-sweep-name", "assessment-quality-following-threshold-8")
    assert long != child_name("a-rather-long-sweep-name", "assessment-quality-following-threshold-9")
    assert child_name("abl", "c-5") == "abl-c-5"


def test_values_with_the_same_slug_get_distinct_names():
    cells = expand(sweep(axes=[{"field": "synthesis.responsePrompt", "name": "p",
                                "values": ["Say {instruction}", "say {instruction}"]}]))
    assert len({c.run for c in cells}) == 2 and len({c.name for c in cells}) == 2
    assert all(c.name.startswith("p-say-instruction-") for c in cells)


def test_one_invalid_cell_refuses_the_sweep_with_its_path_and_reason():
    with pytest.raises(SweepInvalid) as err:
        expand(sweep(axes=[{"field": "filter.threshold", "values": [5, 11]},
                           {"field": "training.strategy", "values": ["one_base", "sideways"]}]))
    problems = err.value.problems
    assert "cell threshold-11-strategy-one-base (filter.threshold=11, training.strategy=\"one_base\"): " \
           "spec.filter.threshold: must be between -1 and 10 (got 11)" in problems
    assert any(p.startswith("cell threshold-5-strategy-sideways") and "spec.training.strategy: must be one of"
               in p for p in problems)
    assert len(problems) == 4  # 11 with both strategies, sideways with both thresholds


def test_a_cross_field_rule_names_the_cell():
    # criteria [] needs threshold 0: the named cell that forgets it is refused
    with pytest.raises(SweepInvalid) as err:
        expand(sweep(cells=[{"name": "none", "settings": {"assessment.criteria": []}},
                            {"name": "ok", "settings": {"assessment.criteria": [], "filter.threshold": 0}}]))
    [problem] = err.value.problems
    assert problem.startswith("cell none (assessment.criteria=[]): ") and "need assessment criteria" in problem


def test_a_typo_in_a_field_path_is_named():
    with pytest.raises(SweepInvalid) as err:
        expand(sweep(axes=[{"field": "filter.treshold", "values": [1]}]))
    [problem] = err.value.problems
    assert problem.startswith("spec.axes[0].field: spec.filter.treshold: spec.filter has no field 'treshold'")
    assert "did you mean spec.filter.threshold?" in problem
    with pytest.raises(SweepInvalid, match="a sweep sets fields of the run spec only"):
        expand(sweep(axes=[{"field": "metadata.name", "values": ["x"]}]))


def test_a_shared_sub_path_is_refused():
    with pytest.raises(SweepInvalid, match="each child needs its own run directory"):
        expand(sweep(template={**BASE["spec"]["template"], "storage": {"subPath": "runs/x"}},
                     axes=[{"field": "filter.threshold", "values": [1, 2]}]))


@pytest.mark.parametrize("spec, message", [
    ({}, "a sweep needs axes or cells"),
    ({"axes": [{"field": "iterations", "values": []}]}, "spec.axes[0].values"),
    ({"axes": [{"field": "iterations", "values": [1]}, {"field": "spec.iterations", "values": [2]}]}, "a field appears twice"),
    ({"axes": [{"field": "synthesis.dataSize", "values": list(range(1, 20))},
               {"field": "filter.threshold", "values": list(range(10))}], "repeats": 2}, "the grid has 380 runs"),
    ({"cells": [{"name": "Bad Name"}]}, "spec.cells[0].name"),
    ({"axes": [{"field": "iterations", "values": [1]}], "maxParalelRuns": 2}, "spec.maxParalelRuns: unknown field"),
])
def test_sweep_file_problems(spec, message):
    with pytest.raises(SweepInvalid, match=re.escape(message)):
        sweep(**spec)


def test_a_bad_template_reads_like_a_run_file_problem():
    doc = copy.deepcopy(BASE)
    doc["spec"]["template"]["filter"] = {"threshold": 99}
    doc["spec"]["axes"] = [{"field": "iterations", "values": [1]}]
    with pytest.raises(SweepInvalid) as err:
        parse_sweep(doc)
    assert err.value.problems == ["spec.template.filter.threshold: must be between -1 and 10 (got 99)"]


def test_example_sweeps_expand_to_valid_children():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples" / "sweeps"
    sizes = {}
    for path in sorted(root.glob("*.yaml")):
        sizes[path.stem] = len(expand(load_sweep(path)))
    assert sizes["quickstart-threshold"] == 3
    assert len(sizes) >= 5, sizes
