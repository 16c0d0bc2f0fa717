"""The chart against the real control plane (tests/cluster): every value set of test_chart.py
applied with `kubectl apply --dry-run=server`, Pod Security "restricted" for the operator's
pod, and wrong values refused before anything reaches the cluster."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.e2e import (
    RESTRICTED,
    apply_chart_crds,
    apply_monitoring_crds,
    create_namespace,
    delete_namespace,
    unique,
)
from tests.chart.helm import one, render, template
from tests.chart.test_chart import VALUE_SETS

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def crds(cluster):
    apply_chart_crds(cluster)
    apply_monitoring_crds(cluster)


@pytest.fixture(scope="module")
def team_namespaces(cluster):
    # VALUE_SETS["namespaced"] names team-a and team-b: Roles are created in them.
    names = [n for n in VALUE_SETS["namespaced"]["watchNamespaces"]]
    for n in names:
        create_namespace(cluster, n)
    yield names
    for n in names:
        delete_namespace(cluster, n)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_chart_is_accepted_by_the_api_server(cluster, crds, team_namespaces, namespace, name):
    # the CRDs are applied (for real) by the fixture, as `helm install` does before the rest
    text = template(VALUE_SETS[name], namespace=namespace, include_crds=False).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    res = cluster.kubectl("apply", "--dry-run=server", "--server-side", "--field-manager=helm-test", "-f", "-",
                          input=text, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    for d in docs:
        assert f"{d['kind'].lower()}" in res.stdout.lower() and d["metadata"]["name"] in res.stdout, (d["kind"], res.stdout)
    assert "Warning" not in res.stderr, res.stderr


@pytest.fixture
def restricted_namespace(cluster):
    ns = create_namespace(cluster, unique("restricted"), RESTRICTED)
    yield ns
    delete_namespace(cluster, ns)


@pytest.mark.parametrize("name", ["defaults", "custom-images"])
def test_operator_pod_passes_pod_security_restricted(cluster, crds, restricted_namespace, name):
    """The Deployment is accepted without a PodSecurity warning, and its pod template, as a Pod,
    is admitted where "restricted" is enforced; a privileged variant is refused there (the
    enforcement is real)."""
    docs = render(VALUE_SETS[name], namespace=restricted_namespace)
    dep = one(docs, "Deployment")
    res = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(dep), check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PodSecurity" not in res.stderr, res.stderr

    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "operator-template", "namespace": restricted_namespace,
                     "labels": dep["spec"]["template"]["metadata"]["labels"]},
        "spec": dep["spec"]["template"]["spec"],
    }
    # the ServiceAccount does not exist in this namespace: the default one stands in
    pod["spec"] = {**pod["spec"], "serviceAccountName": "default"}
    res = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert res.returncode == 0, res.stdout + res.stderr

    bad = yaml.safe_load(yaml.safe_dump(pod))
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    res = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert res.returncode != 0 and "violates PodSecurity" in res.stderr, res.stdout + res.stderr


@pytest.mark.parametrize("sets", [["operator.leaderElection=false", "operator.replicas=2"], ["watchNamespaces[0]=team-*"],
                                  ["image.pullPolicy=Sometimes"]])
def test_install_refuses_wrong_values(cluster, namespace, sets):
    from tests.chart.e2e import cluster_helm
    from tests.chart.helm import CHART

    args = []
    for s in sets:
        args += ["--set", s]
    res = cluster_helm(cluster, "install", "bad", str(CHART), "--namespace", namespace, *args, check=False)
    assert res.returncode != 0 and "don't meet the specifications of the schema" in res.stderr, res.stderr
    assert cluster_helm(cluster, "list", "--namespace", namespace, "-q").stdout.strip() == ""
