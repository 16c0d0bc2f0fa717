"""conditions: one per type, from the phase; transition times move only on status flips."""

from sheepdog.planner.conditions import condition_statuses, conditions_for


def by_type(conds):
    return {c.type: c for c in conds}


def test_statuses_follow_the_phase():
    assert condition_statuses("Running") == {"Ready": "False", "Progressing": "True", "Failed": "False", "Suspended": "False"}
    assert condition_statuses("Succeeded")["Ready"] == "True"
    assert condition_statuses("Failed")["Failed"] == "True"
    assert condition_statuses("Suspended")["Suspended"] == "True"
    assert set(condition_statuses("Pending").values()) == {"False"}


def test_transition_time_kept_when_status_unchanged_even_if_reason_changes():
    first = conditions_for("Running", "StageStarting", "a", [], "t1", 1)
    second = conditions_for("Running", "StageRunning", "b", first, "t2", 2)
    c = by_type(second)
    assert c["Progressing"].last_transition_time == "t1"
    assert c["Progressing"].reason == "StageRunning" and c["Progressing"].message == "b"
    assert c["Progressing"].observed_generation == 2
    third = conditions_for("Succeeded", "Completed", "done", second, "t3", 2)
    c = by_type(third)
    assert c["Progressing"].last_transition_time == "t3" and c["Ready"].last_transition_time == "t3"
    assert c["Failed"].last_transition_time == "t1"
    assert [x.type for x in third] == ["Ready", "Progressing", "Failed", "Suspended"]


def test_each_condition_has_its_own_reason():
    c = by_type(conditions_for("Running", "StageRunning", "iteration 1: train running", [], "t1"))
    assert (c["Progressing"].reason, c["Progressing"].message) == ("StageRunning", "iteration 1: train running")
    # a False condition says why it is false, not why the run is running
    assert (c["Ready"].reason, c["Ready"].message) == ("Running", "the run is running")
    assert c["Failed"].reason == c["Suspended"].reason == "Running"
    f = by_type(conditions_for("Failed", "StageFailed", "train failed", [], "t1"))
    assert (f["Failed"].reason, f["Failed"].message) == ("StageFailed", "train failed")
    assert f["Ready"].reason == "Failed" and f["Progressing"].reason == "Failed"
