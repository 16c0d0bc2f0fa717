"""sheepdog.kube.kueue_workloads: a queued Job (Kueue's queue label) is suspended and resumed
through its Workload's spec.active, any other Job through Job.spec.suspend (real Kueue:
tests/operator/test_kueue.py)."""

from __future__ import annotations

from sheepdog.kube.jobs import LABEL_QUEUE
from sheepdog.kube.kueue_workloads import set_suspended, workload_changes


class FakeKube:
    def __init__(self, workloads=None):
        self.workloads = workloads  # None: Kueue not installed
        self.calls: list[tuple] = []

    def suspend_job(self, namespace, name, suspend):
        self.calls.append(("suspend_job", name, suspend))

    def list_job_workloads(self, namespace, job_uid):
        self.calls.append(("list_job_workloads", job_uid))
        return self.workloads

    def set_workload_active(self, namespace, name, active):
        self.calls.append(("set_workload_active", name, active))


def job(name="r-i1-train", uid="u1", queue="team"):
    labels = {LABEL_QUEUE: queue} if queue else {}
    return {"metadata": {"name": name, "uid": uid, "labels": labels}}


def workload(name, owner_uid, active=None):
    wl = {"metadata": {"name": name, "ownerReferences": [{"kind": "Job", "uid": owner_uid}]}, "spec": {}}
    if active is not None:
        wl["spec"]["active"] = active
    return wl


def test_a_job_without_a_queue_is_suspended_directly():
    kube = FakeKube([workload("w", "u1")])
    assert set_suspended(kube, "ns", "r-i1-train", True, [job(queue="")]) == "job"
    assert kube.calls == [("suspend_job", "r-i1-train", True)]


def test_a_queued_job_is_suspended_and_resumed_through_its_workload():
    kube = FakeKube([workload("job-r-i1-train-abc", "u1"), workload("other", "u2")])
    assert set_suspended(kube, "ns", "r-i1-train", True, [job("r-i1-curate", "u0"), job()]) == "workload"
    assert kube.calls == [("list_job_workloads", "u1"), ("set_workload_active", "job-r-i1-train-abc", False)]
    kube = FakeKube([workload("job-r-i1-train-abc", "u1", active=False)])
    assert set_suspended(kube, "ns", "r-i1-train", False, [job()]) == "workload"
    assert kube.calls[-1] == ("set_workload_active", "job-r-i1-train-abc", True)


def test_a_workload_already_as_wanted_is_not_patched():
    assert workload_changes([workload("w", "u1", active=False)], "u1", suspend=True) == []
    assert workload_changes([workload("w", "u1")], "u1", suspend=False) == []
    assert workload_changes([workload("w", "u2")], "u1", suspend=True) == []  # another Job's
    kube = FakeKube([workload("w", "u1", active=False)])
    set_suspended(kube, "ns", "r-i1-train", True, [job()])
    assert kube.calls == [("list_job_workloads", "u1")]


def test_without_kueue_or_a_workload_yet_the_job_is_suspended_directly():
    for workloads in (None, [], [workload("w", "u2")]):
        kube = FakeKube(workloads)
        assert set_suspended(kube, "ns", "r-i1-train", True, [job()]) == "job"
        assert kube.calls[-1] == ("suspend_job", "r-i1-train", True)
        # a resume leaves a queued Job to Kueue: it is still suspended as created
        kube = FakeKube(workloads)
        set_suspended(kube, "ns", "r-i1-train", False, [job()])
        assert [c for c in kube.calls if c[0] != "list_job_workloads"] == []


def test_a_job_not_in_the_cache_is_suspended_directly():
    kube = FakeKube([workload("w", "u1")])
    assert set_suspended(kube, "ns", "r-i1-train", True, []) == "job"
    assert kube.calls == [("suspend_job", "r-i1-train", True)]
