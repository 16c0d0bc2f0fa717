import random

import pytest

from sheepdog_jobs.curation import select_by_keep_fraction, select_by_threshold

BOTH = ["quality", "following"]


def rec(rid, quality=None, following=None, **extra):
    scores = {}
    if quality is not None or "q_none" in extra:
        scores["quality"] = quality
    if following is not None:
        scores["following"] = following
    return {"id": rid, "instruction": f"i{rid}", "input": "", "output": f"o{rid}",
            "scores": scores}


def ids(records):
    return [r["id"] for r in records]


def test_threshold_keeps_only_scores_strictly_above_for_every_criterion():
    records = [rec("a", 9, 9), rec("b", 8, 10), rec("c", 10, 8), rec("d", 8.5, 9.1),
               rec("e", 10, 10)]
    kept, dropped = select_by_threshold(records, BOTH, 8)
    assert ids(kept) == ["a", "d", "e"]
    assert [(r["id"], why) for r, why in dropped] == [("b", "low_score"), ("c", "low_score")]


def test_threshold_unscored():
    records = [rec("a", 9, 9), rec("b", 9), rec("c", None, 9, q_none=True),
               {"id": "d", "scores": None}, rec("e", 9, float("nan")), rec("f", True, 9)]
    kept, dropped = select_by_threshold(records, BOTH, 8)
    assert ids(kept) == ["a"]
    assert [why for _, why in dropped] == ["unscored"] * 5
    # a missing score for a criterion that is not required does not matter
    kept, dropped = select_by_threshold(records[:2], ["quality"], 8)
    assert ids(kept) == ["a", "b"] and dropped == []


def test_threshold_minus_one_keeps_every_scored_pair():
    # Paper Fig. 2a "threshold -1" (the authors' post-filter: quality > -1 and following > -1):
    # the score filter is off, but a pair without a parsable score is still dropped.
    from sheepdog.api.spec import RunSpec

    spec = RunSpec.model_validate({"model": {"base": "m"}, "filter": {"threshold": -1}})
    assert spec.filter.threshold == -1 and spec.filter.rules is True
    records = [rec("a", 1, 1), rec("b", 10, 1.2), rec("c", 9)]
    kept, dropped = select_by_threshold(records, BOTH, spec.filter.threshold)
    assert ids(kept) == ["a", "b"]
    assert [(r["id"], why) for r, why in dropped] == [("c", "unscored")]


def test_no_criteria_drops_nothing_by_score():
    records = [rec("a", 1, 1), rec("b")]
    assert select_by_threshold(records, [], 8) == (records, [])
    assert select_by_keep_fraction(records, [], 0.1) == (records, [])


def test_keep_fraction_best_by_mean_in_input_order():
    records = [rec("a", 2, 4), rec("b", 9, 9), rec("c", 5, 5), rec("d", 7, 8), rec("e", 1, 1)]
    kept, dropped = select_by_keep_fraction(records, BOTH, 0.4)
    assert ids(kept) == ["b", "d"]  # means 9 and 7.5; input order kept
    assert [(r["id"], why) for r, why in dropped] == [
        ("a", "below_keep_fraction"), ("c", "below_keep_fraction"), ("e", "below_keep_fraction")]


def test_keep_fraction_rounds_up_and_excludes_unscored_from_base():
    records = [rec("a", 3, 3), rec("b", 4, 4), rec("c"), rec("d", 2, 2)]
    kept, dropped = select_by_keep_fraction(records, BOTH, 0.1)  # ceil(0.1 * 3) = 1
    assert ids(kept) == ["b"]
    assert dict((r["id"], why) for r, why in dropped) == {
        "a": "below_keep_fraction", "c": "unscored", "d": "below_keep_fraction"}
    kept, _ = select_by_keep_fraction(records, BOTH, 1.0)
    assert ids(kept) == ["a", "b", "d"]
    kept, _ = select_by_keep_fraction(records, BOTH, 0.0)
    assert kept == []
    # 0.3 * 10 is 3.0000000000000004 in floats: still 3, not 4
    many = [rec(f"r{i}", i, i) for i in range(10)]
    assert len(select_by_keep_fraction(many, BOTH, 0.3)[0]) == 3


def test_keep_fraction_tie_break_by_id_is_order_independent():
    records = [rec(f"id{i}", 5, 5) for i in range(6)] + [rec("z", 6, 6)]
    expected = ["id0", "id1", "z"]
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        kept, _ = select_by_keep_fraction(shuffled, BOTH, 3 / 7)
        assert sorted(ids(kept)) == expected


def test_keep_fraction_validates_fraction():
    with pytest.raises(ValueError):
        select_by_keep_fraction([], BOTH, 1.5)
    with pytest.raises(ValueError):
        select_by_keep_fraction([], BOTH, -0.1)


def test_float_scores_from_logprobs():
    records = [rec("a", 8.01, 8.2), rec("b", 7.99, 9.5)]
    kept, _ = select_by_threshold(records, BOTH, 8)
    assert ids(kept) == ["a"]
