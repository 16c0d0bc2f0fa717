"""The audit-log comparison (tests/chart/rbac_audit.py) on hand-made audit events and the
chart's rendered RBAC (`helm template`): what counts as a use, a grant, and a mismatch."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.chart.helm import render
from tests.chart.rbac_audit import Grant, Permission, Use, grants_of, read_uses, ungranted, unused

SA = "system:serviceaccount:ops:op"


def event(verb, resource, group="", namespace="runs", sub=None, user=SA, code=200, stage="ResponseComplete",
          audit_id=None, agent="kopf/1.38.0"):
    ref = {"resource": resource, "apiGroup": group, "namespace": namespace}
    if sub:
        ref["subresource"] = sub
    return json.dumps({"kind": "Event", "auditID": audit_id or str(uuid.uuid4()), "stage": stage, "verb": verb,
                       "user": {"username": user}, "userAgent": agent, "objectRef": ref,
                       "responseStatus": {"code": code}})


def test_read_uses_keeps_the_users_resource_requests_once():
    lines = [
        event("patch", "selfalignmentruns", "sheepdog.dev", sub="status"),
        event("watch", "pods", stage="ResponseStarted", audit_id="w1"),  # one watch, logged twice
        event("watch", "pods", audit_id="w1"),
        event("watch", "jobs", "batch", stage="ResponseStarted"),  # a watch still open
        event("list", "secrets", code=403),
        event("list", "pods", user="system:serviceaccount:other:default"),
        event("get", "secrets", code=403, agent="kubectl/v1.37.2 (linux/amd64)"),  # a test, not the operator
        json.dumps({"auditID": "d1", "stage": "ResponseComplete", "verb": "get", "user": {"username": SA},
                    "requestURI": "/apis"}),  # discovery: no objectRef
        "",
    ]
    assert read_uses(lines, SA) == [
        Use(Permission("patch", "sheepdog.dev", "selfalignmentruns/status"), "runs", 200),
        Use(Permission("watch", "", "pods"), "runs", 200),
        Use(Permission("watch", "batch", "jobs"), "runs", 200),
        Use(Permission("list", "", "secrets"), "runs", 403),
    ]


def test_a_grant_covers_a_use_only_in_its_scope():
    pods = Permission("list", "", "pods")
    role = Grant(pods, "runs")
    cluster_role = Grant(pods, None)
    assert ungranted([Use(pods, "runs", 200)], [role]) == []
    assert ungranted([Use(pods, "other", 403)], [role]) == [Use(pods, "other", 403)]
    assert ungranted([Use(pods, None, 200)], [role]) == [Use(pods, None, 200)]  # all namespaces
    assert ungranted([Use(pods, "other", 200), Use(pods, None, 200)], [cluster_role]) == []
    assert ungranted([Use(pods, "b", 403), Use(pods, None, 403), Use(pods, "a", 403)], []) == [
        Use(pods, None, 403), Use(pods, "a", 403), Use(pods, "b", 403)]  # sorted, all-namespaces first


def test_unused_grants_unless_allowed():
    get, delete = Permission("get", "batch", "jobs"), Permission("delete", "batch", "jobs")
    grants = [Grant(get, None), Grant(delete, None)]
    uses = [Use(get, "runs", 200)]
    assert unused(grants, uses) == [Grant(delete, None)]
    assert unused(grants, uses, allowed=[delete]) == []
    assert unused([Grant(delete, "b"), Grant(delete, None)], []) == [Grant(delete, None), Grant(delete, "b")]


@pytest.mark.parametrize("values, scopes", [
    ({}, {None}),
    ({"watchNamespaces": ["a", "b"]}, {None, "a", "b"}),
])
def test_grants_of_the_rendered_chart(values, scopes):
    docs = render(values, release="sd", namespace="ops")
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    grants = grants_of(docs, "ops", sa)
    # leader election's Lease: a Role in the release's namespace ("ops"), in both modes
    lease = {g for g in grants if g.permission.resource == "leases"}
    assert {(g.permission.verb, g.namespace) for g in lease} == {(v, "ops") for v in ("get", "create", "update")}
    assert {g.namespace for g in grants if g not in lease} == scopes
    crds = Permission("watch", "apiextensions.k8s.io", "customresourcedefinitions")
    assert Grant(crds, None) in grants  # cluster-scoped reads: a ClusterRole in both modes
    status = Permission("patch", "sheepdog.dev", "selfalignmentruns/status")
    assert {g.namespace for g in grants if g.permission == status} == (scopes - {None} or {None})
    assert grants_of(docs, "ops", "someone-else") == []


def test_grants_of_refuses_a_wildcard():
    docs = [
        {"kind": "ClusterRole", "metadata": {"name": "r"},
         "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
         "roleRef": {"kind": "ClusterRole", "name": "r"},
         "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]},
    ]
    with pytest.raises(AssertionError, match="wildcard"):
        grants_of(docs, "ops", "op")
