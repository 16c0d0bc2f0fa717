"""spec.storage.deleteDataOnDelete's decisions (planner/data_cleanup_policy.py): when the
finalizer is added or removed, and each step of a deleted run's cleanup."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sheepdog.planner.data_cleanup_policy import CLEANUP_TIMEOUT, FINALIZER, STOP_RECHECK, finalizers_wanted, on_delete

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DIR = "/data/runs/r"


def step(after: float = 5, finalizers=(FINALIZER,), jobs=0, pods=0, job="none"):
    return on_delete(T0, T0 + timedelta(seconds=after), list(finalizers), jobs, pods, job, DIR)


@pytest.mark.parametrize("finalizers, flag, deleting, want", [
    ([], True, False, [FINALIZER]),
    (["other"], True, False, ["other", FINALIZER]),
    ([FINALIZER], True, False, None),
    (["other", FINALIZER], False, False, ["other"]),  # the flag switched off: the run goes at once again
    ([], False, False, None),
    ([], True, True, None),  # never added to a run being deleted
    ([FINALIZER], False, True, None),  # nor removed here: on_delete removes it when done
])
def test_the_finalizer_follows_the_flag(finalizers, flag, deleting, want):
    assert finalizers_wanted(finalizers, flag, deleting) == want


def test_the_steps_in_order():
    assert step(jobs=2, pods=2).action == "delete_stage_jobs"
    assert step(pods=1).action == "wait" and step(pods=1).recheck_after == STOP_RECHECK
    created = step()
    assert created.action == "create_job" and created.recheck_after == pytest.approx(CLEANUP_TIMEOUT - 5)
    running = step(job="running")
    assert running.action == "wait" and running.recheck_after == pytest.approx(CLEANUP_TIMEOUT - 5)
    done = step(job="succeeded")
    assert done.action == "release" and done.event == ("Normal", "DataDeleted", f"deleted {DIR} from the volume")


def test_a_failed_job_or_the_timeout_releases_the_run_and_says_the_data_stays():
    failed = step(job="failed")
    assert failed.action == "release" and failed.event[:2] == ("Warning", "DataNotDeleted")
    assert f"{DIR} stays" in failed.event[2]
    for kwargs in ({"job": "running"}, {"jobs": 1}, {"pods": 3}, {}):
        late = step(after=CLEANUP_TIMEOUT + 1, **kwargs)
        assert late.action == "release" and late.event[1] == "DataNotDeleted", kwargs
        assert f"within {CLEANUP_TIMEOUT:.0f}s" in late.event[2]


def test_the_recheck_never_passes_the_timeout():
    assert step(after=CLEANUP_TIMEOUT - 0.5, jobs=1).recheck_after == pytest.approx(0.5)


def test_nothing_without_the_finalizer():
    assert step(finalizers=(), jobs=1, job="running").action == "nothing"
    assert step(finalizers=("other",), after=CLEANUP_TIMEOUT * 2).action == "nothing"
