"""Events at least once, never twice, across the one crash that loses them if anything does: the
operator ends (as a SIGKILL would) right after the status write that owes a StageSucceeded Event,
before posting it (the test-only crash point, kube/crash_hooks.py). A fresh process posts it
from status.pendingEvents, once; every stage's StageSucceeded is there exactly once.
"""

from __future__ import annotations

import pytest

from sheepdog.kube.crash_hooks import EXIT_CODE
from tests.operator.conftest import _OPERATORS, OperatorProcess, events_of, get_run, run_manifest, wait_phase

pytestmark = pytest.mark.cluster

STAGES = ("synthesize", "curate", "train")


def test_the_event_owed_by_a_process_killed_after_its_status_write_is_posted_once(cluster, namespace, storage, crd,
                                                                                  tmp_path, request):
    crashing = OperatorProcess(cluster, [namespace], tmp_path / "crashing.log",
                               extra=("--test-exit-after-status-write", "StageSucceeded"))
    fresh = OperatorProcess(cluster, [namespace], tmp_path / "fresh.log")
    request.node.stash[_OPERATORS] = [crashing, fresh]
    try:
        crashing.start()
        name = "owed"
        cluster.apply(run_manifest(name, namespace, iterations=1))
        cluster.wait_for("the crash point", lambda: crashing.proc.poll() is not None, timeout=120)
        assert crashing.proc.returncode == EXIT_CODE, crashing.log_tail(50)

        status = get_run(cluster, namespace, name)["status"]
        owed = [e for e in status["pendingEvents"] if e["reason"] == "StageSucceeded"]
        assert len(owed) == 1 and "synthesize" in owed[0]["message"], status["pendingEvents"]
        assert not [e for e in events_of(cluster, namespace, name) if e["reason"] == "StageSucceeded"]

        fresh.start()
        status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
        assert status["phase"] == "Succeeded", status
        cluster.wait_for("every StageSucceeded posted", lambda: len(
            [e for e in events_of(cluster, namespace, name) if e["reason"] == "StageSucceeded"]) >= len(STAGES),
            timeout=30)
        succeeded = [e for e in events_of(cluster, namespace, name) if e["reason"] == "StageSucceeded"]
        assert sorted(e["metadata"]["name"] for e in succeeded if e["message"] == owed[0]["message"]) == [owed[0]["name"]]
        assert len(succeeded) == len(STAGES) and all(e.get("count", 1) == 1 for e in succeeded), \
            [(e["message"], e.get("count")) for e in succeeded]
        assert len({e["message"] for e in succeeded}) == len(STAGES)
    finally:
        fresh.stop()
        crashing.stop()
