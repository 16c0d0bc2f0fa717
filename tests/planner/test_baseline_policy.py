"""baseline_policy: M_0 as iteration 0, gains against it."""

from __future__ import annotations

from sheepdog.api.status import IterationRecord, RunStatus, StageRecord
from sheepdog.planner.baseline_policy import apply_gains, first_stage, gains, wanted
from tests.planner.simulate import make_spec

M = "ifeval-smoke.promptStrict"


def test_m0_is_evaluated_first_only_when_evaluation_is_on_at_the_start():
    on, off = make_spec(evaluation={"enabled": True}), make_spec()
    assert first_stage(on, RunStatus()) == (0, "evaluate")
    assert first_stage(off, RunStatus()) == (1, "synthesize")
    started = RunStatus(iterations=[IterationRecord(iteration=1, stages={"synthesize": StageRecord()})])
    assert not wanted(on, started)


def test_gains_cover_the_metrics_both_have_and_are_rounded():
    assert gains({M: 0.3, "heldout.meanScore": 6.0, "new": 1.0}, {M: 0.1, "heldout.meanScore": 6.5}) == {
        M: 0.2, "heldout.meanScore": -0.5}
    assert gains({M: 0.3}, None) is None and gains(None, {M: 0.1}) is None


def test_apply_gains_fills_every_trained_iteration_and_not_m0():
    status = RunStatus(iterations=[
        IterationRecord(iteration=0, evaluation={M: 0.25}),
        IterationRecord(iteration=1, evaluation={M: 0.5}),
        IterationRecord(iteration=2),
    ])
    apply_gains(status)
    assert [r.evaluation_gain for r in status.iterations] == [None, {M: 0.25}, None]
    assert "evaluationGain" in status.to_wire()["iterations"][1]


def test_without_m0_there_are_no_gains():
    status = RunStatus(iterations=[IterationRecord(iteration=1, evaluation={M: 0.5})])
    apply_gains(status)
    assert status.iterations[0].evaluation_gain is None
