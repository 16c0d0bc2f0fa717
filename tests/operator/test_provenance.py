"""Where a stage ran (sheepdog.kube.provenance, and its use by observe and the planner): the
node and the container imageID of the pods whose outcome the stage record holds. No cluster."""

from __future__ import annotations

from sheepdog.api.status import StageRecord
from sheepdog.kube import observe as obs
from sheepdog.kube.provenance import image_id_of, main_container_status, node_of, provenance
from sheepdog.planner import StageObservation, plan
from tests.operator.test_observe import cond, job
from tests.planner.simulate import LAYOUT, RUN, make_spec, summary_for

IMAGE = "localhost/sheepdog-worker-cpu@sha256:" + "a" * 64
OTHER = "localhost/sheepdog-worker-cpu@sha256:" + "b" * 64


def pod(name, phase, node="real-node-0", image_id=IMAGE, finished="2025-01-01T00:00:59Z", job_name="r-i1-synthesize",
        sidecar=False):
    statuses = [{"name": "stage", "imageID": image_id,
                 "state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "finishedAt": finished}}}]
    containers = [{"name": "stage"}]
    if sidecar:  # reported first, but not the stage's container
        statuses.insert(0, {"name": "log-shipper", "imageID": "busybox@sha256:" + "c" * 64, "state": {"running": {}}})
        containers.append({"name": "log-shipper"})
    p = {"metadata": {"name": name, "labels": {"batch.kubernetes.io/job-name": job_name}},
         "spec": {"containers": containers},
         "status": {"phase": phase, "containerStatuses": statuses}}
    if node:
        p["spec"]["nodeName"] = node
    return p


def test_one_pod_gives_its_node_and_its_stage_containers_image_id():
    assert provenance([pod("p", "Succeeded", sidecar=True)]) == ("real-node-0", IMAGE)
    assert main_container_status(pod("p", "Succeeded", sidecar=True))["name"] == "stage"


def test_several_pods_give_the_distinct_values_sorted_and_pods_that_tell_nothing_add_nothing():
    pods = [pod("a", "Succeeded", node="n2"), pod("b", "Succeeded", node="n1"), pod("c", "Succeeded", node="n2"),
            pod("d", "Succeeded", node=None, image_id="")]
    assert node_of(pods) == "n1,n2"
    assert image_id_of(pods) == IMAGE
    assert image_id_of([pod("a", "Succeeded"), pod("b", "Succeeded", image_id=OTHER)]) == f"{IMAGE},{OTHER}"
    # never scheduled, never started: unknown, not an empty string
    assert provenance([{"metadata": {}, "status": {"phase": "Pending"}}]) == (None, None)
    assert provenance([]) == (None, None)


def test_observe_reads_it_from_the_succeeded_pods_of_a_finished_job():
    j = job(succeeded=1, failed=1, completionTime="2025-01-01T00:01:00Z", conditions=[cond("Complete")])
    pods = [pod("p1", "Failed", node="bad-node", image_id=OTHER, finished="2025-01-01T00:00:30Z"),
            pod("p2", "Succeeded", node="real-node-0")]
    o = obs.observe_job(j, {}, pods)
    # the failed attempt's node is not where the recorded outcome came from
    assert (o.node, o.image_id) == ("real-node-0", IMAGE)


def test_observe_reads_it_from_the_last_failed_pod_of_a_failed_job():
    j = job(failed=2, conditions=[cond("Failed", "BackoffLimitExceeded")])
    pods = [pod("p1", "Failed", node="n1", finished="2025-01-01T00:00:30Z"),
            pod("p2", "Failed", node="n2", image_id=OTHER, finished="2025-01-01T00:00:50Z")]
    o = obs.observe_job(j, {}, pods)
    assert (o.node, o.image_id) == ("n2", OTHER)


def test_observe_leaves_it_unknown_while_running_or_without_pods():
    running = job(active=1)
    assert (lambda o: (o.node, o.image_id))(obs.observe_job(running, {}, [pod("p", "Running")])) == (None, None)
    done = job(succeeded=1, completionTime="2025-01-01T00:01:00Z", conditions=[cond("Complete")])
    o = obs.observe_job(done, {})
    assert (o.node, o.image_id) == (None, None)


def test_the_stage_record_keeps_it_under_the_api_names():
    spec = make_spec(iterations=1)
    first = plan(RUN, spec, None, [], LAYOUT, "t1", 1)
    running = plan(RUN, spec, first.status, [StageObservation(1, "synthesize", "running", started_at="t1")],
                   LAYOUT, "t2", 1)
    assert running.status.iterations[0].stages["synthesize"].node is None
    done = [StageObservation(1, "synthesize", "succeeded", summary=summary_for(1, "synthesize"), started_at="t1",
                             finished_at="t3", node="real-node-0", image_id=IMAGE)]
    after = plan(RUN, spec, running.status, done, LAYOUT, "t3", 1)
    rec = after.status.iterations[0].stages["synthesize"]
    assert (rec.node, rec.image_id) == ("real-node-0", IMAGE)
    wire = rec.to_wire()
    assert (wire["node"], wire["imageID"]) == ("real-node-0", IMAGE)
    # read back from the status (what a restarted operator does)
    assert StageRecord.model_validate(wire).image_id == IMAGE
    # a later reconcile whose observation no longer has the pods keeps what was recorded
    later = plan(RUN, spec, after.status, [StageObservation(1, "synthesize", "succeeded", started_at="t1",
                                                            finished_at="t3")], LAYOUT, "t4", 1)
    assert later.status.iterations[0].stages["synthesize"].image_id == IMAGE
