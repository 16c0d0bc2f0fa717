"""Job (and pod) dicts -> StageObservations: sheepdog.kube.observe, no cluster."""

from __future__ import annotations

import json

from sheepdog.kube import observe as obs


def job(name="r-i1-synthesize", iteration=1, stage="synthesize", conditions=(), **status):
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {obs.LABEL_RUN: "r", obs.LABEL_ITERATION: str(iteration), obs.LABEL_STAGE: stage},
        },
        "status": {"startTime": "2025-01-01T00:00:01Z", **status, "conditions": list(conditions)},
    }


def cond(type_, reason="", message="", at="2025-01-01T00:01:00Z"):
    return {"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at}


def pod(name, job_name, phase, message=None, finished="2025-01-01T00:00:59Z", exit_code=0, index=None):
    term = {"exitCode": exit_code, "finishedAt": finished, "reason": "Completed" if exit_code == 0 else "Error"}
    if message is not None:
        term["message"] = message
    meta = {"name": name, "labels": {"batch.kubernetes.io/job-name": job_name, "job-name": job_name}}
    if index is not None:
        meta["annotations"] = {obs.COMPLETION_INDEX_ANNOTATION: str(index)}
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": [{"name": "stage", "state": {"terminated": term}}]}}


SUMMARY = {"stage": "synthesize", "iteration": 1, "ok": True, "generated": 20, "assessed": 18,
           "parseFailures": 1, "meanQuality": 7.5, "meanFollowing": 8.0}


def test_running_job_counts_the_active_attempt():
    o = obs.observe_job(job(active=1), {})
    assert (o.state, o.attempts, o.summary, o.finished_at) == ("running", 1, None, None)
    assert o.started_at == "2025-01-01T00:00:01Z"
    # retried: two failed pods, a third running
    o = obs.observe_job(job(active=1, failed=2), {})
    assert (o.state, o.attempts) == ("running", 3)
    assert "2 failed" in o.message
    # created, no pod yet: its first attempt is in progress from the moment the Job exists, so
    # the status written at creation already holds the figure the Job's first updates would give
    o = obs.observe_job(job(), {})
    assert (o.state, o.attempts) == ("running", 1)
    # between attempts: one pod failed, its replacement not created yet (it may never be)
    o = obs.observe_job(job(failed=1), {})
    assert (o.state, o.attempts) == ("running", 1)


def test_succeeded_job_reads_summary_from_the_succeeded_pod():
    j = job(succeeded=1, failed=1, completionTime="2025-01-01T00:01:00Z", conditions=[cond("Complete")])
    pods = [
        pod("p1", "r-i1-synthesize", "Failed", message='{"ok": false, "error": "oom"}', exit_code=1,
            finished="2025-01-01T00:00:30Z"),
        pod("p2", "r-i1-synthesize", "Succeeded", message="log line\n" + json.dumps(SUMMARY)),
        pod("other", "r-i1-curate", "Succeeded", message='{"kept": 1}'),
    ]
    assert obs.needs_pods(j, {})
    [o] = obs.observe([j], {}, pods)
    assert (o.state, o.attempts, o.finished_at) == ("succeeded", 2, "2025-01-01T00:01:00Z")
    assert o.summary == SUMMARY


def test_succeeded_without_readable_summary_is_not_a_failure():
    j = job(succeeded=1, conditions=[cond("Complete")])
    [o] = obs.observe([j], {}, [pod("p", "r-i1-synthesize", "Succeeded", message="not json")])
    assert o.state == "succeeded" and o.summary is None
    [o] = obs.observe([j], {}, [])
    assert o.state == "succeeded" and o.summary is None


def test_recorded_outcome_does_not_need_pods_again():
    status = {"iterations": [{"iteration": 1, "stages": {"synthesize": {"phase": "Succeeded", "summary": SUMMARY}}}]}
    j = job(succeeded=1, conditions=[cond("Complete")])
    assert not obs.needs_pods(j, status)
    [o] = obs.observe([j], status, [])
    assert o.summary == SUMMARY
    # a running Job never needs its pods
    assert not obs.needs_pods(job(active=1), {})


def test_the_failed_job_of_a_retried_stage_needs_no_pods_and_its_retry_is_observed():
    """After a retry request (recovery_policy) the failed Job stays; its pods are not read again
    at every reconcile, and the new Job's observation says which retry it is."""
    status = {"iterations": [{"iteration": 1, "stages": {"synthesize": {"phase": "Pending", "retries": 1}}}]}
    failed = job(failed=3, conditions=[cond("Failed", "BackoffLimitExceeded")])
    assert not obs.needs_pods(failed, status)
    assert obs.needs_pods(failed, {})  # a failure not recorded yet is read
    retried = job(name="r-i1-synthesize-r1", failed=1, conditions=[cond("Failed", "BackoffLimitExceeded")])
    retried["metadata"]["labels"][obs.LABEL_RETRY] = "1"
    assert obs.needs_pods(retried, status)
    assert [o.retry for o in obs.observe([failed, retried], status, [])] == [0, 1]


def test_failed_job_message_has_condition_and_last_pod():
    j = job(failed=3, conditions=[cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")])
    pods = [
        pod("a", "r-i1-synthesize", "Failed", exit_code=1, finished="2025-01-01T00:00:10Z"),
        pod("b", "r-i1-synthesize", "Failed", message='{"ok": false, "error": "CUDA out of memory"}', exit_code=1,
            finished="2025-01-01T00:00:50Z"),
        pod("c", "r-i1-synthesize", "Failed", message="Traceback: boom", exit_code=1, finished="2025-01-01T00:00:20Z"),
    ]
    [o] = obs.observe([j], {}, pods)
    assert (o.state, o.attempts) == ("failed", 3)
    assert o.message.startswith("BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert "last pod b: CUDA out of memory" in o.message
    assert o.finished_at == "2025-01-01T00:01:00Z"
    # without a termination message: the exit code
    [o] = obs.observe([j], {}, pods[:1])
    assert "last pod a: Error (exit code 1)" in o.message
    # deadline exceeded, no pods left
    j = job(failed=1, conditions=[cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")])
    [o] = obs.observe([j], {}, [])
    assert o.message == "DeadlineExceeded: Job was active longer than specified deadline"


def test_non_stage_jobs_are_ignored_and_output_is_ordered():
    stray = {"metadata": {"name": "x", "labels": {obs.LABEL_RUN: "r"}}, "status": {}}
    jobs = [job("r-i2-synthesize", 2, "synthesize", active=1), stray, job("r-i1-train", 1, "train", active=1)]
    out = obs.observe(jobs, {})
    assert [(o.iteration, o.stage) for o in out] == [(1, "train"), (2, "synthesize")]


def test_indexed_job_summaries_are_merged():
    j = job(succeeded=2, conditions=[cond("Complete")])
    a = {"stage": "synthesize", "generated": 10, "assessed": 10, "parseFailures": 1, "meanQuality": 8.0,
         "meanFollowing": 6.0, "seconds": 5, "ok": True}
    b = {"stage": "synthesize", "generated": 12, "assessed": 30, "parseFailures": 0, "meanQuality": 4.0,
         "meanFollowing": 6.0, "seconds": 9, "ok": True}
    pods = [pod("p1", "r-i1-synthesize", "Succeeded", json.dumps(b), index=1),
            pod("p0", "r-i1-synthesize", "Succeeded", json.dumps(a), index=0)]
    [o] = obs.observe([j], {}, pods)
    s = o.summary
    assert (s["generated"], s["assessed"], s["parseFailures"], s["seconds"], s["pods"]) == (22, 40, 1, 9, 2)
    assert s["meanQuality"] == (8.0 * 10 + 4.0 * 30) / 40
    assert s["meanFollowing"] == 6.0


def test_parse_summary_last_json_line_wins():
    assert obs.parse_summary('{"a": 1}\nnoise\n{"b": 2}\n') == {"b": 2}
    assert obs.parse_summary("[1, 2]") is None
    assert obs.parse_summary("") is None
    assert obs.parse_summary("{broken") is None


# --- the reconcile around observe: observe -> plan -> act, over a fake API --------------------

import copy  # noqa: E402

import pytest  # noqa: E402

from sheepdog.kube.cache import WatchCache  # noqa: E402
from sheepdog.kube.client import Conflict  # noqa: E402
from sheepdog.kube.metrics import Metrics  # noqa: E402
from sheepdog.kube.pod_passthrough import passthrough_annotations  # noqa: E402
from sheepdog.kube.reconcile import Options, Reconciler  # noqa: E402


class FakeKube:
    """The KubeApi surface of a reconcile, in memory; records every write (and pod LIST) in
    order. `cache` is what the operator's watches would have delivered: `deliver()` brings it
    up to date, as the watch events of every change would."""

    def __init__(self, run):
        self.cache = WatchCache()
        self.run = run
        self.jobs: dict[str, dict] = {}
        self.pods: list[dict] = []
        self.writes: list[tuple[str, str]] = []
        self.events: dict[str, list[dict]] = {}  # Job name -> its Events (the watch delivers them)
        self.create_error: Exception | None = None  # raised by the next creates
        self.pod_events: list[dict] = []  # Events about pods (FailedMount: the kubelet's)
        self.dry_runs: list[dict] = []  # the pre-flight's dry-run Jobs (not writes: nothing is stored)
        self.dry_run_error: dict[str, Exception] = {}  # stage -> the API server's refusal of its Job
        self.posted_events: dict[str, dict] = {}  # Event name -> the run's Events posted
        self.rv = 1
        self.run["metadata"]["resourceVersion"] = "1"

    def get_run(self, namespace, name):
        return copy.deepcopy(self.run) if self.run else None

    def list_runs(self, namespace):
        return [copy.deepcopy(self.run)] if self.run else []

    def list_stage_jobs(self, namespace):
        return [copy.deepcopy(j) for j in self.jobs.values()]

    def deliver(self):
        """The watch events of everything that changed (the cache as after a re-list)."""
        if self.run:
            self.cache.put_run(self.run)
        self.cache.relist("jobs", None, list(self.jobs.values()), None)
        for name in {j["metadata"]["name"] for j in self.cache._jobs.objects.values()} - set(self.jobs):
            self.cache.drop_job("ns", name)
        for p in self.pods:  # the helper's pods name no namespace
            self.cache.put_pod({**p, "metadata": {"namespace": "ns", **p["metadata"]}})
        for job, events in self.events.items():
            for i, e in enumerate(events):
                self.cache.put_event({**e, "metadata": {"namespace": "ns", "name": f"{job}.{i}"},
                                      "involvedObject": {"kind": "Job", "name": job}})

    def list_pods(self, namespace, job_names):
        self.writes.append(("list_pods", ",".join(sorted(job_names))))
        return [p for p in self.pods if p["metadata"]["labels"]["job-name"] in set(job_names)]

    def get_job(self, namespace, name):
        return copy.deepcopy(self.jobs.get(name))

    def suspend_job(self, namespace, name, suspend):
        self.jobs[name].setdefault("spec", {})["suspend"] = suspend
        self.writes.append(("suspend", f"{name}:{suspend}"))

    def create(self, namespace, obj):
        name = obj["metadata"]["name"]
        if self.create_error is not None:
            raise self.create_error
        if obj["kind"] != "Job":
            return copy.deepcopy(obj)
        if name in self.jobs:
            self.writes.append(("exists", name))
            return None
        obj = copy.deepcopy(obj)
        obj["status"] = {}
        self.jobs[name] = obj
        self.writes.append(("create", name))
        return copy.deepcopy(obj)

    def list_pod_events(self, namespace, pod):
        self.writes.append(("list_pod_events", pod))
        return [e for e in self.pod_events if e["involvedObject"]["name"] == pod]

    def dry_run_create(self, namespace, obj):
        self.dry_runs.append(obj)
        error = self.dry_run_error.get(obj["metadata"]["labels"]["sheepdog.dev/stage"])
        if error is not None:
            raise error

    def replace_run_status(self, run, status):
        if run["metadata"]["resourceVersion"] != self.run["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        self.rv += 1
        self.run["status"] = copy.deepcopy(status)
        self.run["metadata"]["resourceVersion"] = str(self.rv)
        self.writes.append(("status", status["phase"] + "/" + status["reason"]))
        return self.run

    def create_event(self, namespace, event):
        """As the API server does: an Event whose name exists is refused (409)."""
        name = event["metadata"]["name"]
        if name in self.posted_events:
            self.writes.append(("event-exists", event["reason"]))
            return False
        self.posted_events[name] = copy.deepcopy(event)
        self.writes.append(("event", event["reason"]))
        return True

    # the Job controller and kwok, by hand
    def finish(self, name, ok=True, message=None, failed=0):
        j = self.jobs[name]
        t = "2025-01-01T00:00:10Z"
        j["status"] = {"startTime": "2025-01-01T00:00:01Z", "failed": failed}
        if ok:
            j["status"].update(succeeded=1, completionTime=t, conditions=[cond("Complete", at=t)])
            self.pods.append(pod(name + "-x", name, "Succeeded", message=message))
        else:
            j["status"]["conditions"] = [cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit", at=t)]
            self.pods.append(pod(name + "-x", name, "Failed", message=message, exit_code=1))


def make_run_obj(**spec):
    return {
        "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 1, "annotations": {}},
        "spec": {"model": {"base": "models/tiny"}, "iterations": 1, "synthesis": {"dataSize": 4}, **spec},
    }


class WatchedReconciler(Reconciler):
    """Each reconcile after the watches delivered every change (what a trigger means)."""

    def reconcile(self, namespace, name):
        self.kube.deliver()
        return super().reconcile(namespace, name)


def reconciler(kube, watched=True, **opts):
    """watched=False: the cache holds only what the reconciles themselves put there (their
    own writes) and what a test delivers: a watch that lags."""
    cls = WatchedReconciler if watched else Reconciler
    return cls(kube, Metrics(), Options(**opts), clock=lambda: "2025-01-01T00:00:00Z", cache=kube.cache)


def test_reconcile_walks_an_iteration_creating_each_job_once():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    r = rec.reconcile("ns", "r")
    assert r.created == ["r-i1-synthesize"] and r.status_written
    # Job first, then the status, then the events
    kinds = [w[0] for w in kube.writes]
    assert kinds.index("create") < kinds.index("status") < kinds.index("event")
    job = kube.jobs["r-i1-synthesize"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"

    # the one status write of the creating reconcile already records the Job as running, with
    # its first attempt: the Job's own updates are no news (one status write per transition)
    stage = kube.run["status"]["iterations"][0]["stages"]["synthesize"]
    assert (stage["phase"], stage["attempts"]) == ("Running", 1), stage
    assert [w[0] for w in kube.writes].count("status") == 1
    kube.jobs["r-i1-synthesize"]["status"] = {"startTime": "2025-01-01T00:00:01Z", "active": 1}
    kube.cache.put_job(kube.jobs["r-i1-synthesize"])
    # again, nothing new: no create, no status write, no event
    kube.writes.clear()
    r = rec.reconcile("ns", "r")
    assert not r.created and not r.status_written and not r.events
    assert [w[0] for w in kube.writes] == []

    for stage, summary in (("synthesize", SUMMARY), ("curate", {"kept": 3, "keepRate": 0.75}),
                           ("train", {"trainLoss": 0.5})):
        kube.finish(f"r-i1-{stage}", message=json.dumps(summary))
        r = rec.reconcile("ns", "r")
    assert r.phase == "Succeeded" and r.done
    assert sorted(kube.jobs) == ["r-i1-curate", "r-i1-synthesize", "r-i1-train"]
    rec1 = kube.run["status"]["iterations"][0]
    assert (rec1["generated"], rec1["kept"], rec1["keepRate"], rec1["trainLoss"]) == (20, 3, 0.75, 0.5)
    assert rec1["model"] == "runs/r/i1/model"
    # the finished Jobs' pods came from the watch, not from a LIST
    assert [w for w in kube.writes if w[0] == "list_pods"] == []
    kube.writes.clear()
    r = rec.reconcile("ns", "r")
    assert kube.writes == [] and r.phase == "Succeeded"


def test_a_job_created_for_kueue_is_stuck_from_the_reconcile_that_creates_it():
    """The creating reconcile records the new Job as it is: one Kueue holds is NotAdmitted at
    once, and that write carries its Warning (the next reconcile finds the reason recorded)."""
    kube = FakeKube(make_run_obj(scheduling={"queueName": "gpu-queue"}))
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    assert kube.jobs["r-i1-synthesize"]["spec"]["suspend"] is True
    assert kube.run["status"]["reason"] == "NotAdmitted", kube.run["status"]
    assert [w for w in kube.writes if w[0] == "event"] == [("event", "StageStarting"), ("event", "NotAdmitted")]
    kube.writes.clear()
    rec.reconcile("ns", "r")
    assert kube.writes == []


def test_an_existing_job_is_not_created_twice():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    kube.run["status"] = {}  # e.g. the status write of the first reconcile was lost
    kube.writes.clear()
    r = rec.reconcile("ns", "r")
    assert r.created == [] and r.existing == []  # the Job is observed: nothing to start
    assert ("create", "r-i1-synthesize") not in kube.writes


def test_job_of_a_previous_run_with_the_same_name_is_ignored():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    kube.jobs["r-i1-synthesize"]["metadata"]["ownerReferences"][0]["uid"] = "old"
    kube.finish("r-i1-synthesize", message=json.dumps(SUMMARY))
    r = rec.reconcile("ns", "r")
    # not observed (not ours) -> the planner asks to start it -> 409 -> waits for the GC, and says so
    assert r.existing == [] and r.created == [] and r.phase == "Running"
    st = kube.run["status"]
    assert st["reason"] == "JobConflict" and "earlier run named r" in st["message"]
    assert r.recheck_after and ("Warning", "JobConflict") in r.events


def test_failed_stage_fails_the_run_with_the_pod_message():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    kube.finish("r-i1-synthesize", ok=False, failed=3, message='{"ok": false, "error": "model not found"}')
    r = rec.reconcile("ns", "r")
    st = kube.run["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "StageFailed")
    assert "model not found" in st["message"] and "3 attempts" in st["message"]
    assert ("Warning", "StageFailed") in r.events


def test_conflict_on_status_write_is_raised_for_a_retry_that_gets_the_run():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube, watched=False)
    kube.deliver()
    kube.run["metadata"]["resourceVersion"] = "99"  # someone wrote; its watch event is not here yet
    with pytest.raises(Conflict):
        rec.reconcile("ns", "r")
    assert not [w for w in kube.writes if w[0] == "event"]
    assert rec.cache.run("ns", "r") is None  # the stale copy is forgotten
    r = rec.reconcile("ns", "r")  # GETs the run; the Job it created is known from its POST
    assert r.status_written and r.created == [] and r.existing == []
    assert [w[1] for w in kube.writes if w[0] == "create"] == ["r-i1-synthesize"]


def test_invalid_spec_is_reported_not_acted_on():
    run = make_run_obj()
    run["spec"]["synthesis"] = {"dataSize": 0}
    kube = FakeKube(run)
    r = reconciler(kube).reconcile("ns", "r")
    st = kube.run["status"]
    assert st["reason"] == "InvalidSpec" and "synthesis.dataSize" in st["message"]
    assert not kube.jobs and ("Warning", "InvalidSpec") in r.events


def test_deleting_run_is_left_alone():
    run = make_run_obj()
    run["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    kube = FakeKube(run)
    r = reconciler(kube).reconcile("ns", "r")
    assert r.skipped == "deleting" and kube.writes == []


def test_test_pod_annotations_only_with_the_flag_and_only_test_keys():
    table = {"*": {"sheepdog.test/duration": "2s", "evil.io/x": "1"},
             "train": {"sheepdog.test/termination-message": '{"iteration": ${iteration}}'},
             "i2.train": {"sheepdog.test/fail": "true"}}
    run = make_run_obj()
    run["metadata"]["annotations"]["sheepdog.test/pod-annotations"] = json.dumps(table)
    assert passthrough_annotations(run, 1, "train") == {
        "sheepdog.test/duration": "2s", "sheepdog.test/termination-message": '{"iteration": 1}'}
    assert passthrough_annotations(run, 2, "train")["sheepdog.test/fail"] == "true"
    kube = FakeKube(run)
    reconciler(kube).reconcile("ns", "r")
    assert "annotations" not in kube.jobs["r-i1-synthesize"]["spec"]["template"]["metadata"]
    kube = FakeKube(copy.deepcopy(run))
    reconciler(kube, test_pod_annotations=True).reconcile("ns", "r")
    assert kube.jobs["r-i1-synthesize"]["spec"]["template"]["metadata"]["annotations"] == {"sheepdog.test/duration": "2s"}


def test_replacing_merge_patch_nulls_what_the_new_status_drops():
    from sheepdog.kube.client import replacing_merge_patch

    old = {"phase": "Succeeded", "finishedAt": "t", "iterations": [{"iteration": 1}],
           "x": {"a": 1, "b": {"c": 2, "d": 3}}}
    new = {"phase": "Running", "iterations": [{"iteration": 1}, {"iteration": 2}], "x": {"a": 1, "b": {"c": 2}}}
    patch = replacing_merge_patch(old, new)
    assert patch == {"phase": "Running", "finishedAt": None, "iterations": new["iterations"], "x": {"b": {"d": None}}}


def test_attempts_do_not_dip_while_the_job_controller_counts_a_failure():
    # the sequence of a Job whose pods fail (recorded from the real Job controller)
    seq = [dict(active=1), dict(uncountedTerminatedPods={"failed": ["u1"]}), dict(failed=1),
           dict(active=1, failed=1), dict(failed=1, uncountedTerminatedPods={"failed": ["u2"]}),
           dict(failed=2), dict(active=1, failed=2)]
    assert [obs.job_attempts(job(**st)) for st in seq] == [1, 1, 1, 2, 2, 2, 3]
    # and never below what status recorded
    status = {"iterations": [{"iteration": 1, "stages": {"synthesize": {"phase": "Running", "attempts": 3}}}]}
    assert obs.observe_job(job(failed=2), status).attempts == 3


def test_job_signature_changes_exactly_when_the_observation_can():
    base = job(active=1)
    variants = {
        "ready": job(active=1, ready=1),
        "terminating": job(active=1, ready=0, terminating=0),
        "uncounted empty": job(active=1, uncountedTerminatedPods={}),
        "pod succeeded, not yet counted": job(active=0, uncountedTerminatedPods={"succeeded": ["p1"]}),
        "pod succeeded, counted, no condition yet": job(active=0, succeeded=1),
        "no pod active yet (the first attempt counts from the Job's creation)": job(active=0),
    }
    for what, v in variants.items():
        assert obs.job_signature(v) == obs.job_signature(base), what
        assert obs.observe_job(v, {}) == obs.observe_job(base, {}), what
    changes = {
        "pod failed, counted": job(active=1, failed=1),
        "pod failed, not yet counted, next running": job(active=1, uncountedTerminatedPods={"failed": ["u1"]}),
        "complete": job(succeeded=1, conditions=[cond("Complete")], completionTime="2025-01-01T00:01:00Z"),
        "failed": job(failed=1, conditions=[cond("Failed", "BackoffLimitExceeded")]),
    }
    for what, v in changes.items():
        assert obs.job_signature(v) != obs.job_signature(base), what
        assert obs.observe_job(v, {}) != obs.observe_job(base, {}), what
    unstarted = job()
    del unstarted["status"]["startTime"]
    assert obs.job_signature(unstarted) != obs.job_signature(job())


def test_job_events_that_change_nothing_the_planner_reads_are_dropped():
    rec = reconciler(FakeKube(make_run_obj()))
    assert rec.job_changed("ns", "j", job(active=1))  # first sight (also after a restart)
    assert not rec.job_changed("ns", "j", job(active=1, ready=1))
    # the pod ended, the Job controller has not counted it yet: still one attempt, no news
    assert not rec.job_changed("ns", "j", job(active=0, uncountedTerminatedPods={"succeeded": ["p1"]}))
    assert rec.job_changed("ns", "j", job(succeeded=1, conditions=[cond("Complete")]))
    assert not rec.job_changed("ns", "j", job(succeeded=1, conditions=[cond("Complete")]))
    assert rec.job_changed("other", "j", job(succeeded=1, conditions=[cond("Complete")]))  # another namespace
    assert rec.job_changed("ns", "j", None)  # deleted
    assert rec.job_changed("ns", "j", job(succeeded=1, conditions=[cond("Complete")]))  # forgotten with it


def test_the_added_event_of_a_job_the_reconcile_created_is_no_news():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    assert rec.reconcile("ns", "r").created == ["r-i1-synthesize"]
    added = kube.jobs["r-i1-synthesize"]  # as the API server returns it: no status yet
    assert not rec.job_changed("ns", "r-i1-synthesize", added)
    started = {**added, "status": {"startTime": "2025-01-01T00:00:01Z", "active": 1}}
    assert rec.job_changed("ns", "r-i1-synthesize", started)


def test_resync_reconciles_the_runs_that_are_not_settled():
    import asyncio
    import concurrent.futures
    from types import SimpleNamespace

    from sheepdog.kube.handlers import Dispatcher, settled
    from sheepdog.kube.reconcile import Result

    def run(name, phase=None, generation=1, observed=1):
        r = make_run_obj()
        r["metadata"].update(name=name, generation=generation)
        if phase:
            r["status"] = {"phase": phase, "observedGeneration": observed}
        return r

    runs = [run("new"), run("going", "Running"), run("done", "Succeeded"), run("broke", "Failed"),
            run("edited", "Succeeded", generation=2, observed=1)]
    assert [settled(r) for r in runs] == [False, False, True, True, False]

    class Kube:
        def list_runs(self, namespace):
            return runs

        def list_stage_jobs(self, namespace):
            return []

        def list_stage_pods(self, namespace):
            return []

        def list_failed_create_events(self, namespace):
            return []

    reconciled = []
    cache = WatchCache()
    rec = SimpleNamespace(kube=Kube(), metrics=Metrics(), forget=lambda *a: None, cache=cache,
                          prune_pods=lambda *a: 0, reconcile=lambda ns, name: reconciled.append(name) or Result())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        d = Dispatcher(rec, pool)
        assert asyncio.run(d.resync([], concurrency=2)) == 3
    assert sorted(reconciled) == ["edited", "going", "new"]
    assert cache.run("ns", "done") is not None  # the re-list fed the cache


# --- a watch cache that lags: never a second Job, never a lost summary -------------------------


def test_a_job_the_cache_does_not_show_yet_is_found_by_its_409_not_created_twice():
    kube = FakeKube(make_run_obj())
    reconciler(kube).reconcile("ns", "r")  # creates the Job
    kube.cache = WatchCache()  # a cache with the run but without the Job (its events not here yet)
    kube.cache.put_run(kube.run)
    kube.writes.clear()
    r = reconciler(kube, watched=False).reconcile("ns", "r")
    assert r.created == [] and r.existing == ["r-i1-synthesize"]  # POST -> 409 -> GET: this run's
    assert [w[0] for w in kube.writes if w[0] in ("create", "exists")] == ["exists"]
    assert len(kube.jobs) == 1


def test_a_finished_job_whose_pods_the_cache_lacks_has_them_listed():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube, watched=False)
    kube.deliver()
    rec.reconcile("ns", "r")
    kube.finish("r-i1-synthesize", message=json.dumps(SUMMARY))
    kube.cache.put_job(kube.jobs["r-i1-synthesize"])  # the Job's Complete arrived, its pod's event not yet
    kube.writes.clear()
    rec.reconcile("ns", "r")
    assert [w for w in kube.writes if w[0] == "list_pods"] == [("list_pods", "r-i1-synthesize")]
    rec1 = kube.run["status"]["iterations"][0]
    assert rec1["stages"]["synthesize"]["phase"] == "Succeeded" and rec1["generated"] == 20


def test_the_reconcile_after_a_status_write_reads_the_write_not_the_lagging_watch():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube, watched=False)
    kube.deliver()
    rec.reconcile("ns", "r")  # writes status; no watch event delivered since
    kube.finish("r-i1-synthesize", message=json.dumps(SUMMARY))
    kube.cache.put_job(kube.jobs["r-i1-synthesize"])
    for p in kube.pods:
        kube.cache.put_pod(p)
    r = rec.reconcile("ns", "r")  # no Conflict: the cached run is the write's answer
    assert r.status_written and kube.run["status"]["iterations"][0]["stages"]["synthesize"]["phase"] == "Succeeded"


def test_run_events_of_its_own_recent_status_writes_are_recognised():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")  # creates the synthesize Job, writes status
    first = kube.run["metadata"]["resourceVersion"]
    kube.finish("r-i1-synthesize", message=json.dumps(SUMMARY))
    rec.reconcile("ns", "r")  # writes status again before the first write's event came back
    second = kube.run["metadata"]["resourceVersion"]
    assert first != second
    assert rec.is_own_write("ns", "r", first) and rec.is_own_write("ns", "r", second)
    assert not rec.is_own_write("ns", "r", "1")  # the user's version, before our writes
    assert not rec.is_own_write("ns", "other", second) and not rec.is_own_write("ns", "r", None)
    rec.forget("ns", "r")
    assert not rec.is_own_write("ns", "r", second)


def test_a_trigger_whose_event_turns_out_to_be_our_own_write_is_dropped():
    import asyncio
    import concurrent.futures
    from types import SimpleNamespace

    from sheepdog.kube.handlers import Dispatcher
    from sheepdog.kube.reconcile import Result

    reconciled = []
    rec = SimpleNamespace(metrics=Metrics(), reconcile=lambda ns, name: reconciled.append(name) or Result())

    async def scenario(d):
        await d.trigger("ns", "r", no_news=lambda: True)
        await d.trigger("ns", "r", no_news=lambda: False)
        await d.trigger("ns", "r")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asyncio.run(scenario(Dispatcher(rec, pool)))
    assert reconciled == ["r", "r"]


# --- stuck stages and Job-creation errors (issue 14) ------------------------------------------


def api_error(status, message):
    from sheepdog.kube.client import ApiError

    return ApiError(status, "x", json.dumps({"kind": "Status", "message": message}))


def test_a_stuck_pod_names_the_reason_in_status_and_a_warning():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    kube.jobs["r-i1-synthesize"]["status"] = {"startTime": "2025-01-01T00:00:01Z", "active": 1, "ready": 0}
    p = pod("r-i1-synthesize-a", "r-i1-synthesize", "Pending")
    p["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}
    assert rec.pod_changed("ns", "r-i1-synthesize-a", p)  # the pod watch keeps stuck pods
    kube.writes.clear()
    r = rec.reconcile("ns", "r")
    assert not [w for w in kube.writes if w[0] == "list_pods"]  # known from the watch, not LISTed
    st = kube.run["status"]
    assert (st["phase"], st["reason"]) == ("Running", "Unschedulable")
    assert "2 Insufficient nvidia.com/gpu" in st["message"]
    assert ("Warning", "Unschedulable") in r.events
    sample = rec.metrics.registry.get_sample_value
    assert sample("sheepdog_runs_stuck", {"namespace": "ns", "reason": "Unschedulable"}) == 1
    assert sample("sheepdog_runs_stuck", {"namespace": "ns", "reason": "ImagePullFailing"}) == 0
    assert sample("sheepdog_run_stuck_since_timestamp_seconds",
                  {"namespace": "ns", "run": "r", "stage": "synthesize", "reason": "Unschedulable"}) > 0


def test_a_job_without_pods_reads_its_events_and_rechecks_until_one_says_why():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    r = rec.reconcile("ns", "r")
    assert r.recheck_after and kube.run["status"]["reason"] not in ("PodsNotCreated", "QuotaExceeded")  # nothing known yet
    kube.events["r-i1-synthesize"] = [{"reason": "FailedCreate", "lastTimestamp": "2025-01-01T00:00:02Z",
                                       "message": 'Error creating: pods "x" is forbidden: exceeded quota: q'}]
    r = rec.reconcile("ns", "r")
    assert kube.run["status"]["reason"] == "QuotaExceeded" and "exceeded quota: q" in kube.run["status"]["message"]
    assert ("Warning", "QuotaExceeded") in r.events and not r.recheck_after


def test_a_rejected_job_fails_the_run_with_the_api_servers_message():
    kube = FakeKube(make_run_obj())
    kube.create_error = api_error(422, 'Job.batch "r-i1-synthesize" is invalid: spec.template: bad quantity')
    r = reconciler(kube).reconcile("ns", "r")
    st = kube.run["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "StageFailed") and r.done
    assert "JobRejected" in st["message"] and "bad quantity" in st["message"] and "(422)" in st["message"]
    assert ("Warning", "StageFailed") in r.events and not kube.jobs


def test_a_transient_creation_error_holds_the_stage_and_backs_off():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    kube.create_error = api_error(500, 'Internal error occurred: failed calling webhook "w.example"')
    r1 = rec.reconcile("ns", "r")
    st = kube.run["status"]
    assert (st["phase"], st["reason"]) == ("Running", "JobCreateFailed") and "failed calling webhook" in st["message"]
    assert ("Warning", "JobCreateFailed") in r1.events and r1.recheck_after == 2
    r2 = rec.reconcile("ns", "r")
    assert r2.recheck_after == 5 and ("Warning", "JobCreateFailed") not in r2.events
    kube.create_error = None
    r3 = rec.reconcile("ns", "r")
    assert r3.created == ["r-i1-synthesize"] and kube.run["status"]["reason"] != "JobCreateFailed"


def test_a_job_of_that_name_the_run_does_not_own_fails_the_run():
    kube = FakeKube(make_run_obj())
    kube.jobs["r-i1-synthesize"] = {"metadata": {"name": "r-i1-synthesize", "labels": {obs.LABEL_RUN: "other"}},
                                    "status": {}}
    r = reconciler(kube).reconcile("ns", "r")
    st = kube.run["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "StageFailed") and r.done
    assert "JobConflict" in st["message"] and "not owned by this run" in st["message"]


def test_a_job_deleted_by_hand_is_created_again_once_its_pods_are_gone():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    rec.reconcile("ns", "r")  # observed running
    del kube.jobs["r-i1-synthesize"]  # orphaning its pod
    kube.pods.append(pod("r-i1-synthesize-a", "r-i1-synthesize", "Running"))
    for _ in range(2):
        r = rec.reconcile("ns", "r")
        assert r.created == [] and kube.run["status"]["reason"] == "WaitingForOldPods" and r.recheck_after
    kube.pods[-1]["status"]["phase"] = "Failed"
    r = rec.reconcile("ns", "r")
    assert r.created == ["r-i1-synthesize"]


def test_suspend_suspends_the_running_job_and_resume_unsuspends_it():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    rec.reconcile("ns", "r")
    kube.run["spec"]["suspend"] = True
    r = rec.reconcile("ns", "r")
    assert ("suspend", "r-i1-synthesize:True") in kube.writes and r.changed == ["r-i1-synthesize:suspend"]
    r = rec.reconcile("ns", "r")  # the Job is seen suspended
    assert kube.run["status"]["phase"] == "Suspended" and not r.changed
    kube.run["spec"]["suspend"] = False
    r = rec.reconcile("ns", "r")
    assert ("suspend", "r-i1-synthesize:False") in kube.writes and kube.run["status"]["phase"] == "Running"


def test_pod_events_are_news_only_when_the_pod_becomes_or_stops_being_stuck():
    rec = reconciler(FakeKube(make_run_obj()))
    pending = pod("p", "r-i1-synthesize", "Pending")
    pending["status"] = {"phase": "Pending"}
    assert not rec.pod_changed("ns", "p", pending)
    stuck = copy.deepcopy(pending)
    stuck["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}]
    assert rec.pod_changed("ns", "p", stuck) and not rec.pod_changed("ns", "p", stuck)
    assert rec.pod_changed("ns", "p", pod("p", "r-i1-synthesize", "Running"))
    assert not rec.pod_changed("ns", "p", None)  # deleted; it was not stuck any more
    assert rec.pod_changed("ns", "p", stuck) and rec.stuck_pods("ns") == [stuck] and rec.stuck_pods("other") == []
    assert rec.pod_changed("ns", "p", None) and rec.stuck_pods("ns") == []


def test_sharded_parse_failures_by_rule_add_up():
    # Each synthesize shard counts the judgements it made under each assessment.parse rule.
    merged = obs.merge_summaries([
        {"ok": True, "parseFailures": 2, "parseFailuresBy": {"strict": 2, "firstNumber": 1}},
        {"ok": True, "parseFailures": 3, "parseFailuresBy": {"strict": 3, "firstNumber": 0}},
    ])
    assert merged["parseFailures"] == 5
    assert merged["parseFailuresBy"] == {"firstNumber": 1, "strict": 5}


class Killed(BaseException):
    """The process dies here (a SIGKILL between two requests): nothing after it runs."""


def _reconcile_killed_at_event(kube, rec, n):
    """One reconcile whose process dies right before its n-th Event POST."""
    post, calls = kube.create_event, []

    def create_event(namespace, event):
        calls.append(event["reason"])
        if len(calls) == n:
            raise Killed(event["reason"])
        return post(namespace, event)
    kube.create_event = create_event
    try:
        with pytest.raises(Killed):
            rec.reconcile("ns", "r")
    finally:
        kube.create_event = post


def test_events_written_in_the_status_are_posted_once_by_the_next_process_after_a_kill():
    kube = FakeKube(make_run_obj())
    _reconcile_killed_at_event(kube, reconciler(kube), 1)
    # the status write happened, its Event did not: the status names what it owes
    pending = kube.run["status"]["pendingEvents"]
    assert [e["reason"] for e in pending] == ["StageStarting"] and not kube.posted_events

    restarted = reconciler(kube)
    r = restarted.reconcile("ns", "r")
    assert not r.status_written and r.events == [("Normal", "StageStarting")]
    assert list(kube.posted_events) == [pending[0]["name"]]
    assert not restarted.reconcile("ns", "r").events  # once per process, not per reconcile

    # killed between the two Events of a transition: the first was posted, the second not
    kube.finish("r-i1-synthesize", message=json.dumps(SUMMARY))
    _reconcile_killed_at_event(kube, restarted, 2)
    assert [e["reason"] for e in kube.run["status"]["pendingEvents"]] == ["StageSucceeded", "StageStarting"]
    kube.writes.clear()
    again = reconciler(kube)
    r = again.reconcile("ns", "r")
    assert r.events == [("Normal", "StageStarting")]
    assert [w for w in kube.writes if w[0].startswith("event")] == [("event-exists", "StageSucceeded"),
                                                                     ("event", "StageStarting")]
    reasons = [e["reason"] for e in kube.posted_events.values()]
    assert sorted(reasons) == ["StageStarting", "StageStarting", "StageSucceeded"]
    assert len({e["message"] for e in kube.posted_events.values()}) == 3  # never one Event twice


def test_an_event_whose_post_failed_is_posted_by_the_next_reconcile_once():
    """At least once: an Event counts as posted only after a 201 or a 409 (issue 24)."""
    kube = FakeKube(make_run_obj())
    post, failures = kube.create_event, []

    def flaky(namespace, event):
        if not failures:
            failures.append(event["reason"])
            raise RuntimeError("503 Service Unavailable")
        return post(namespace, event)

    kube.create_event = flaky
    rec = reconciler(kube)
    r = rec.reconcile("ns", "r")
    assert r.status_written and failures == ["StageStarting"] and not kube.posted_events
    assert r.recheck_after is not None and r.recheck_after <= 5  # the retry is asked for
    r = rec.reconcile("ns", "r")  # nothing else changed: the owed Event goes out now
    assert not r.status_written and r.events == [("Normal", "StageStarting")]
    assert [e["reason"] for e in kube.posted_events.values()] == ["StageStarting"]
    assert not rec.reconcile("ns", "r").events  # and never twice


def test_the_never_twice_window_is_the_event_ttl_flag():
    kube = FakeKube(make_run_obj())
    _reconcile_killed_at_event(kube, reconciler(kube), 1)
    # an hour and a second later: past the default TTL, within a 2-hour one
    later = lambda **o: Reconciler(kube, Metrics(), Options(**o), clock=lambda: "2025-01-01T01:00:01Z", cache=kube.cache)  # noqa: E731
    assert not later().reconcile("ns", "r").events
    assert later(event_ttl=7200).reconcile("ns", "r").events == [("Normal", "StageStarting")]


def test_a_status_change_without_events_keeps_the_pending_ones_and_posts_nothing():
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    rec.reconcile("ns", "r")
    pending = kube.run["status"]["pendingEvents"]
    kube.writes.clear()
    kube.run["status"]["message"] = "edited"  # a change the planner undoes, with no Event of its own
    kube.deliver()
    r = rec.reconcile("ns", "r")
    assert r.status_written and not r.events
    assert kube.run["status"]["pendingEvents"] == pending
    assert not [w for w in kube.writes if w[0].startswith("event")]


def test_pending_events_older_than_the_api_servers_event_ttl_are_not_posted_again():
    kube = FakeKube(make_run_obj())
    _reconcile_killed_at_event(kube, reconciler(kube), 1)
    later = Reconciler(kube, Metrics(), Options(), clock=lambda: "2025-01-01T01:00:01Z", cache=kube.cache)
    kube.deliver()
    r = later.reconcile("ns", "r")
    assert not r.events and not kube.posted_events  # it may have expired after being posted
    soon = Reconciler(kube, Metrics(), Options(), clock=lambda: "2025-01-01T00:59:59Z", cache=kube.cache)
    assert soon.reconcile("ns", "r").events == [("Normal", "StageStarting")]
