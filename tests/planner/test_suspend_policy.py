"""suspend_policy: suspend stops new stages only; resuming is noticed once."""

from sheepdog.api.status import RunStatus
from sheepdog.planner.reasons import Reason
from sheepdog.planner.suspend_policy import may_start_stage, resuming, running_reason, suspended_message
from tests.planner.simulate import make_spec


def test_suspend_blocks_new_stages_and_marks_the_running_one():
    assert may_start_stage(make_spec()) and not may_start_stage(make_spec(suspend=True))
    assert running_reason(make_spec(suspend=True)) == Reason.SUSPENDING
    assert running_reason(make_spec()) == Reason.STAGE_RUNNING


def test_resuming_only_after_a_suspend():
    spec = make_spec()
    assert resuming(RunStatus(phase="Suspended", reason="Suspended"), spec)
    assert resuming(RunStatus(phase="Running", reason="Suspending"), spec)
    assert not resuming(RunStatus(phase="Running", reason="StageRunning"), spec)
    assert not resuming(RunStatus(phase="Suspended", reason="Suspended"), make_spec(suspend=True))


def test_suspended_message_names_the_next_stage():
    assert suspended_message((2, "train")) == "suspended before iteration 2 train"
    assert suspended_message(None) == "suspended"
