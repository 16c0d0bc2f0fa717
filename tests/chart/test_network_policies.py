"""The chart's NetworkPolicies (networkPolicy.*), rendered by the real helm, and what they allow
(tests/netpol.py evaluates them: the test node's bridge CNI enforces no NetworkPolicy, so no
test here sends a packet). The runs' policy is built by the operator from the Deployment's
SHEEPDOG_WORKER_DEFAULTS: checked against the stage Jobs the operator builds with that value."""

from __future__ import annotations

import argparse
import json

import pytest

from sheepdog.kube import jobs
from sheepdog.kube.operator import image_defaults
from tests.chart.helm import find, one, render, template
from tests.netpol import Pod, ingress_allowed, selects
from tests.operator.test_jobs_builder import config_for, make_spec

NS = "sheepdog-system"


def operator_pod(docs: list[dict]) -> Pod:
    tpl = one(docs, "Deployment")["spec"]["template"]
    (c,) = tpl["spec"]["containers"]
    return Pod(NS, tpl["metadata"]["labels"], ports={p["name"]: p["containerPort"] for p in c["ports"]})


def worker_defaults(docs: list[dict]) -> jobs.ImageDefaults:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    return image_defaults(argparse.Namespace(worker_image=""), env)


def rbac_grants(docs: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for role in find(docs, "ClusterRole") + find(docs, "Role") for rule in role["rules"]
            for g in rule.get("apiGroups", []) for r in rule.get("resources", []) for v in rule["verbs"]}


def test_the_operators_policy_lets_only_monitoring_scrape_it():
    docs = render()
    (policy,) = find(docs, "NetworkPolicy")
    op = operator_pod(docs)
    assert selects(policy, op)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert ingress_allowed([policy], prometheus, op, "metrics")
    assert ingress_allowed([policy], prometheus, op, op.ports["metrics"])
    assert not ingress_allowed([policy], prometheus, op, "liveness")
    for src in (Pod("team-a", {"app": "notebook"}), Pod(NS, {"app": "other"}),
                Pod("team-a", {"sheepdog.dev/run": "r"})):  # a tenant's stage pod, too
        assert not ingress_allowed([policy], src, op, "metrics"), src
    # egress: the API server's ports, to any address unless told which
    assert policy["spec"]["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]


def test_the_metrics_scrapers_and_api_server_are_values():
    docs = render({"networkPolicy": {
        "metrics": {"namespaceSelector": {"matchLabels": {"team": "obs"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
        "apiServer": {"cidrs": ["10.0.0.10/32"], "ports": [6443]}}})
    (policy,) = find(docs, "NetworkPolicy")
    op = operator_pod(docs)
    prom = {"app.kubernetes.io/name": "prometheus"}
    assert ingress_allowed([policy], Pod("obs-1", prom, {"team": "obs"}), op, "metrics")
    assert not ingress_allowed([policy], Pod("obs-1", {"app": "grafana"}, {"team": "obs"}), op, "metrics")
    assert not ingress_allowed([policy], Pod("monitoring", prom), op, "metrics")
    (by_name,) = find(render({"networkPolicy": {"metrics": {"namespace": "prom"}}}), "NetworkPolicy")
    assert ingress_allowed([by_name], Pod("prom", {}), op, "metrics")
    assert not ingress_allowed([by_name], Pod("monitoring", {}), op, "metrics")
    assert policy["spec"]["egress"] == [{"ports": [{"protocol": "TCP", "port": 6443}],
                                         "to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]}]


def test_the_runs_policy_is_on_and_isolates_a_multinode_train():
    docs = render()
    images = worker_defaults(docs)
    assert images.network_policy and images.egress_cidrs == ()
    assert ("networking.k8s.io", "networkpolicies", "create") in rbac_grants(docs)
    spec = make_spec(stages={"train": {"nodes": 3}})
    objs = jobs.build_stage_objects("tenant-a-run", "team-a", "uid-a", spec,
                                    config_for(spec, "train", 1, run="tenant-a-run"), images)
    by_kind = {o["kind"]: o for o in objs}  # the stage config's ConfigMap comes with them too
    policy, svc, job = by_kind["NetworkPolicy"], by_kind["Service"], by_kind["Job"]
    labels = {**job["spec"]["template"]["metadata"]["labels"], jobs.JOB_NAME_LABEL: job["metadata"]["name"]}
    rank0, rank2 = Pod("team-a", labels), Pod("team-a", labels)
    assert selects(policy, rank0)
    assert svc["spec"]["selector"].items() <= labels.items()  # the rendezvous Service's pods
    assert ingress_allowed([policy], rank2, rank0, jobs.RENDEZVOUS_PORT)
    other_run = {**labels, jobs.LABEL_RUN: "tenant-a-other", jobs.JOB_NAME_LABEL: "tenant-a-other-i1-train"}
    for src in (Pod("team-a", other_run), Pod("team-b", labels), Pod("team-a", {"app": "shell"})):
        assert not ingress_allowed([policy], src, rank0, jobs.RENDEZVOUS_PORT), src


def test_stage_egress_cidrs_reach_the_runs_policy():
    docs = render({"networkPolicy": {"stageEgressCIDRs": ["10.20.0.0/16", "203.0.113.5/32"]}})
    images = worker_defaults(docs)
    assert images.egress_cidrs == ("10.20.0.0/16", "203.0.113.5/32")
    spec = make_spec()
    (policy,) = [o for o in jobs.build_stage_objects("r", "team-a", "u", spec, config_for(spec, "synthesize", run="r"),
                                                     images) if o["kind"] == "NetworkPolicy"]
    assert "Egress" in policy["spec"]["policyTypes"]
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "203.0.113.5/32"}}]} in policy["spec"]["egress"]


def test_off_means_no_policy_no_grant():
    docs = render({"networkPolicy": {"enabled": False, "stageEgressCIDRs": ["10.0.0.0/8"]}})
    assert not find(docs, "NetworkPolicy")
    images = worker_defaults(docs)
    assert not images.network_policy and images.egress_cidrs == ()
    assert not {g for g in rbac_grants(docs) if g[1] == "networkpolicies"}
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    raw = json.loads(next(e["value"] for e in c["env"] if e["name"] == "SHEEPDOG_WORKER_DEFAULTS"))
    assert "networkPolicy" not in raw and "egressCIDRs" not in raw


@pytest.mark.parametrize("bad", ["networkPolicy.stageEgressCIDRs[0]=s3.example.com",
                                 "networkPolicy.apiServer.ports[0]=0", "networkPolicy.enabled=maybe"])
def test_schema_refuses_bad_values(bad):
    res = template(sets=[bad], check=False)
    assert res.returncode != 0 and "networkPolicy" in res.stderr, res.stderr
