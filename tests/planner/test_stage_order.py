"""stage_order: synthesize → curate → train → (evaluate)."""

from sheepdog.planner.stage_order import last_started, next_stage, stages_of
from tests.planner.simulate import make_spec


def test_order_with_and_without_evaluation():
    assert stages_of(make_spec()) == ("synthesize", "curate", "train")
    assert stages_of(make_spec(evaluation={"enabled": True}))[-1] == "evaluate"
    # evaluate already started stays in this iteration's order after it is switched off
    assert stages_of(make_spec(), ["synthesize", "evaluate"])[-1] == "evaluate"


def test_next_and_last():
    order = stages_of(make_spec())
    assert next_stage(order, "synthesize") == "curate" and next_stage(order, "train") is None
    assert last_started(["curate", "synthesize"]) == "curate"
    assert last_started([]) is None
