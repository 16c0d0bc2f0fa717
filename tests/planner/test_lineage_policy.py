"""lineage_policy: generator, base and train data per strategy (docs/design.md lineage table)."""

from __future__ import annotations

import pytest

from sheepdog.planner.lineage_policy import Lineage, data_size, iteration_count, lineage, stage_config
from sheepdog.stage_config import Layout
from tests.planner.simulate import make_spec

L = Layout(root="/w", run_dir="/w/runs/r")


def kept(*its: int) -> tuple[str, ...]:
    return tuple(f"/w/runs/r/i{t}/curate/kept.jsonl" for t in its)


EXPECTED = {
    "one_base": [Lineage("m", "m", kept(1)), Lineage("/w/runs/r/i1/model", "m", kept(2)),
                 Lineage("/w/runs/r/i2/model", "m", kept(3))],
    "one_last": [Lineage("m", "m", kept(1)), Lineage("/w/runs/r/i1/model", "/w/runs/r/i1/model", kept(2)),
                 Lineage("/w/runs/r/i2/model", "/w/runs/r/i2/model", kept(3))],
    "total_base": [Lineage("m", "m", kept(1)), Lineage("/w/runs/r/i1/model", "m", kept(1, 2)),
                   Lineage("/w/runs/r/i2/model", "m", kept(1, 2, 3))],
}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_lineage_table(strategy):
    spec = make_spec(model={"base": "m"}, training={"strategy": strategy})
    assert [lineage(spec, t, L) for t in (1, 2, 3)] == EXPECTED[strategy]
    assert iteration_count(spec) == 3 and data_size(spec) == 10000


def test_iteration_one_is_the_same_in_every_strategy():
    firsts = {lineage(make_spec(model={"base": "m"}, training={"strategy": s}), 1, L)
              for s in ("one_base", "one_last", "total_base", "direct")}
    assert firsts == {Lineage("m", "m", kept(1))}


def test_direct_is_one_iteration_with_all_the_data_from_the_base():
    spec = make_spec(model={"base": "m"}, iterations=3, synthesis={"dataSize": 10000},
                     training={"strategy": "direct"})
    assert iteration_count(spec) == 1
    assert data_size(spec) == 30000
    assert lineage(spec, 1, L) == Lineage("m", "m", kept(1))


def test_stage_config_resolves_paths_under_the_root():
    spec = make_spec(model={"base": "models/base"}, seed={"path": "seeds/s.jsonl"})
    c = stage_config("r", spec, 2, "train", L)
    assert (c.run, c.iteration, c.stage) == ("r", 2, "train")
    assert (c.root, c.run_dir, c.out_dir) == ("/w", "/w/runs/r", "/w/runs/r/i2/train")
    assert c.seed_file == "/w/seeds/s.jsonl"
    assert c.generator_model == "/w/runs/r/i1/model"
    assert c.base_model == "/w/models/base"
    assert c.train_data == list(kept(2)) and c.model_out == "/w/runs/r/i2/model"
    assert c.spec == spec


def test_unset_seed_path_leaves_the_seed_file_to_the_stage():
    assert stage_config("r", make_spec(), 1, "synthesize", L).seed_file is None  # the built-in set


def test_absolute_base_stays_absolute():
    spec = make_spec(model={"base": "/models/qwen"})
    assert stage_config("r", spec, 1, "synthesize", L).generator_model == "/models/qwen"


@pytest.mark.parametrize("strategy", ["one_base", "one_last", "total_base"])
def test_judge_current_is_the_generator_and_base_is_the_base(strategy):
    # assessment.judge: current = M_t (the paper's Algorithm 1); base = the base model in
    # every iteration (the authors' scripts), whichever model generates or trains.
    for judge, expected in (("current", ["/w/m", "/w/runs/r/i1/model", "/w/runs/r/i2/model"]),
                            ("base", ["/w/m", "/w/m", "/w/m"])):
        spec = make_spec(model={"base": "m"}, training={"strategy": strategy}, assessment={"judge": judge})
        got = [stage_config("r", spec, t, "synthesize", L).judge_model for t in (1, 2, 3)]
        assert got == expected, judge
