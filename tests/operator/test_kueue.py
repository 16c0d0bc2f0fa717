"""Runs under a real Kueue (tests/cluster/kueue.py: Kueue's controller built from its Go module,
with its CRDs and webhooks, on the test control plane; issue 24 item 6).

Each test gets a ClusterQueue and a LocalQueue of its own (the namespace's name), with
`nvidia.com/gpu` quota as it needs and CPU and memory plenty; the runs name the LocalQueue in
spec.scheduling.queueName. Proved here:
  - a run's Jobs carry Kueue's queue label, are created suspended and are admitted by Kueue
    (their Workloads are Admitted, then Finished) within quota;
  - a run beyond the quota waits: its Job stays suspended, its Workload has no quota reserved,
    the run is Running with reason NotAdmitted and a "queued" message (never Failed), and it goes
    on as soon as the other run's stage frees the quota; GPU stages never overlap beyond it;
  - the run's suspend and a stage timeout stop an admitted Job through its Workload
    (spec.active false): Kueue does not give it its pods back; a resume queues it again;
  - a multi-node train is one Workload admitted all or nothing.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster.kueue import QUEUE_LABEL
from tests.operator.conftest import events_of, get_run, run_manifest, stage_jobs, wait_phase

pytestmark = pytest.mark.cluster

PLENTY = {"cpu": "1000", "memory": "4000Gi"}


def quota(gpus: int) -> dict[str, str]:
    return {**PLENTY, "nvidia.com/gpu": str(gpus)}


@pytest.fixture
def queue(cluster, namespace, kueue):
    """A LocalQueue (and ClusterQueue) named after the test's namespace, 1 GPU of quota."""
    name = kueue.create_queues(namespace, namespace, quota(gpus=1))
    yield name
    kueue.delete_cluster_queue(name)


def workload_of(kueue, namespace: str, job: dict) -> dict | None:
    uid = job["metadata"]["uid"]
    return next((w for w in kueue.workloads(namespace)
                 if any(r.get("uid") == uid for r in w["metadata"].get("ownerReferences") or ())), None)


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == type_), {})


def job_of(cluster, namespace: str, name: str) -> dict | None:
    res = cluster.kubectl("get", "job", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def running_pods(cluster, namespace: str, job: str) -> list[dict]:
    return [p for p in cluster.get_json("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")["items"]
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") in ("Pending", "Running")]


def test_runs_are_admitted_within_quota_and_wait_beyond_it(cluster, namespace, storage, kueue, queue, operator_process):
    sched = {"queueName": queue}
    # the first run's synthesize holds the only GPU of the quota for a while
    cluster.apply(run_manifest("first", namespace, iterations=1, scheduling=sched,
                               extra_annotations={"synthesize": {"sheepdog.test/duration": "15s"}}))
    first_job = "first-i1-synthesize"
    cluster.wait_for("first's synthesize pod running", lambda: running_pods(cluster, namespace, first_job),
                     timeout=60)
    job = job_of(cluster, namespace, first_job)
    assert job["metadata"]["labels"][QUEUE_LABEL] == queue and job["spec"]["suspend"] is False
    wl = cluster.wait_for("first's Workload Admitted", lambda: (lambda w: w if w and condition(
        w, "Admitted").get("status") == "True" else None)(workload_of(kueue, namespace, job)), timeout=30)
    assert wl["status"]["admission"]["clusterQueue"] == queue

    cluster.apply(run_manifest("second", namespace, iterations=1, scheduling=sched))
    second_job = "second-i1-synthesize"

    def queued():
        st = get_run(cluster, namespace, "second").get("status") or {}
        return st if st.get("reason") == "NotAdmitted" else None

    st = cluster.wait_for("second run NotAdmitted", queued, timeout=30)
    assert st["phase"] == "Running", st
    assert "synthesize queued: NotAdmitted" in st["message"] and f"LocalQueue {queue}" in st["message"], st
    job = job_of(cluster, namespace, second_job)
    assert job["spec"]["suspend"] is True and not running_pods(cluster, namespace, second_job)
    wl = cluster.wait_for("second's Workload", lambda: workload_of(kueue, namespace, job), timeout=30)
    reserved = cluster.wait_for("Kueue's verdict on second's Workload", lambda: condition(
        workload_of(kueue, namespace, job), "QuotaReserved") or None, timeout=30)
    assert reserved["status"] == "False" and "insufficient" in reserved["message"].lower(), reserved
    assert not condition(wl, "Admitted").get("status") == "True"

    # the quota frees when first's synthesize ends: second goes on, and both finish
    for name in ("first", "second"):
        st = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=240)
        assert st["phase"] == "Succeeded", st
    assert "NotAdmitted" in [e["reason"] for e in events_of(cluster, namespace, "second")]
    jobs = stage_jobs(cluster, namespace)
    assert {j["metadata"]["name"] for j in jobs} >= {first_job, second_job}
    gpu_spans = []
    for j in jobs:
        assert j["metadata"]["labels"][QUEUE_LABEL] == queue, j["metadata"]
        wl = workload_of(kueue, namespace, j)
        assert wl is not None and condition(wl, "Finished").get("status") == "True", (j["metadata"]["name"], wl)
        gpus = sum(int((c.get("resources") or {}).get("requests", {}).get("nvidia.com/gpu", 0))
                   for c in j["spec"]["template"]["spec"]["containers"])
        if gpus:
            gpu_spans.append((j["status"]["startTime"], j["status"]["completionTime"], j["metadata"]["name"]))
    # one GPU of quota: no two GPU stages ever ran at once (RFC 3339 UTC strings sort as times)
    gpu_spans.sort()
    for (_, end, a), (start, _, b) in zip(gpu_spans, gpu_spans[1:]):
        assert start >= end, f"{b} started at {start} before {a} ended at {end}"
    starts = {name: start for start, _, name in gpu_spans}
    ends = {name: end for _, end, name in gpu_spans}
    assert starts[second_job] >= ends[first_job]


def test_suspend_stops_an_admitted_job_through_its_workload_and_resume_queues_it(
        cluster, namespace, storage, kueue, queue, operator_process):
    name, job_name = "pausable", "pausable-i1-synthesize"
    cluster.apply(run_manifest(name, namespace, iterations=1, scheduling={"queueName": queue},
                               extra_annotations={"synthesize": {"sheepdog.test/duration": "30s"}}))
    cluster.wait_for("synthesize pod running", lambda: running_pods(cluster, namespace, job_name), timeout=60)
    job = job_of(cluster, namespace, job_name)

    cluster.kubectl("patch", "selfalignmentrun", name, "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"suspend": True}}))
    st = wait_phase(cluster, namespace, name, ("Suspended",), timeout=60)
    assert "GPUs freed" in st["message"], st
    # Kueue evicted the Workload (deactivated): quota released, the Job suspended by Kueue itself
    wl = cluster.wait_for("the Workload evicted and its quota released", lambda: (lambda w: w if w and condition(
        w, "QuotaReserved").get("status") == "False" and condition(w, "Evicted").get("status") == "True" else None)(
        workload_of(kueue, namespace, job)), timeout=60)
    assert wl["spec"]["active"] is False
    assert condition(wl, "Evicted")["reason"] in ("Deactivated", "InactiveWorkload"), condition(wl, "Evicted")
    cluster.wait_for("the pods gone", lambda: not running_pods(cluster, namespace, job_name), timeout=60)
    # Kueue has settled (eviction done): the Job stays suspended, and a later reconcile of the
    # suspended run (an edit) changes nothing
    cluster.kubectl("patch", "selfalignmentrun", name, "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"synthesis": {"maxTokens": 65}}}))
    cluster.wait_for("the edit reconciled", lambda: (get_run(cluster, namespace, name).get("status") or {}).get(
        "observedGeneration") == get_run(cluster, namespace, name)["metadata"]["generation"], timeout=60)
    assert job_of(cluster, namespace, job_name)["spec"]["suspend"] is True
    assert not running_pods(cluster, namespace, job_name)
    assert get_run(cluster, namespace, name)["status"]["phase"] == "Suspended"

    cluster.kubectl("patch", "selfalignmentrun", name, "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"suspend": False}}))
    cluster.wait_for("the Workload active and admitted again", lambda: (lambda w: w if w and w["spec"].get(
        "active") is not False and condition(w, "Admitted").get("status") == "True" else None)(
        workload_of(kueue, namespace, job)), timeout=60)
    st = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert st["phase"] == "Succeeded", st
    reasons = [e["reason"] for e in events_of(cluster, namespace, name)]
    assert "Suspended" in reasons and "Resumed" in reasons, reasons


def test_a_failed_runs_admitted_job_never_gets_its_pods_back(cluster, namespace, storage, kueue, queue, operator_process):
    """A stage whose pod cannot start (an image that cannot be pulled) fails at its
    pendingTimeout; its Job, which Kueue admitted, is stopped through its Workload and stays so."""
    name, job_name = "doomed", "doomed-i1-synthesize"
    cluster.apply(run_manifest(name, namespace, iterations=1, scheduling={"queueName": queue},
                               stages={"synthesize": {"gpus": 1, "tensorParallel": 1, "pendingTimeout": "5s"}},
                               extra_annotations={"synthesize": {"sheepdog.test/waiting-reason": "ImagePullBackOff",
                                                                 "sheepdog.test/waiting-message": "Back-off"}}))
    st = wait_phase(cluster, namespace, name, ("Failed",), timeout=90)
    assert "pendingTimeout 5s" in st["message"] and "ImagePullFailing" in st["message"], st
    job = job_of(cluster, namespace, job_name)
    wl = cluster.wait_for("the Workload evicted and its quota released", lambda: (lambda w: w if w and condition(
        w, "QuotaReserved").get("status") == "False" and condition(w, "Evicted").get("status") == "True" else None)(
        workload_of(kueue, namespace, job)), timeout=60)
    assert wl["spec"]["active"] is False
    cluster.wait_for("the pods gone", lambda: not running_pods(cluster, namespace, job_name), timeout=60)
    # another queued Job is admitted through the quota the failed one released, and after it
    # the failed run's Job is still suspended, without pods
    cluster.apply(run_manifest("next", namespace, iterations=1, scheduling={"queueName": queue}))
    st = wait_phase(cluster, namespace, "next", ("Succeeded", "Failed"), timeout=180)
    assert st["phase"] == "Succeeded", st
    assert job_of(cluster, namespace, job_name)["spec"]["suspend"] is True
    assert not running_pods(cluster, namespace, job_name)
    assert workload_of(kueue, namespace, job)["spec"]["active"] is False


def test_a_multinode_train_is_admitted_all_or_nothing(cluster, namespace, storage, kueue, queue, operator_process):
    """Two train nodes of one GPU each under a quota of one GPU: Kueue admits neither pod (no
    partial admission); raised to two, both start together."""
    name, job_name = "wide", "wide-i1-train"
    stages = {"synthesize": {"gpus": 1, "tensorParallel": 1}, "train": {"gpus": 1, "nodes": 2}}
    cluster.apply(run_manifest(name, namespace, iterations=1, scheduling={"queueName": queue}, stages=stages))

    def train_queued():
        st = get_run(cluster, namespace, name).get("status") or {}
        return st if st.get("reason") == "NotAdmitted" and "train" in st.get("message", "") else None

    st = cluster.wait_for("the train NotAdmitted", train_queued, timeout=120)
    assert st["phase"] == "Running", st
    job = job_of(cluster, namespace, job_name)
    wl = cluster.wait_for("train's Workload judged", lambda: (lambda w: w if w and condition(
        w, "QuotaReserved") else None)(workload_of(kueue, namespace, job)), timeout=30)
    [podset] = wl["spec"]["podSets"]
    assert podset["count"] == 2, podset
    assert condition(wl, "QuotaReserved")["status"] == "False", wl["status"]
    assert job["spec"]["suspend"] is True and not running_pods(cluster, namespace, job_name)

    cluster.kubectl("patch", "clusterqueue", queue, "--type=json", "-p", json.dumps([
        {"op": "replace", "path": "/spec/resourceGroups/0/flavors/0/resources/2/nominalQuota", "value": "2"}]))
    st = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert st["phase"] == "Succeeded", st
    job = job_of(cluster, namespace, job_name)
    assert job["status"]["succeeded"] == 2
    wl = workload_of(kueue, namespace, job)
    [assignment] = wl["status"]["admission"]["podSetAssignments"]
    assert assignment["count"] == 2 and assignment["resourceUsage"]["nvidia.com/gpu"] == "2", assignment
