"""stopping_policy: improvement by more than minDelta, patience, best iteration."""

from __future__ import annotations

from sheepdog.api.spec import StoppingSpec
from sheepdog.api.status import IterationRecord
from sheepdog.planner.stopping_policy import judge, metric_of

M = "ifeval-smoke.promptStrict"


def records(*values) -> list[IterationRecord]:
    return [IterationRecord(iteration=i, evaluation=None if v is None else {M: v})
            for i, v in enumerate(values, start=1)]


def rule(min_delta=0.0, patience=1) -> StoppingSpec:
    return StoppingSpec(metric=M, min_delta=min_delta, patience=patience)


def test_without_stopping_the_last_finished_iteration_is_best():
    v = judge(None, records(0.9, 0.1))
    assert (v.stop, v.best_iteration) == (False, 2)
    assert judge(None, []).best_iteration is None


def test_improving_never_stops():
    v = judge(rule(), records(0.1, 0.2, 0.3))
    assert (v.stop, v.best_iteration, v.best_value, v.stale) == (False, 3, 0.3, 0)


def test_flat_stops_after_patience():
    assert judge(rule(patience=2), records(0.3, 0.3)).stop is False
    v = judge(rule(patience=2), records(0.3, 0.3, 0.3))
    assert (v.stop, v.best_iteration, v.stale) == (True, 1, 2)


def test_falling_stops_with_patience_one_and_keeps_the_earlier_best():
    v = judge(rule(), records(0.5, 0.4))
    assert (v.stop, v.best_iteration) == (True, 1)


def test_a_recovery_resets_patience():
    v = judge(rule(patience=2), records(0.3, 0.2, 0.4, 0.35))
    assert (v.stop, v.best_iteration, v.stale) == (False, 3, 1)


def test_min_delta_small_gains_are_no_improvement_and_do_not_move_the_best():
    v = judge(rule(min_delta=0.05), records(0.30, 0.34))
    assert (v.stop, v.best_iteration) == (True, 1)
    v = judge(rule(min_delta=0.05), records(0.30, 0.36))
    assert (v.stop, v.best_iteration) == (False, 2)


def test_unknown_metrics_neither_improve_nor_use_patience():
    v = judge(rule(), records(0.3, None, 0.4))
    assert (v.stop, v.best_iteration) == (False, 3)
    v = judge(rule(), records(None, None))
    assert (v.stop, v.best_iteration) == (False, 2)


def test_metric_of_ignores_non_numbers():
    r = IterationRecord(iteration=1, evaluation={M: 0.5})
    assert metric_of(r, M) == 0.5 and metric_of(r, "other") is None
    assert metric_of(IterationRecord(iteration=1), M) is None


def test_m0_is_the_first_value_to_beat_and_can_stay_the_best():
    m0 = IterationRecord(iteration=0, evaluation={M: 0.5})
    v = judge(rule(), [m0, *records(0.4)])
    assert (v.stop, v.best_iteration, v.best_value) == (True, 0, 0.5)
    v = judge(rule(), [m0, *records(0.6)])
    assert (v.stop, v.best_iteration) == (False, 1)


def test_without_stopping_m0_is_never_the_best():
    m0 = IterationRecord(iteration=0, evaluation={M: 0.9})
    assert judge(None, [m0]).best_iteration is None
    assert judge(None, [m0, *records(0.1)]).best_iteration == 1
