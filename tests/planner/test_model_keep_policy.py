"""storage.keepModels: the iteration models a train stage deletes."""

import pytest

from sheepdog.planner.model_keep_policy import superseded_models


def test_all_keeps_every_model():
    assert superseded_models("all", 5, best=1) == []


def test_last_keeps_the_generator_of_the_iteration():
    assert superseded_models("last", 1, best=None) == []
    assert superseded_models("last", 2, best=1) == []  # M_1 generates iteration 2
    assert superseded_models("last", 3, best=2) == [1]
    assert superseded_models("last", 5, best=2) == [1, 2, 3]


def test_best_keeps_the_best_finished_iteration_too():
    assert superseded_models("best", 5, best=2) == [1, 3]
    assert superseded_models("best", 5, best=4) == [1, 2, 3]
    assert superseded_models("best", 5, best=None) == [1, 2, 3]


def test_an_exported_run_keeps_its_best_model_whatever_keepModels():
    assert superseded_models("last", 5, best=2, exported=True) == [1, 3]


def test_unknown_value():
    with pytest.raises(ValueError, match="storage.keepModels must be one of all, best, last"):
        superseded_models("some", 3, best=None)


def run_train_configs(iterations=4, metrics=None, **spec):
    from tests.planner.simulate import LAYOUT, Simulation, make_spec

    sim = Simulation(make_spec(iterations=iterations, **spec), metrics=metrics)
    sim.run()
    return {i: [p.removeprefix(LAYOUT.run_dir + "/") for p in c.delete_models]
            for i, c in sim.configs("train").items()}


def test_the_planner_puts_the_decision_in_each_train_config():
    assert run_train_configs() == {1: [], 2: [], 3: [], 4: []}  # keepModels all (default)
    assert run_train_configs(storage={"keepModels": "last"}) == {
        1: [], 2: [], 3: ["i1/model"], 4: ["i1/model", "i2/model"]}  # (i1 again: a path already gone is skipped)
    # best by the stopping metric: iteration 1 scores highest and stays
    best = run_train_configs(storage={"keepModels": "best"}, evaluation={"enabled": True},
                             stopping={"metric": "ifeval-smoke.promptStrict", "patience": 5},
                             metrics={1: 0.9, 2: 0.2, 3: 0.3, 4: 0.1})
    assert best == {1: [], 2: [], 3: [], 4: ["i2/model"]}
