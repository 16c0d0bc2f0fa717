"""`helm install` into the real control plane, then `sheepdog operator` with the release's
ServiceAccount identity completes kwok-simulated runs: the chart's RBAC is sufficient. The same
identity is refused what it does not need (Secrets, pods it would create itself, other
namespaces in namespaced mode). That the chart grants exactly what the operator uses, its
requests in the API server's audit log against the rendered RBAC, is
tests/chart/test_rbac_use.py's, in both modes, after every path that needs a grant. The runs' pods
are created by the real Job controller in a namespace enforcing Pod Security "restricted"; the
operator's own pod by the real ReplicaSet controller in another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.chart.e2e import (
    CRD_NAME,
    RESTRICTED,
    Release,
    apply_monitoring_crds,
    can_i,
    create_namespace,
    create_token,
    crd_managers,
    delete_namespace,
    deployment_container,
    failing_run,
    forbidden_lines,
    good_run,
    installed_release,
    remove_crd,
    run_operator_as,
    storage,
    unique,
    wait_crd_served,
    wait_phase,
)
from tests.chart.helm import CHART

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

INSTALL_VALUES = {
    "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "dashboards": {"enabled": True},
}


def wait_runs(cluster, operator, namespace: str, names: list[str]) -> dict[str, dict]:
    """Wait for each run to finish; on a timeout, fail with the operator's log."""
    try:
        return {n: wait_phase(cluster, namespace, n, ("Succeeded", "Failed")) for n in names}
    except BaseException:
        print(f"----- operator log -----\n{operator.log_tail(300)}")
        print(cluster.kubectl("get", "sar,jobs,pods", "-n", namespace, "-o", "wide", check=False).stdout)
        raise


@dataclass
class Scenario:
    release: Release
    run_namespace: str
    operator: Any
    statuses: dict[str, dict]
    metrics_answer: int = 0  # HTTPS /metrics with the operator's own token (not a metrics reader)


@pytest.fixture(scope="module")
def cluster_wide(cluster, tmp_path_factory):
    """Cluster-wide mode: release `sdcw` installs the CRD from the chart's crds/ (none exists
    before it); the operator (the Deployment's command, as its ServiceAccount, all namespaces)
    takes a 2-iteration run to Succeeded and a run whose train pods fail to Failed."""
    tmp = tmp_path_factory.mktemp("cluster-wide")
    remove_crd(cluster)
    apply_monitoring_crds(cluster)
    with installed_release(cluster, tmp, "sdcw", INSTALL_VALUES) as rel:
        wait_crd_served(cluster)
        run_ns = create_namespace(cluster, unique("runs"), RESTRICTED)
        op = run_operator_as(cluster, rel, tmp / "operator.log", namespaces=[])
        try:
            storage(cluster, run_ns)
            op.start()
            cluster.apply(good_run("good", run_ns))
            cluster.apply(failing_run("bad", run_ns))
            brief = failing_run("brief", run_ns)  # deleted 1 s after it failed (the delete grant)
            brief["spec"]["ttlSecondsAfterFinished"] = 1
            # its data goes with it: the finalizer (patch runs) and the cleanup Job (kwok completes it)
            brief["spec"]["storage"] = {"deleteDataOnDelete": True}
            cluster.apply(brief)
            statuses = wait_runs(cluster, op, run_ns, ["good", "bad"])
            cluster.wait_for("brief deleted by its TTL", lambda: cluster.kubectl(
                "get", "selfalignmentrun", "brief", "-n", run_ns, check=False).returncode != 0, timeout=120)
            # an authenticated caller the chart does not let read metrics: the operator asks the
            # API server (TokenReview, SubjectAccessReview: the metrics-auth grants, audited)
            answer, _ = op.scrape(token=create_token(cluster, rel.namespace, rel.service_account))
            yield Scenario(rel, run_ns, op, statuses, answer)
        finally:
            op.stop()
            delete_namespace(cluster, run_ns)


def test_install_prints_the_next_steps(cluster_wide):
    out = cluster_wide.release.install_output
    assert "STATUS: deployed" in out
    notes = out.split("NOTES:", 1)[1]
    assert "examples/quickstart.yaml" in notes
    assert "kubectl get sar" in notes
    assert f"{cluster_wide.release.name}-sheepdog-metrics.{cluster_wide.release.namespace}.svc:8080/metrics" in notes
    assert 'folder "sheepdog"' in notes and "grafana_dashboard" in notes
    assert "SheepdogRunFailed" in notes


def test_the_chart_installed_the_crd(cluster, cluster_wide):
    """Helm created the CRD from the chart's crds/ (the fixture removed any earlier one), and it
    is that file's CRD."""
    assert crd_managers(cluster) == {"helm"}
    stored = cluster.get_json("crd", CRD_NAME)["spec"]
    shipped = yaml.safe_load((CHART / "crds" / "sheepdog.dev_selfalignmentruns.yaml").read_text())["spec"]
    assert [v["name"] for v in stored["versions"]] == [v["name"] for v in shipped["versions"]]
    assert stored["versions"][0]["schema"] == shipped["versions"][0]["schema"]


def test_operator_runs_with_the_deployments_command(cluster, cluster_wide):
    """The operator process ran with the Deployment's arguments (plus the test-only flag) and
    its environment, not with flags of the tests' own."""
    container = deployment_container(cluster, cluster_wide.release)
    cmd = cluster_wide.operator.command()
    # the one difference: the metrics TLS Secret's files are where this machine has them
    local_tls = f"--metrics-cert-dir={cluster_wide.operator.metrics_tls}"
    args = [local_tls if a.startswith("--metrics-cert-dir=") else a for a in container["args"]]
    assert "--metrics-cert-dir=/etc/sheepdog/metrics-tls" in container["args"]
    assert cmd[-len(args) - 1:] == [*args, "--test-pod-annotations"], cmd
    env = cluster_wide.operator.cluster.full_env()
    assert env["SHEEPDOG_WORKER_DEFAULTS"] == next(
        e["value"] for e in container["env"] if e["name"] == "SHEEPDOG_WORKER_DEFAULTS")
    jobs = cluster.get_json("jobs", "-n", cluster_wide.run_namespace, "-l", "sheepdog.dev/run")["items"]
    images = {c["image"] for j in jobs for c in j["spec"]["template"]["spec"]["containers"]}
    worker = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--worker-image="))
    assert images == {worker}, images


def test_operator_pod_runs_under_restricted_pod_security(cluster, cluster_wide):
    """`helm install --wait` returned: the ReplicaSet controller created the operator's pod in a
    namespace that enforces "restricted" (kwok runs it)."""
    rel = cluster_wide.release
    pods = cluster.get_json("pods", "-n", rel.namespace, "-l", f"app.kubernetes.io/instance={rel.name}")["items"]
    assert len(pods) == 2  # operator.replicas: a leader and a standby
    labels = cluster.get_json("namespace", rel.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["serviceAccountName"] == rel.service_account


def test_runs_complete_as_the_service_account(cluster_wide):
    good, bad = cluster_wide.statuses["good"], cluster_wide.statuses["bad"]
    assert good["phase"] == "Succeeded", good
    m0, *recs = good["iterations"]  # evaluation is on: M_0 (the base model) first, as iteration 0
    assert m0["iteration"] == 0 and m0["evaluation"] == {"ifeval-smoke.promptStrict": 0.25}, m0
    assert [r["iteration"] for r in recs] == [1, 2]
    for rec in recs:
        assert rec["kept"] == 9 and rec["generated"] == 20 and rec["trainLoss"] == 1.25
        assert rec["evaluation"] == {"ifeval-smoke.promptStrict": 0.25}
    assert bad["phase"] == "Failed", bad
    assert "train" in (bad.get("message") or "") or bad.get("stage") == "train", bad


def test_stage_pods_were_admitted_under_restricted(cluster, cluster_wide):
    ns = cluster_wide.run_namespace
    assert cluster.get_json("namespace", ns)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    ours = "sheepdog.dev/run in (good,bad)"  # not the TTL run's, which the GC removes in its own time
    jobs = cluster.get_json("jobs", "-n", ns, "-l", ours)["items"]
    # good: 2 iterations x 4 stages (M_0's evaluate ran too, and its Job was deleted: the chart
    # keeps the Jobs of the last 2 iterations, operator.jobHistory); bad: synthesize, curate, train
    names = sorted(j["metadata"]["name"] for j in jobs)
    assert len(jobs) == 11 and "good-i0-evaluate" not in names, names
    pods = cluster.get_json("pods", "-n", ns, "-l", ours)["items"]
    assert len(pods) >= 12  # one per remaining Job, and bad's train twice (one retry)
    events = cluster.get_json("events", "-n", ns, "--field-selector", "reason=FailedCreate")["items"]
    assert not events, [e["message"] for e in events]


def test_metrics_refuse_the_operators_own_identity(cluster_wide):
    """HTTPS /metrics checked the token with the API server: the release's ServiceAccount is
    authenticated but not bound to the metrics-reader role (403, not 401)."""
    assert cluster_wide.metrics_answer == 403


def test_operator_was_never_refused(cluster_wide):
    lines = forbidden_lines(cluster_wide.operator.log())
    assert not lines, "\n".join(lines[:20])


NEEDED = [
    # (verb, resource, subresource)
    ("get", "selfalignmentruns.sheepdog.dev", None),
    ("list", "selfalignmentruns.sheepdog.dev", None),
    ("watch", "selfalignmentruns.sheepdog.dev", None),
    ("patch", "selfalignmentruns.sheepdog.dev", "status"),
    ("create", "jobs.batch", None),
    ("list", "jobs.batch", None),
    ("watch", "jobs.batch", None),
    ("patch", "jobs.batch", None),  # spec.suspend suspends the running stage's Job
    ("delete", "jobs.batch", None),  # finished Jobs of older iterations (operator.jobHistory)
    ("delete", "selfalignmentruns.sheepdog.dev", None),  # spec.ttlSecondsAfterFinished
    ("patch", "selfalignmentruns.sheepdog.dev", None),  # the finalizer of storage.deleteDataOnDelete
    ("list", "pods", None),
    ("get", "pods", "log"),  # a running train's progress
    ("create", "services", None),
    ("create", "configmaps", None),  # each stage execution's config file
    ("create", "networkpolicies.networking.k8s.io", None),  # each run's (networkPolicy.enabled)
    ("create", "events", None),
    ("list", "events", None),
    ("watch", "events", None),  # the Job controller's FailedCreate Events (a field selector)
]
REFUSED = [
    ("get", "secrets", None),
    ("list", "secrets", None),
    ("watch", "secrets", None),
    ("create", "pods", None),
    ("delete", "pods", None),
    ("create", "pods", "exec"),
    ("update", "jobs.batch", None),
    ("get", "pods", None),
    ("patch", "events", None),
    ("create", "events.events.k8s.io", None),
    ("list", "services", None),
    # create selfalignmentruns is granted: a sweep's child runs (tests/chart/test_rbac_use.py)
    ("update", "selfalignmentruns.sheepdog.dev", None),
    ("delete", "services", None),
    ("delete", "networkpolicies.networking.k8s.io", None),
    ("patch", "networkpolicies.networking.k8s.io", None),
    ("get", "configmaps", None),
    ("create", "persistentvolumeclaims", None),
    ("create", "deployments.apps", None),
    ("create", "rolebindings.rbac.authorization.k8s.io", None),
    ("create", "serviceaccounts", "token"),
]


def test_service_account_has_what_it_needs(cluster, cluster_wide):
    user = cluster_wide.release.user
    for verb, res, sub in NEEDED:
        assert can_i(cluster, user, verb, res, cluster_wide.run_namespace, sub), (verb, res, sub)
        assert can_i(cluster, user, verb, res, None, sub), f"cluster-wide: {verb} {res}"
    assert can_i(cluster, user, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)


def test_service_account_is_refused_what_it_does_not_need(cluster, cluster_wide):
    user = cluster_wide.release.user
    for verb, res, sub in REFUSED:
        assert not can_i(cluster, user, verb, res, cluster_wide.run_namespace, sub), (verb, res, sub)
        assert not can_i(cluster, user, verb, res, cluster_wide.release.namespace, sub), (verb, res, sub)
    for verb, res in [("list", "namespaces"), ("create", "customresourcedefinitions.apiextensions.k8s.io"),
                      ("update", "customresourcedefinitions.apiextensions.k8s.io"), ("list", "nodes"),
                      ("create", "clusterrolebindings.rbac.authorization.k8s.io")]:
        assert not can_i(cluster, user, verb, res, None), (verb, res)
    # and really refused, not only by `can-i`: read a Secret with the operator's own token
    res = cluster.kubectl("--kubeconfig", str(cluster_wide.release.kubeconfig), "get", "secrets",
                          "-n", cluster_wide.run_namespace, check=False)
    assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stdout + res.stderr


# ---- namespaced mode ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced(cluster, tmp_path_factory, cluster_wide):
    """Namespaced mode: release `sdns` with watchNamespaces: [<a>]; the operator (as its
    ServiceAccount, --namespace <a>) completes a run in <a>; a run in <b> is left alone.
    Depends on cluster_wide only to run after it (its operator watches all namespaces)."""
    cluster_wide.operator.stop()
    tmp = tmp_path_factory.mktemp("namespaced")
    ns_a = create_namespace(cluster, unique("team-a"), RESTRICTED)
    ns_b = create_namespace(cluster, unique("team-b"), RESTRICTED)
    try:
        # jobHistory 1: M_0's evaluate Job goes once iteration 1 has started (the delete grant)
        with installed_release(cluster, tmp, "sdns", {"watchNamespaces": [ns_a], "operator": {"jobHistory": 1}}) as rel:
            op = run_operator_as(cluster, rel, tmp / "operator.log", namespaces=[ns_a])
            try:
                storage(cluster, ns_a)
                storage(cluster, ns_b)
                op.start()
                cluster.apply(good_run("mine", ns_a, iterations=1))
                cluster.apply(good_run("theirs", ns_b, iterations=1))
                brief = failing_run("brief", ns_a)  # deleted 1 s after it failed (the delete grant)
                brief["spec"]["ttlSecondsAfterFinished"] = 1
                # its data goes with it: the finalizer (patch runs) and the cleanup Job (kwok completes it)
                brief["spec"]["storage"] = {"deleteDataOnDelete": True}
                cluster.apply(brief)
                status = wait_runs(cluster, op, ns_a, ["mine"])["mine"]
                cluster.wait_for("brief deleted by its TTL", lambda: cluster.kubectl(
                    "get", "selfalignmentrun", "brief", "-n", ns_a, check=False).returncode != 0, timeout=120)
                answer, _ = op.scrape(token=create_token(cluster, rel.namespace, rel.service_account))
                yield {"release": rel, "a": ns_a, "b": ns_b, "operator": op, "status": status,
                       "metrics_answer": answer}
            finally:
                op.stop()
    finally:
        delete_namespace(cluster, ns_a)
        delete_namespace(cluster, ns_b)


def test_namespaced_operator_completes_runs_in_its_namespace(cluster, namespaced):
    assert namespaced["status"]["phase"] == "Succeeded", namespaced["status"]
    jobs = sorted(j["metadata"]["name"] for j in cluster.get_json("jobs", "-n", namespaced["a"], "-l",
                                                                    "sheepdog.dev/run=mine")["items"])
    assert jobs == [f"mine-i1-{s}" for s in ("curate", "evaluate", "synthesize", "train")], jobs
    theirs = cluster.get_json("selfalignmentrun", "theirs", "-n", namespaced["b"])
    assert not theirs.get("status"), "a namespace the operator does not watch was touched"
    assert not cluster.get_json("jobs", "-n", namespaced["b"])["items"]


def test_namespaced_metrics_refuse_the_operators_own_identity(namespaced):
    assert namespaced["metrics_answer"] == 403


def test_namespaced_operator_needs_no_other_permission(namespaced):
    """Only refusal allowed: Kopf's namespace listing, which it then replaces by the exact
    names it was given (it logs that once)."""
    lines = [line for line in forbidden_lines(namespaced["operator"].log())
             if "namespaces" not in line.lower()]
    assert not lines, "\n".join(lines[:20])


def test_namespaced_identity_is_refused_other_namespaces(cluster, namespaced):
    user = namespaced["release"].user
    a, b = namespaced["a"], namespaced["b"]
    for verb, res, sub in NEEDED:
        assert can_i(cluster, user, verb, res, a, sub), (verb, res, sub)
        assert not can_i(cluster, user, verb, res, b, sub), f"{verb} {res} in another namespace"
        assert not can_i(cluster, user, verb, res, None, sub), f"{verb} {res} cluster-wide"
    for verb, res, sub in REFUSED:
        assert not can_i(cluster, user, verb, res, a, sub), (verb, res, sub)
    assert can_i(cluster, user, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert not can_i(cluster, user, "list", "namespaces", None)
