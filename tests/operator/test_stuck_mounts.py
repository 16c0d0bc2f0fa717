"""Stuck, completed (issue 24.4): a pod that cannot mount its volumes (FailedMount,
FailedAttachVolume Events) or stays ContainerCreating past a threshold is stuck with the
kubelet's message; its Events are read only when due (pod_events.py); the resync forgets pods
and Events deleted while their watch was away. Pure parts and the reconcile over the fake API;
the Event path on the real control plane: test_stuck_stages.py (mount)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import SimpleNamespace

from sheepdog.kube import observe as obs
from sheepdog.kube import stuck
from sheepdog.kube.cache import WatchCache
from sheepdog.kube.handlers import Dispatcher
from sheepdog.kube.pod_events import PodEventsReader
from sheepdog.kube.reconcile import Result
from sheepdog.planner import plan
from sheepdog.planner.actions import StageObservation
from tests.operator.test_stuck import job, pod
from tests.planner.simulate import LAYOUT, RUN, make_spec

CREATED = "2026-01-01T00:00:02Z"
MOUNT = ('MountVolume.SetUp failed for volume "keys" : secret "ssh-keys" not found')
MULTI = ('Multi-Attach error for volume "pvc-1" Volume is already used by pod(s) other-0')


def creating(name="r-i1-train-abc"):
    return pod(name=name, waiting=("ContainerCreating", ""), created=CREATED)


def event(reason, message, pod_name="r-i1-train-abc", at="2026-01-01T00:01:00Z"):
    return {"reason": reason, "message": message, "type": "Warning", "lastTimestamp": at,
            "involvedObject": {"kind": "Pod", "name": pod_name}}


def at(seconds):
    return f"2026-01-01T{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}Z"


def test_a_failed_mount_event_names_why_a_pod_is_being_created_for_ever():
    s = stuck.job_stuck(job(active=1), [creating()], [event("FailedMount", MOUNT)], at(90))
    assert s.reason == "VolumeMountFailing" and s.since == CREATED
    assert s.message == f"pod r-i1-train-abc: FailedMount: {MOUNT}"  # the kubelet's words
    # the attach-detach controller's, the latest wins
    both = [event("FailedMount", MOUNT), event("FailedAttachVolume", MULTI, at="2026-01-01T00:02:00Z")]
    assert MULTI in stuck.job_stuck(job(active=1), [creating()], both, at(200)).message
    # another pod's Event, or another reason, says nothing about this one
    other = [event("FailedMount", MOUNT, pod_name="other"), event("Pulling", "Pulling image")]
    assert stuck.job_stuck(job(active=1), [creating()], other, at(90)) is None


def test_container_creating_past_the_threshold_is_stuck_without_an_event():
    limit = int(stuck.CREATING_THRESHOLD)
    assert stuck.job_stuck(job(active=1), [creating()], [], at(2 + limit - 1)) is None
    s = stuck.job_stuck(job(active=1), [creating()], [], at(2 + limit))
    assert s.reason == "ContainerCreatingTooLong" and "ContainerCreating for 15 min" in s.message
    # a running pod, or a pod waiting for another reason, is not "being created"
    assert not stuck.creating(pod(phase="Running")) and not stuck.creating(pod())
    assert stuck.job_stuck(job(active=1, ready=1), [pod(phase="Running")], [], at(5000)) is None
    # the pod watch's signature stays free of Events and time: a pod being created is no news
    assert stuck.pod_signature(creating()) is None


def test_the_planner_fails_a_mount_at_pending_timeout_and_never_a_slow_creation():
    spec = make_spec(iterations=1, stages={"synthesize": {"pendingTimeout": "30m"}})
    first = plan(RUN, spec, None, [], LAYOUT, at(0), 1)

    def running(reason):
        return [StageObservation(1, "synthesize", "running", started_at=at(0), stuck_reason=reason,
                                 stuck_message="pod p: ...", stuck_since=at(0))]

    mount = plan(RUN, spec, first.status, running("VolumeMountFailing"), LAYOUT, at(31 * 60), 1)
    assert mount.status.phase == "Failed" and "pendingTimeout 30m: VolumeMountFailing" in mount.status.message
    slow = plan(RUN, spec, first.status, running("ContainerCreatingTooLong"), LAYOUT, at(5 * 3600), 1)
    assert (slow.status.phase, slow.status.reason) == ("Running", "ContainerCreatingTooLong")


def test_a_pods_events_are_read_after_the_grace_and_once_per_interval():
    calls = []
    clock = [0.0]
    reader = PodEventsReader(lambda ns, p: calls.append(p) or [event("FailedMount", MOUNT, p)], interval=60,
                             clock=lambda: clock[0])
    young = reader.merge("ns", [creating()], {}, at(2 + int(stuck.MOUNT_GRACE) - 1))
    assert young == {} and calls == []  # most pods leave ContainerCreating fast: no request
    merged = reader.merge("ns", [creating(), pod(name="running", phase="Running")], {"r-i1-train": []}, at(60))
    assert calls == ["r-i1-train-abc"] and [e["reason"] for e in merged["r-i1-train"]] == ["FailedMount"]
    clock[0] = 30.0
    reader.merge("ns", [creating()], {}, at(90))
    assert calls == ["r-i1-train-abc"]  # within the interval: the Events as read
    clock[0] = 61.0
    reader.merge("ns", [creating()], {}, at(121))
    assert calls == ["r-i1-train-abc"] * 2
    reader.forget("ns", "r-i1-train-abc")
    reader.merge("ns", [creating()], {}, at(122))
    assert len(calls) == 3  # forgotten (it ran, or went): read afresh


def test_the_reconcile_reports_a_mount_failure_with_the_kubelets_message():
    from tests.operator.test_observe import FakeKube, make_run_obj, reconciler

    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.clock = lambda: "2025-01-01T00:05:00Z"
    rec.reconcile("ns", "r")
    job_obj = kube.jobs["r-i1-synthesize"]
    job_obj["status"] = {"startTime": "2025-01-01T00:00:01Z", "active": 1}
    p = pod(name="r-i1-synthesize-x", waiting=("ContainerCreating", ""), created="2025-01-01T00:00:02Z")
    p["metadata"].update(namespace="ns", resourceVersion="7",
                         labels={"batch.kubernetes.io/job-name": "r-i1-synthesize", "sheepdog.dev/run": "r"})
    kube.pod_events = [event("FailedMount", MOUNT, "r-i1-synthesize-x")]
    assert not rec.pod_changed("ns", "r-i1-synthesize-x", p)  # remembered, no news by itself
    rec.reconcile("ns", "r")
    st = kube.run["status"]
    assert st["reason"] == "VolumeMountFailing" and MOUNT in st["message"], st
    assert ("event", "VolumeMountFailing") in kube.writes
    assert [w for w in kube.writes if w[0] == "list_pod_events"] == [("list_pod_events", "r-i1-synthesize-x")]
    # the pod runs: forgotten, no more reads, no longer stuck
    running = {**p, "status": {"phase": "Running"}}
    assert rec.pod_changed("ns", "r-i1-synthesize-x", running)
    job_obj["status"]["ready"] = 1
    rec.reconcile("ns", "r")
    assert kube.run["status"]["reason"] != "VolumeMountFailing"
    assert len([w for w in kube.writes if w[0] == "list_pod_events"]) == 1


def test_the_resync_forgets_pods_and_events_deleted_while_the_watch_was_away():
    cache = WatchCache()
    gone_pod = {"metadata": {"namespace": "ns", "name": "p-old", "resourceVersion": "5",
                             "labels": {"batch.kubernetes.io/job-name": "r-i1-train"}}, "status": {"phase": "Pending"}}
    new_pod = {"metadata": {"namespace": "ns", "name": "p-new", "resourceVersion": "50",
                            "labels": {"batch.kubernetes.io/job-name": "r-i1-train"}}, "status": {"phase": "Pending"}}
    old_event = {"metadata": {"namespace": "ns", "name": "e-old", "resourceVersion": "6"}, "reason": "FailedCreate",
                 "involvedObject": {"kind": "Job", "name": "r-i1-train"}}
    for p in (gone_pod, new_pod):
        cache.put_pod(p)
    cache.put_event(old_event)
    pruned = []

    class Listing(list):
        resource_version = "20"

    class Kube:
        def list_runs(self, namespace):
            return Listing()

        def list_stage_jobs(self, namespace):
            return Listing()

        def list_stage_pods(self, namespace):
            return Listing()

        def list_failed_create_events(self, namespace):
            return Listing()

    rec = SimpleNamespace(kube=Kube(), cache=cache, metrics=SimpleNamespace(known_runs=lambda: set()),
                          prune_pods=lambda ns, items, rv: pruned.append((ns, rv)) or 0,
                          reconcile=lambda ns, name: Result())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        asyncio.run(Dispatcher(rec, pool).resync(["ns"], concurrency=1))
    # deleted before the LIST: gone; created after it (a newer resourceVersion): kept
    assert [p["metadata"]["name"] for p in cache.pods("ns", ["r-i1-train"])] == ["p-new"]
    assert cache.job_events("ns", "r-i1-train") == [] and pruned == [("ns", "20")]


def test_the_reconciler_forgets_stuck_pods_the_listing_lacks():
    from tests.operator.test_observe import FakeKube, make_run_obj, reconciler

    rec = reconciler(FakeKube(make_run_obj()))
    stuck_pod = pod(name="p1", unschedulable="0/2 nodes")
    stuck_pod["metadata"].update(namespace="ns", resourceVersion="5")
    assert rec.pod_changed("ns", "p1", stuck_pod)
    assert rec.prune_pods("ns", [], None) == 0  # a LIST that cannot be placed in time drops nothing
    assert rec.prune_pods("ns", [stuck_pod], "9") == 0 and len(rec.stuck_pods("ns")) == 1
    assert rec.prune_pods("ns", [], "9") == 1 and rec.stuck_pods("ns") == []
    # observe() with the pod gone: the run's stage is no longer stuck
    assert obs.observe([job(active=1)], {}, rec.stuck_pods("ns"))[0].stuck_reason == ""
