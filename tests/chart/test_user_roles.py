"""The chart's user roles on the real API server: a user bound to the built-in `edit` role in a
namespace may create a SelfAlignmentRun there once the chart's <fullname>-edit ClusterRole is
aggregated into `edit` (and not before, nor in another namespace); one bound to `view` may only
read runs. The aggregation is the API server's own (kube-controller-manager's
clusterrole-aggregation controller), and the answers come from `kubectl auth can-i --as` and
from real requests made as those users.
"""

from __future__ import annotations

import pytest

from tests.chart.e2e import apply_chart_crds, can_i, create_namespace, delete_namespace, unique
from tests.chart.helm import find, render, to_yaml
from tests.operator.conftest import run_manifest

pytestmark = pytest.mark.cluster

RUNS = "selfalignmentruns.sheepdog.dev"
WRITE = ("create", "update", "patch", "delete", "deletecollection")
READ = ("get", "list", "watch")


def bind(cluster, namespace: str, user: str, cluster_role: str) -> None:
    cluster.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{cluster_role}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })


@pytest.fixture(scope="module")
def tenants(cluster):
    """alice is bound to `edit` and bob to `view` in one namespace; the chart's user roles
    (rendered with a unique name) are applied after a first look at what they could do."""
    apply_chart_crds(cluster)
    ns, other = create_namespace(cluster, unique("tenant")), create_namespace(cluster, unique("other"))
    alice, bob = unique("alice"), unique("bob")
    bind(cluster, ns, alice, "edit")
    bind(cluster, ns, bob, "view")
    # the bindings are in effect (edit grants configmaps), the chart's roles are not there yet
    cluster.wait_for("alice's edit binding", lambda: can_i(cluster, alice, "create", "configmaps", ns))
    before = {"alice create": can_i(cluster, alice, "create", RUNS, ns),
              "bob get": can_i(cluster, bob, "get", RUNS, ns)}
    name = unique("sd")
    roles = [r for r in find(render({"fullnameOverride": name}), "ClusterRole")
             if r["metadata"]["name"] in (f"{name}-edit", f"{name}-view")]
    assert len(roles) == 2
    cluster.apply(to_yaml(roles))
    try:
        # the aggregation controller folds the new rules into edit/view shortly after
        cluster.wait_for("edit aggregates sheepdog-edit", lambda: can_i(cluster, alice, "create", RUNS, ns))
        cluster.wait_for("view aggregates sheepdog-view", lambda: can_i(cluster, bob, "list", RUNS, ns))
        yield {"ns": ns, "other": other, "alice": alice, "bob": bob, "before": before}
    finally:
        cluster.kubectl("delete", "clusterrole", f"{name}-edit", f"{name}-view", "--ignore-not-found", check=False)
        delete_namespace(cluster, ns)
        delete_namespace(cluster, other)


def test_without_the_chart_roles_edit_and_view_give_no_run_rights(tenants):
    assert tenants["before"] == {"alice create": False, "bob get": False}


def test_edit_may_create_and_manage_runs_in_its_namespace_only(cluster, tenants):
    alice, ns, other = tenants["alice"], tenants["ns"], tenants["other"]
    for verb in WRITE + READ:
        assert can_i(cluster, alice, verb, RUNS, ns), verb
        assert not can_i(cluster, alice, verb, RUNS, other), f"{verb} in a namespace alice has no binding in"
    # the operator alone writes a run's status
    assert not can_i(cluster, alice, "patch", RUNS, ns, "status")
    assert can_i(cluster, alice, "get", RUNS, ns, "status")
    # and for real: alice creates a run with kubectl, as herself
    run = run_manifest("alices-run", ns, iterations=1)
    res = cluster.kubectl("apply", f"--as={alice}", "-f", "-", input=to_yaml([run]), check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.get_json("selfalignmentrun", "alices-run", "-n", ns)["spec"]["iterations"] == 1
    run["metadata"]["namespace"] = other
    res = cluster.kubectl("apply", f"--as={alice}", "-f", "-", input=to_yaml([run]), check=False)
    assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stdout + res.stderr


def test_view_may_only_read_runs(cluster, tenants):
    bob, ns = tenants["bob"], tenants["ns"]
    for verb in READ:
        assert can_i(cluster, bob, verb, RUNS, ns), verb
        assert can_i(cluster, bob, verb, RUNS, ns, "status"), verb
    for verb in WRITE:
        assert not can_i(cluster, bob, verb, RUNS, ns), verb
    assert not can_i(cluster, bob, "get", RUNS, tenants["other"])
    res = cluster.kubectl("get", "selfalignmentruns", "-n", ns, f"--as={bob}", check=False)
    assert res.returncode == 0, res.stderr
    run = run_manifest("bobs-run", ns, iterations=1)
    res = cluster.kubectl("apply", f"--as={bob}", "-f", "-", input=to_yaml([run]), check=False)
    assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stdout + res.stderr
    assert cluster.kubectl("get", "selfalignmentrun", "bobs-run", "-n", ns, check=False).returncode != 0
