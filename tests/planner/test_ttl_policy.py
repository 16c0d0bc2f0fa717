"""planner/ttl_policy.py: when a finished run is deleted (spec.ttlSecondsAfterFinished)."""

from datetime import datetime, timezone

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import Condition, RunStatus
from sheepdog.planner.ttl_policy import deletion_due, seconds_left

NOW = datetime(2026, 12, 7, 12, 0, 10, tzinfo=timezone.utc)


def spec(ttl):
    return RunSpec.model_validate({"model": {"base": "m"}, "ttlSecondsAfterFinished": ttl})


def status(phase: str) -> RunStatus:
    return RunStatus(phase=phase, conditions=[
        Condition(type="Ready", status="True", reason="Completed", last_transition_time="2026-12-07T12:00:00Z"),
        Condition(type="Progressing", status="False", reason="Completed", last_transition_time="2026-12-07T11:00:00Z"),
    ])


def test_a_finished_run_is_due_ttl_seconds_after_its_last_transition():
    assert deletion_due(spec(30), status("Succeeded")) == datetime(2026, 12, 7, 12, 0, 30, tzinfo=timezone.utc)
    assert seconds_left(spec(30), status("Failed"), NOW) == 20
    assert seconds_left(spec(5), status("Succeeded"), NOW) == 0
    assert seconds_left(spec(0), status("Succeeded"), NOW) == 0


def test_a_running_run_or_one_without_a_ttl_is_never_due():
    assert seconds_left(spec(None), status("Succeeded"), NOW) is None
    for phase in ("Pending", "Running", "Suspended"):
        assert seconds_left(spec(1), status(phase), NOW) is None
    assert seconds_left(spec(1), RunStatus(phase="Succeeded"), NOW) is None  # no time recorded


def test_the_spec_refuses_a_negative_ttl():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        spec(-1)
