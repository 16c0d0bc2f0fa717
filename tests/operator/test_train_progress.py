"""sheepdog.kube.train_progress, no cluster: which pod is rank 0, when its log is read, and
what a reconcile writes from the log's tail (a fake API, a fake log reader)."""

from __future__ import annotations

import json

from sheepdog.kube import observe as obs
from sheepdog.kube.train_progress import TrainProgressReader, rank0_train_pod
from sheepdog.planner.actions import StageObservation
from sheepdog.progress import progress_line
from tests.operator.test_observe import FakeKube, make_run_obj, reconciler

NOW = "2025-01-01T00:00:00Z"


def train_pod(name="r-i1-train-abc", job="r-i1-train", phase="Running", index=None, stage="train"):
    meta = {"name": name, "labels": {"batch.kubernetes.io/job-name": job, obs.LABEL_STAGE: stage}}
    if index is not None:
        meta["annotations"] = {obs.COMPLETION_INDEX_ANNOTATION: str(index)}
    return {"metadata": meta, "spec": {"containers": [{"name": "stage"}]}, "status": {"phase": phase}}


def test_rank0_is_the_running_pod_of_index_0():
    assert rank0_train_pod(train_pod()) == ("r-i1-train", "r-i1-train-abc", "stage")
    assert rank0_train_pod(train_pod(index=0)) == ("r-i1-train", "r-i1-train-abc", "stage")
    assert rank0_train_pod(train_pod(index=1)) is None  # another node's ranks
    assert rank0_train_pod(train_pod(phase="Pending")) is None
    assert rank0_train_pod(train_pod(phase="Succeeded")) is None
    assert rank0_train_pod(train_pod(stage="synthesize")) is None
    deleting = train_pod()
    deleting["metadata"]["deletionTimestamp"] = NOW
    assert rank0_train_pod(deleting) is None


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Logs:
    """A fake pods/log: the text per pod, or an exception to raise; records every read."""

    def __init__(self):
        self.text: dict[str, object] = {}
        self.reads: list[tuple[str, str, str]] = []

    def __call__(self, namespace, pod, container):
        self.reads.append((namespace, pod, container))
        value = self.text.get(pod, "")
        if isinstance(value, Exception):
            raise value
        return value


def running_train():
    return StageObservation(1, "train", "running", started_at=NOW)


def test_at_most_one_read_per_interval_and_failures_read_nothing():
    logs, clock = Logs(), Clock()
    reader = TrainProgressReader(logs, interval=60, monotonic=clock)
    observed = [StageObservation(1, "curate", "succeeded"), running_train()]
    # no running rank-0 pod known yet: no read
    assert reader.observe("ns", "r", observed, NOW) == observed and logs.reads == []
    reader.pod_event("ns", "r-i1-train-x1", train_pod("r-i1-train-x1", index=1))  # not rank 0
    reader.pod_event("ns", "r-i1-train-x0", train_pod("r-i1-train-x0", index=0))
    logs.text["r-i1-train-x0"] = "hello\n" + progress_line({"step": 3, "totalSteps": 10, "epoch": 0.3,
                                                             "etaSeconds": 70.0}) + "\n"
    got = reader.observe("ns", "r", observed, NOW)
    assert got[0] == observed[0]
    assert got[1].progress == {"step": 3, "totalSteps": 10, "epoch": 0.3, "etaSeconds": 70.0, "observedAt": NOW}
    assert logs.reads == [("ns", "r-i1-train-x0", "stage")]
    # events reconcile the run again and again within the interval: no more reads
    for _ in range(5):
        clock.t += 10
        assert reader.observe("ns", "r", observed, NOW)[1].progress is None
    assert len(logs.reads) == 1
    clock.t += 10  # 60 s after the first read
    logs.text["r-i1-train-x0"] = RuntimeError("kubelet unreachable")
    assert reader.observe("ns", "r", observed, NOW)[1].progress is None  # no reading: the status keeps its own
    assert len(logs.reads) == 2
    clock.t += 60
    logs.text["r-i1-train-x0"] = "no progress line yet\n"
    assert reader.observe("ns", "r", observed, NOW)[1].progress is None and len(logs.reads) == 3
    # the pod ended: nothing left to read
    reader.pod_event("ns", "r-i1-train-x0", train_pod("r-i1-train-x0", index=0, phase="Succeeded"))
    clock.t += 60
    reader.observe("ns", "r", observed, NOW)
    assert len(logs.reads) == 3 and reader.reads == 3


def test_a_reconcile_writes_the_progress_of_the_running_train():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    logs, clock = Logs(), Clock()
    rec.train_progress = TrainProgressReader(logs, interval=60, monotonic=clock)
    rec.reconcile("ns", "r")
    for stage, summary in (("synthesize", {"ok": True, "generated": 4}), ("curate", {"ok": True, "kept": 2})):
        kube.finish(f"r-i1-{stage}", message=json.dumps(summary))
        rec.reconcile("ns", "r")
    kube.jobs["r-i1-train"]["status"] = {"startTime": NOW, "active": 1}
    rec.pod_changed("ns", "r-i1-train-p", train_pod("r-i1-train-p"))
    logs.text["r-i1-train-p"] = progress_line({"step": 5, "totalSteps": 20, "epoch": 0.25, "etaSeconds": 30.0})
    rec.reconcile("ns", "r")
    train = kube.run["status"]["iterations"][0]["stages"]["train"]
    assert train["phase"] == "Running"
    assert train["progress"] == {"step": 5, "totalSteps": 20, "epoch": 0.25, "etaSeconds": 30.0, "observedAt": NOW}
    # a read that fails keeps it, and writes no status
    clock.t += 60
    logs.text["r-i1-train-p"] = RuntimeError("404: pod gone")
    assert not rec.reconcile("ns", "r").status_written
    assert kube.run["status"]["iterations"][0]["stages"]["train"]["progress"]["step"] == 5
    # the train succeeds: its summary reports the end, the progress goes
    rec.pod_changed("ns", "r-i1-train-p", train_pod("r-i1-train-p", phase="Succeeded"))
    kube.finish("r-i1-train", message=json.dumps({"ok": True, "trainLoss": 0.5}))
    rec.reconcile("ns", "r")
    train = kube.run["status"]["iterations"][0]["stages"]["train"]
    assert train["phase"] == "Succeeded" and "progress" not in train
    assert len(logs.reads) == 2


def test_a_retrys_new_pod_waits_for_the_interval_too():
    logs, clock = Logs(), Clock()
    reader = TrainProgressReader(logs, interval=60, monotonic=clock)
    line = progress_line({"step": 1, "totalSteps": 10})
    reader.pod_event("ns", "a", train_pod("a"))
    logs.text["a"] = logs.text["b"] = line
    assert reader.observe("ns", "r", [running_train()], NOW)[0].progress["step"] == 1
    reader.pod_event("ns", "a", train_pod("a", phase="Failed"))  # the attempt failed; the Job retries
    reader.pod_event("ns", "b", train_pod("b"))
    clock.t += 1
    assert reader.observe("ns", "r", [running_train()], NOW)[0].progress is None
    clock.t += 59
    assert reader.observe("ns", "r", [running_train()], NOW)[0].progress["step"] == 1
    assert [pod for _, pod, _ in logs.reads] == ["a", "b"]
