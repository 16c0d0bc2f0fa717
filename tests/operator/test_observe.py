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
    # created, no pod yet
    o = obs.observe_job(job(), {})
    assert (o.state, o.attempts) == ("running", 0)


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
