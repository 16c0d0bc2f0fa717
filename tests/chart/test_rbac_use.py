"""Least privilege, proven by use (issue 25 item 3): the chart installed in each mode, namespaced
(the documented setting for a shared cluster) and cluster-wide, the operator run with the
Deployment's arguments as the release's ServiceAccount, and driven through every path that
needs a grant:

  good     2 iterations with evaluation (M_0 first), a multi-node train (the rendezvous Service,
           the run's NetworkPolicy), the train held running while the operator reads rank 0's
           log (pods/log), jobHistory 1 (finished Jobs of older iterations deleted)
  bad      a train that fails, its retry, the run Failed
  brief    failed, deleted by ttlSecondsAfterFinished (delete runs) with deleteDataOnDelete
           (the finalizer: patch runs; the cleanup Job)
  held     spec.suspend set while its first stage runs (patch jobs: Job.spec.suspend)
  queued   the same for a run queued in a real Kueue (tests/cluster/kueue.py): Kueue undoes
           Job.spec.suspend, so the operator lists the Job's Workloads and patches spec.active
  taken    its first Job's name is held by a foreign Job (409: the GET that tells whose it is)
  nobody   that foreign Job is labelled with a run that does not exist: its events reconcile a
           run the watch cache lacks (the GET of a run)
  sweep    a SelfAlignmentSweep of one cell (its child run created, its status patched)
  metrics  a scrape with a token (TokenReview, SubjectAccessReview)

Then the API server's audit log of the ServiceAccount's requests is compared with the chart's
rendered RBAC (tests/chart/rbac_audit.py): every request granted, none refused but Kopf's
namespace listing, and every grant used: no grant is exempt.
"""

from __future__ import annotations

import json

import pytest

from tests.chart.e2e import (
    RESTRICTED,
    create_namespace,
    create_token,
    delete_namespace,
    failing_run,
    forbidden_lines,
    installed_release,
    run_operator_as,
    storage,
    unique,
    wait_phase,
)
from tests.chart.rbac_audit import Permission, grants_of, read_audit_log, ungranted, unused
from tests.operator.conftest import run_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

# Kopf asks for the namespace list once and, refused, serves exactly the names it was given.
ALLOWED_REFUSALS = {Permission("list", "", "namespaces"), Permission("watch", "", "namespaces")}

TRAIN_HELD = "40s"


def audit_has(cluster, user: str, verb: str, resource: str) -> bool:
    return any(str(u.permission) == f"{verb} {resource}" and u.code != 403
               for u in read_audit_log(cluster.control_plane.audit_log, user))


def foreign_job(name: str, namespace: str, run_label: str) -> dict:
    """A Job the operator did not create, suspended (no pod), labelled as a run's."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": {"sheepdog.dev/run": run_label}},
            "spec": {"suspend": True, "template": {"spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "image": "registry.example/none:1", "securityContext": {
                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}}}


def sweep(name: str, namespace: str) -> dict:
    run = run_manifest("unused", namespace, iterations=1)  # its annotations reach the child: kwok completes it
    template = run["spec"]
    return {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentSweep",
            "metadata": {"name": name, "namespace": namespace, "annotations": run["metadata"]["annotations"]},
            "spec": {"template": template, "axes": [{"field": "filter.threshold", "values": [7]}]}}


def running_pods(cluster, namespace: str, job: str) -> list[dict]:
    return [p for p in cluster.get_json("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")["items"]
            if p["status"].get("phase") == "Running"]


@pytest.fixture(scope="module", params=["namespaced", "cluster-wide"])
def used(request, cluster, kueue, tmp_path_factory):
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"rbac-use-{mode}")
    ns = create_namespace(cluster, unique("rbac-use"), RESTRICTED)
    # plenty of quota: the queued run is admitted at once (its suspend is what this is for)
    queue = kueue.create_queues(ns, ns, {"cpu": "1000", "memory": "4000Gi", "nvidia.com/gpu": "100"})
    namespaced = mode == "namespaced"
    values = {"watchNamespaces": [ns]} if namespaced else {}
    try:
        with installed_release(cluster, tmp, "sdrbac" if namespaced else "sdrbacw",
                               {**values, "operator": {"jobHistory": 1}}) as rel:
            op = run_operator_as(cluster, rel, tmp / "operator.log", namespaces=[ns] if namespaced else [])
            try:
                storage(cluster, ns)
                cluster.apply(foreign_job("taken-i1-synthesize", ns, "nobody"))
                op.start()
                stages = {"synthesize": {"gpus": 1, "tensorParallel": 1}, "curate": {},
                          "train": {"gpus": 1, "nodes": 2}, "evaluate": {"gpus": 1}}
                cluster.apply(run_manifest("good", ns, iterations=2, retries=1, evaluation={"enabled": True},
                                           stages=stages,
                                           extra_annotations={"train": {"sheepdog.test/duration": TRAIN_HELD}}))
                cluster.apply(failing_run("bad", ns))
                brief = failing_run("brief", ns)
                brief["spec"].update(ttlSecondsAfterFinished=1, storage={"deleteDataOnDelete": True})
                cluster.apply(brief)
                cluster.apply(run_manifest("held", ns, iterations=1,
                                           extra_annotations={"*": {"sheepdog.test/duration": "10m"}}))
                cluster.apply(run_manifest("queued", ns, iterations=1, scheduling={"queueName": queue},
                                           extra_annotations={"*": {"sheepdog.test/duration": "10m"}}))
                cluster.apply(run_manifest("taken", ns, iterations=1))
                cluster.apply(sweep("sw", ns))

                cluster.wait_for("held's synthesize Job", lambda: cluster.kubectl(
                    "get", "job", "held-i1-synthesize", "-n", ns, check=False).returncode == 0, timeout=120)
                cluster.kubectl("patch", "selfalignmentrun", "held", "-n", ns, "--type=merge",
                                "-p", '{"spec": {"suspend": true}}')
                cluster.wait_for("held's Job suspended", lambda: cluster.get_json(
                    "job", "held-i1-synthesize", "-n", ns)["spec"].get("suspend") is True, timeout=120)

                # queued: admitted by Kueue (its pod runs), then suspended through its Workload
                cluster.wait_for("queued's synthesize admitted and running", lambda: running_pods(
                    cluster, ns, "queued-i1-synthesize"), timeout=120)
                cluster.kubectl("patch", "selfalignmentrun", "queued", "-n", ns, "--type=merge",
                                "-p", '{"spec": {"suspend": true}}')
                cluster.wait_for("queued's Workload deactivated", lambda: any(
                    w["spec"].get("active") is False for w in kueue.workloads(ns)), timeout=120)

                # good's train: once rank 0 runs, a reconcile (here: one the run's edit triggers)
                # reads its log; kwok serves none, but the request is made and authorized
                def rank0_running() -> bool:
                    pods = cluster.get_json("pods", "-n", ns, "-l", "batch.kubernetes.io/job-name=good-i1-train")["items"]
                    return any(p["status"].get("phase") == "Running" for p in pods)

                cluster.wait_for("good's train running", rank0_running, timeout=240)
                cluster.kubectl("annotate", "selfalignmentrun", "good", "-n", ns, "sheepdog.test/poke=1", "--overwrite")
                cluster.wait_for("a pods/log read in the audit log", lambda: audit_has(
                    cluster, rel.user, "get", "pods/log"), timeout=60)

                statuses = {n: wait_phase(cluster, ns, n, ("Succeeded", "Failed"), timeout=400)
                            for n in ("good", "bad", "taken")}
                cluster.wait_for("brief deleted by its TTL", lambda: cluster.kubectl(
                    "get", "selfalignmentrun", "brief", "-n", ns, check=False).returncode != 0, timeout=180)
                cluster.wait_for("the sweep's child run and status", lambda: (
                    cluster.get_json("selfalignmentsweep", "sw", "-n", ns).get("status") and cluster.get_json(
                        "selfalignmentruns", "-n", ns, "-l", "sheepdog.dev/sweep=sw")["items"]), timeout=120)
                answer, _ = op.scrape(token=create_token(cluster, rel.namespace, rel.service_account))
                yield {"mode": mode, "release": rel, "ns": ns, "operator": op, "statuses": statuses,
                       "metrics": answer}
            except BaseException:
                print(f"----- operator log -----\n{op.log_tail(300)}")
                raise
            finally:
                op.stop()
    finally:
        kueue.delete_cluster_queue(queue)
        delete_namespace(cluster, ns)


def test_the_paths_were_taken(cluster, used):
    st = used["statuses"]
    assert st["good"]["phase"] == "Succeeded", st["good"]
    assert st["bad"]["phase"] == "Failed", st["bad"]
    assert st["taken"]["phase"] == "Failed" and "not owned by this run" in st["taken"]["message"], st["taken"]
    svc = cluster.get_json("services", "-n", used["ns"], "-l", "sheepdog.dev/run=good")["items"]
    assert [s["metadata"]["name"] for s in svc] == ["good-i1-train-rdzv", "good-i2-train-rdzv"]
    assert used["metrics"] == 403  # the operator's own token may not read metrics: the reviews said so


def test_the_operator_was_never_refused(used):
    # not refusals of the operator: Kopf's namespace listing, and its own metrics server refusing
    # the scrape above (the operator's token may not read metrics)
    lines = [line for line in forbidden_lines(used["operator"].log())
             if "namespaces" not in line.lower() and " sheepdog.metrics: " not in line]
    assert not lines, "\n".join(lines[:20])


def test_every_grant_was_used_and_every_use_granted(cluster, used):
    rel = used["release"]
    uses = read_audit_log(cluster.control_plane.audit_log, rel.user)
    grants = grants_of(rel.manifests, rel.namespace, rel.service_account)
    missing = [u for u in ungranted(uses, grants) if u.permission not in ALLOWED_REFUSALS]
    assert not missing, "used but not granted:\n" + "\n".join(f"{u.permission} in {u.namespace} ({u.code})"
                                                              for u in missing)
    idle = unused(grants, uses)
    assert not idle, "granted but never used (remove it, or drive the path that needs it):\n" + \
        "\n".join(f"{g.permission} ({g.namespace or 'cluster-wide'})" for g in idle)
    # the scopes are the mode's: Roles in the run namespace, or ClusterRoles bound cluster-wide
    # (the metrics reviews are cluster-scoped in both)
    scopes = {g.namespace for g in grants if g.permission.resource == "selfalignmentruns"}
    assert scopes == ({used["ns"]} if used["mode"] == "namespaced" else {None}), scopes
    print(json.dumps(sorted({str(u.permission) for u in uses}), indent=1))
