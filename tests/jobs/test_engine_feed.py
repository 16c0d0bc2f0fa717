"""engine_feed.feed: the loop that keeps up to `depth` units in the engine (synthesize's blocks
and chunks), pure of engines and files."""

from __future__ import annotations

import pytest

from sheepdog_jobs import engine_feed


def run(units: int, depth: int, complete_after: int | None = None, blocked: set | None = None):
    """Feed `units` units; the events in order. complete_after: the work is complete once that
    many units finished (phase A's dataSize reached). blocked: units another worker holds,
    free after one wait."""
    events, finished, blocked = [], [], set(blocked or ())
    todo = list(range(units))

    def pick(in_flight):
        for n in todo:
            if n not in blocked:
                todo.remove(n)
                return n
        return None

    def complete():
        return len(finished) >= (units if complete_after is None else complete_after) and not blocked

    def wait():
        events.append("wait")
        blocked.clear()

    engine_feed.feed(pick, lambda n: events.append(f"submit {n}") or f"h{n}",
                     lambda n, h: (events.append(f"finish {n} {h}"), finished.append(n)),
                     complete, wait, cancel=lambda n, h: events.append(f"cancel {n} {h}"), depth=depth)
    return events


def test_the_next_unit_is_submitted_before_the_current_one_is_finished():
    assert run(3, depth=2) == ["submit 0", "submit 1", "finish 0 h0", "submit 2", "finish 1 h1", "finish 2 h2"]


def test_depth_one_is_one_unit_at_a_time():
    assert run(3, depth=1) == ["submit 0", "finish 0 h0", "submit 1", "finish 1 h1", "submit 2", "finish 2 h2"]


def test_units_still_in_flight_when_the_work_is_complete_are_cancelled():
    assert run(4, depth=2, complete_after=1) == ["submit 0", "submit 1", "finish 0 h0", "cancel 1 h1"]


def test_it_waits_only_when_nothing_is_in_flight_and_nothing_can_be_taken():
    # units 0 and 1 are another worker's until one wait has passed
    events = run(3, depth=2, blocked={0, 1})
    assert events[:3] == ["submit 2", "finish 2 h2", "wait"]
    assert events[3:] == ["submit 0", "submit 1", "finish 0 h0", "finish 1 h1"]


def test_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="depth"):
        engine_feed.feed(lambda k: None, lambda n: n, lambda n, h: None, lambda: True, lambda: None, depth=0)
