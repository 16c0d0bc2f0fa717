"""Two operators with leader election (kube/leader.py) on the real control plane: only the Lease
holder reconciles; SIGKILLed mid-run, the standby takes the Lease once it goes unrenewed and the
run completes with every Job created once and every stage recorded once.
"""

from __future__ import annotations

import re

import pytest

from tests.operator.conftest import OperatorProcess, run_manifest, wait_phase
from tests.operator.test_reliability import JobLedger, _jobs_by_name

pytestmark = pytest.mark.cluster

LEASE = "sheepdog-test-leader"
LEADS = re.compile(r"leader election: (\S+) leads")


def leader_of(cluster, namespace: str) -> str:
    lease = cluster.get_json("lease", LEASE, "-n", namespace)
    return lease["spec"].get("holderIdentity") or ""


def identity_of(op: OperatorProcess) -> str | None:
    found = LEADS.findall(op.log())
    return found[-1] if found else None


def test_the_standby_takes_over_a_killed_leader_and_nothing_is_done_twice(cluster, namespace, storage, crd, tmp_path, request):
    args = ("--leader-election", "--leader-election-namespace", namespace, "--leader-election-id", LEASE)
    ops = [OperatorProcess(cluster, [namespace], tmp_path / f"operator-{i}.log", extra=args) for i in (0, 1)]
    from tests.operator.conftest import _OPERATORS

    request.node.stash[_OPERATORS] = ops
    try:
        first = ops[0].start()
        cluster.wait_for("the first operator leads", lambda: identity_of(first), timeout=60)
        second = ops[1].start()
        assert leader_of(cluster, namespace) == identity_of(first)

        name = "relay"
        cluster.apply(run_manifest(name, namespace, iterations=2, extra_annotations={"*": {"sheepdog.test/duration": "3s"}}))
        ledger = JobLedger()
        cluster.wait_for("iteration 1's curate Job", lambda: f"{name}-i1-curate" in _jobs_by_name(cluster, namespace, name),
                         timeout=120, interval=0.3)
        ledger.observe(_jobs_by_name(cluster, namespace, name))
        assert identity_of(second) is None, "the standby led while the leader lived"
        assert "status written" not in second.log() and "created " not in second.log(), second.log_tail(50)

        first.kill()  # no chance to give the Lease up: the standby waits out its duration
        cluster.wait_for("the standby leads", lambda: identity_of(second), timeout=90)
        assert leader_of(cluster, namespace) == identity_of(second) != identity_of(first)
        lease = cluster.get_json("lease", LEASE, "-n", namespace)
        assert lease["spec"]["leaseTransitions"] == 1, lease["spec"]

        status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=300)
        ledger.observe(_jobs_by_name(cluster, namespace, name))
        assert status["phase"] == "Succeeded", status
        ledger.assert_once()
        assert sorted(ledger.uids) == sorted(f"{name}-i{n}-{s}" for n in (1, 2) for s in ("synthesize", "curate", "train"))
        for rec in status["iterations"]:
            assert {s: r["attempts"] for s, r in rec["stages"].items()} == {"synthesize": 1, "curate": 1, "train": 1}, rec
            assert rec["kept"] == 9 and rec["trainLoss"] == 1.25, rec

        # a clean stop gives the Lease up at once
        second.stop()
        cluster.wait_for("the Lease given up", lambda: leader_of(cluster, namespace) == "", timeout=30)
    finally:
        for op in ops:
            op.stop()
