"""The run's NetworkPolicy (sheepdog.kube.network_policy) as the operator builds it with the
stage objects: what it lets reach a run's pods, checked against the pods of the Jobs built for
it (tests/netpol.py evaluates the policy; no network plugin here enforces one)."""

from __future__ import annotations

import argparse

import pytest

from sheepdog.kube import jobs
from sheepdog.kube.network_policy import NetworkPolicyError, build_run_network_policy, egress_cidrs
from sheepdog.kube.operator import image_defaults
from tests.netpol import Pod, ingress_allowed, selects
from tests.operator.test_jobs_builder import NS, RUN, UID, config_for, make_spec

ON = {"networkPolicy": True}


def pods_of(objs: list[dict], namespace: str = NS) -> list[Pod]:
    """The pods the Job controller makes of the built Job: its template's labels plus the
    job-name label, one per completion index."""
    (job,) = [o for o in objs if o["kind"] == "Job"]
    labels = {**job["spec"]["template"]["metadata"]["labels"], jobs.JOB_NAME_LABEL: job["metadata"]["name"]}
    return [Pod(namespace, labels) for _ in range(job["spec"].get("completions") or 1)]


def test_off_by_default_and_first_when_on():
    spec = make_spec(stages={"train": {"nodes": 2}})
    config = config_for(spec, "train", 3)
    assert [o["kind"] for o in jobs.build_stage_objects(RUN, NS, UID, spec, config)] == ["Service", "ConfigMap", "Job"]
    objs = jobs.build_stage_objects(RUN, NS, UID, spec, config, ON)
    assert [o["kind"] for o in objs] == ["NetworkPolicy", "Service", "ConfigMap", "Job"]  # before any pod exists
    pol = objs[0]
    assert pol["metadata"]["name"] == f"{RUN}-pods" and pol["metadata"]["namespace"] == NS
    assert pol["metadata"]["ownerReferences"] == [jobs.owner_reference(RUN, UID)]  # gone with the run
    # the same object for every stage (a 409 after the first: it exists)
    assert jobs.build_stage_objects(RUN, NS, UID, make_spec(), config_for(make_spec(), "synthesize"), ON)[0] == pol


def test_a_multinode_trains_ranks_reach_each_other_and_nobody_else_does():
    spec = make_spec(stages={"train": {"nodes": 2}})
    objs = jobs.build_stage_objects(RUN, NS, UID, spec, config_for(spec, "train", 2), ON)
    policy, svc, *_ = objs  # then the ConfigMap and the Job
    rank0, rank1 = pods_of(objs)
    assert selects(policy, rank0)
    # the rendezvous (through the Service's port) and NCCL's random ports, between the ranks
    assert svc["spec"]["ports"][0]["port"] == jobs.RENDEZVOUS_PORT
    assert ingress_allowed([policy], rank1, rank0, jobs.RENDEZVOUS_PORT)
    assert ingress_allowed([policy], rank0, rank1, 41234)
    other_spec = make_spec(stages={"train": {"nodes": 2}})
    other = pods_of(jobs.build_stage_objects("other", NS, "uid-2", other_spec,
                                             config_for(other_spec, "train", 2, run="other"), ON))[0]
    namesake = Pod("tenant-b", rank0.labels)  # same labels, another namespace
    stranger = Pod(NS, {"app": "debug"})
    for src in (other, namesake, stranger):
        assert not ingress_allowed([policy], src, rank0, jobs.RENDEZVOUS_PORT), src


def test_every_stage_of_the_run_is_covered():
    spec = make_spec()
    policy = jobs.build_stage_objects(RUN, NS, UID, spec, config_for(spec, "synthesize"), ON)[0]
    for stage in ("synthesize", "curate", "train", "evaluate"):
        (pod,) = pods_of(jobs.build_stage_objects(RUN, NS, UID, spec, config_for(spec, stage, 5), ON))
        assert selects(policy, pod), stage
        assert not ingress_allowed([policy], Pod(NS, {"app": "x"}), pod, 29500), stage


def test_egress_is_open_unless_cidrs_are_given():
    owner = jobs.owner_reference(RUN, UID)
    open_ = build_run_network_policy(RUN, NS, jobs.LABEL_RUN, owner, {})
    assert open_["spec"]["policyTypes"] == ["Ingress"] and "egress" not in open_["spec"]
    closed = build_run_network_policy(RUN, NS, jobs.LABEL_RUN, owner, {}, ("10.1.0.0/16", "192.0.2.7/32"))
    assert closed["spec"]["policyTypes"] == ["Ingress", "Egress"]
    own, dns, out = closed["spec"]["egress"]
    assert own == {"to": [{"podSelector": {"matchLabels": {jobs.LABEL_RUN: RUN}}}]}
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert out == {"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}, {"ipBlock": {"cidr": "192.0.2.7/32"}}]}
    images = jobs.ImageDefaults.coerce({"networkPolicy": True, "egressCIDRs": ["10.1.2.3/16", "2001:db8::1"]})
    assert images.egress_cidrs == ("10.1.0.0/16", "2001:db8::1/128")


@pytest.mark.parametrize("defaults,message", [
    ({"egressCIDRs": ["10.0.0.0/8"]}, "need networkPolicy"),
    ({"networkPolicy": True, "egressCIDRs": ["s3.example.com"]}, "'s3.example.com' is not an IP network"),
    ({"networkPolicy": True, "egressCIDRs": ["10.0.0.0/33"]}, "is not an IP network"),
])
def test_bad_settings_are_refused_with_the_reason(defaults, message):
    with pytest.raises(NetworkPolicyError, match=message):
        jobs.ImageDefaults.coerce(defaults)


def test_the_operator_refuses_to_start_on_a_bad_cidr():
    args = argparse.Namespace(worker_image="")
    with pytest.raises(SystemExit, match="SHEEPDOG_WORKER_DEFAULTS: egressCIDRs: 'x' is not an IP network"):
        image_defaults(args, {"SHEEPDOG_WORKER_DEFAULTS": '{"networkPolicy": true, "egressCIDRs": ["x"]}'})
    assert egress_cidrs([]) == ()


def test_the_export_jobs_pods_are_the_runs_too():
    """spec.export's Job (kube/export_job.py) is created after the stages, whose objects created
    the run's policy: its pods carry the run's label, so the policy (and any egress restriction:
    name the export destination's CIDR) applies to them."""
    from sheepdog.kube.export_job import build_export_job
    from tests.operator.test_export_job import RUN as EXPORT_RUN, _start_export
    from tests.planner.simulate import make_spec as planner_spec

    spec = planner_spec(iterations=1, export={"to": "s3://models/demo"})
    job = build_export_job(EXPORT_RUN, spec, _start_export(spec).config)
    meta = EXPORT_RUN["metadata"]
    policy = build_run_network_policy(meta["name"], meta["namespace"], jobs.LABEL_RUN,
                                      jobs.owner_reference(meta["name"], meta["uid"]), {})
    pod = Pod(meta["namespace"], {**job["spec"]["template"]["metadata"]["labels"],
                                  jobs.JOB_NAME_LABEL: job["metadata"]["name"]})
    assert selects(policy, pod)
    assert not ingress_allowed([policy], Pod(meta["namespace"], {"app": "x"}), pod, 8080)
