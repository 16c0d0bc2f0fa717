"""sheepdog.kube.stuck: why a running Job's pods do not run, from Job, pod and Event dicts."""

from __future__ import annotations

from sheepdog.kube import observe as obs
from sheepdog.kube import stuck

T0 = "2026-01-01T00:00:00Z"


def job(name="r-i1-train", suspend=False, queue=None, active=0, ready=0, failed=0, conditions=()):
    labels = {"sheepdog.dev/run": "r", "sheepdog.dev/iteration": "1", "sheepdog.dev/stage": "train"}
    if queue:
        labels["kueue.x-k8s.io/queue-name"] = queue
    return {
        "metadata": {"name": name, "labels": labels, "creationTimestamp": T0},
        "spec": {"suspend": suspend},
        "status": {"startTime": "2026-01-01T00:00:01Z", "active": active, "ready": ready, "failed": failed,
                   "conditions": list(conditions)},
    }


def pod(name="r-i1-train-abc", phase="Pending", waiting=None, unschedulable=None, created="2026-01-01T00:00:02Z"):
    p = {"metadata": {"name": name, "creationTimestamp": created,
                      "labels": {"batch.kubernetes.io/job-name": "r-i1-train"}},
         "status": {"phase": phase, "conditions": []}}
    if waiting:
        reason, message = waiting
        p["status"]["containerStatuses"] = [{"name": "stage", "state": {"waiting": {"reason": reason, "message": message}}}]
    if unschedulable:
        p["status"]["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": unschedulable})
    return p


def test_a_job_that_kueue_has_not_admitted_is_not_admitted():
    s = stuck.job_stuck(job(suspend=True, queue="gpu-queue"))
    assert s.reason == "NotAdmitted" and "LocalQueue gpu-queue" in s.message
    # suspended without a queue: the run's own suspend, not a stuck state
    assert stuck.job_stuck(job(suspend=True)) is None


def test_unschedulable_pod_carries_the_schedulers_message():
    msg = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    s = stuck.job_stuck(job(active=1), [pod(unschedulable=msg)])
    assert (s.reason, s.since) == ("Unschedulable", "2026-01-01T00:00:02Z")
    assert msg in s.message and "r-i1-train-abc" in s.message


def test_image_pull_and_config_errors_come_before_scheduling():
    pull = pod("a", waiting=("ImagePullBackOff", 'Back-off pulling image "x"'))
    config = pod("b", waiting=("CreateContainerConfigError", 'secret "hf" not found'))
    unsched = pod("c", unschedulable="0/2 nodes are available")
    assert stuck.job_stuck(job(active=3), [unsched, config, pull]).reason == "ImagePullFailing"
    s = stuck.job_stuck(job(active=2), [unsched, config])
    assert s.reason == "ContainerConfigError" and 'secret "hf" not found' in s.message


def test_failed_create_event_names_why_no_pod_exists():
    events = [
        {"reason": "FailedCreate", "lastTimestamp": "2026-01-01T00:00:03Z", "message": "old"},
        {"reason": "FailedCreate", "lastTimestamp": "2026-01-01T00:00:09Z",
         "message": 'Error creating: pods "x" is forbidden: exceeded quota: gpus'},
        {"reason": "SuccessfulCreate", "lastTimestamp": "2026-01-01T00:00:10Z", "message": "Created pod"},
    ]
    s = stuck.job_stuck(job(), [], events)
    # a ResourceQuota's refusal is a wait for capacity (stuck_policy: capacityTimeout)
    assert s.reason == "QuotaExceeded" and "exceeded quota: gpus" in s.message
    assert s.since == "2026-01-01T00:00:01Z"  # the Job's start: no pod was ever created
    # any other refusal (Pod Security, a webhook, a policy) needs a person: PodsNotCreated
    denied = [{"reason": "FailedCreate", "lastTimestamp": "2026-01-01T00:00:09Z",
               "message": 'Error creating: pods "x" is forbidden: violates PodSecurity "restricted:latest"'}]
    s = stuck.job_stuck(job(), [], denied)
    assert s.reason == "PodsNotCreated" and "violates PodSecurity" in s.message
    # with a pod running, an old FailedCreate says nothing
    assert stuck.job_stuck(job(active=1, ready=1), [], events) is None


def test_running_finished_and_starting_pods_are_not_stuck():
    assert stuck.job_stuck(job(active=1, ready=1), [pod(phase="Running")]) is None
    assert stuck.job_stuck(job(active=1), [pod()]) is None  # pending, nothing said yet
    done = job(active=0, conditions=[{"type": "Complete", "status": "True"}])
    assert stuck.job_stuck(done, [pod(unschedulable="x")]) is None


def test_what_to_read_for_a_running_job():
    assert stuck.needs_pods(job(active=1, ready=0)) and not stuck.needs_pods(job(active=1, ready=1))
    assert stuck.needs_events(job(active=0)) and not stuck.needs_events(job(active=1))
    # a pod that just did its work: no Events to read at every stage transition
    done = job(active=0)
    done["status"]["succeeded"] = 1
    assert not stuck.needs_events(done)
    assert not stuck.needs_events(job(active=0, conditions=[{"type": "SuccessCriteriaMet", "status": "True"}]))
    counting = job(active=0)
    counting["status"]["uncountedTerminatedPods"] = {"failed": ["uid-1"]}
    assert not stuck.needs_events(counting)
    assert not stuck.needs_events(job(suspend=True)) and not stuck.needs_pods(job(suspend=True, active=1))
    assert stuck.recheck_events(job(), known_stuck=False)
    assert not stuck.recheck_events(job(), known_stuck=True)
    assert not stuck.recheck_events(job(failed=1), known_stuck=False)  # the controller's backoff


def test_pod_signature_changes_only_with_its_stuck_state():
    assert stuck.pod_signature(pod()) is None and stuck.pod_signature(pod(phase="Running")) is None
    a = stuck.pod_signature(pod(unschedulable="0/2 nodes"))
    b = stuck.pod_signature(pod(waiting=("ErrImagePull", "not found")))
    assert a and b and a != b and a.startswith("Unschedulable")


def test_observation_carries_the_stuck_state_and_suspension():
    o = obs.observe([job(active=1)], {}, [pod(unschedulable="0/2 nodes are available")])[0]
    assert (o.state, o.stuck_reason, o.stuck_since) == ("running", "Unschedulable", "2026-01-01T00:00:02Z")
    q = obs.observe([job(suspend=True, queue="q")], {})[0]
    assert q.suspended and q.queued and q.stuck_reason == "NotAdmitted"
    e = obs.observe([job()], {}, [], {"r-i1-train": [{"reason": "FailedCreate", "message": "forbidden"}]})[0]
    assert e.stuck_reason == "PodsNotCreated"
    # suspending or resuming a Job is news to its run
    assert obs.job_signature(job()) != obs.job_signature(job(suspend=True))
