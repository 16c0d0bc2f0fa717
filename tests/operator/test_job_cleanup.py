"""What a run leaves in the cluster, on the real control plane. Finished stage Jobs of older
iterations are deleted once the run's status holds their outcome (planner/retention_policy.py,
kube/job_cleanup.py): the operator at its default (--job-history 2) runs 3 iterations; what stays
is iterations 2 and 3, what went was created once and deleted once (the API server's audit log),
and the status still holds every stage of every iteration with the name of its Job. A finished
run with spec.ttlSecondsAfterFinished is deleted by the operator after it (planner/ttl_policy.py).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sheepdog.kube.client import USER_AGENT
from sheepdog.timestamps import parse_time
from tests.operator.conftest import run_manifest, stage_jobs, wait_phase

pytestmark = pytest.mark.cluster

STAGES = ("synthesize", "curate", "train")


def audit_events(audit_log, namespace: str) -> list[dict]:
    """The completed, successful requests on objects of `namespace` in the audit log."""
    out = []
    for line in audit_log.read_text(errors="replace").splitlines():
        if namespace not in line:
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written
        ref = ev.get("objectRef") or {}
        if (ref.get("namespace") == namespace and ev.get("stage") == "ResponseComplete"
                and (ev.get("responseStatus") or {}).get("code", 0) < 300):
            out.append(ev)
    return out


def job_requests(audit_log, namespace: str, verb: str) -> Counter:
    """How many requests of `verb` on Jobs of `namespace` succeeded, by Job name; the
    pre-flight's dry runs (kube/preflight.py: `dryRun=All`, nothing stored) are not counted."""
    return Counter(ev["objectRef"].get("name") or "" for ev in audit_events(audit_log, namespace)
                   if ev.get("verb") == verb and ev["objectRef"].get("resource") == "jobs"
                   and not ev["objectRef"].get("subresource") and "dryRun=" not in ev.get("requestURI", ""))


def test_older_iterations_jobs_go_and_the_status_keeps_them(cluster, namespace, storage, audited_operator):
    audited_operator("--job-history", "2")
    name = "tidy"
    cluster.apply(run_manifest(name, namespace, iterations=3))
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=300)
    assert status["phase"] == "Succeeded", status
    every = {f"{name}-i{n}-{s}" for n in (1, 2, 3) for s in STAGES}
    kept = {f"{name}-i{n}-{s}" for n in (2, 3) for s in STAGES}
    cluster.wait_for("iteration 1's Jobs deleted", lambda: {
        j["metadata"]["name"] for j in stage_jobs(cluster, namespace, name)} == kept, timeout=60)
    for rec in status["iterations"]:
        for stage in STAGES:
            srec = rec["stages"][stage]
            assert srec["phase"] == "Succeeded" and srec["job"] == f"{name}-i{rec['iteration']}-{stage}", srec
    audit = cluster.control_plane.audit_log
    created = job_requests(audit, namespace, "create")
    assert created == Counter({n: 1 for n in every}), created
    cluster.wait_for("the deletions in the audit log",
                     lambda: job_requests(audit, namespace, "delete") == Counter({n: 1 for n in every - kept}),
                     timeout=30)


def test_a_finished_run_is_deleted_after_its_ttl_and_its_jobs_with_it(cluster, namespace, storage, audited_operator):
    audited_operator()
    name = "fleeting"
    manifest = run_manifest(name, namespace, iterations=1)
    manifest["spec"]["ttlSecondsAfterFinished"] = 3
    cluster.apply(manifest)
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert status["phase"] == "Succeeded", status
    cluster.wait_for("the run deleted by its TTL", lambda: cluster.kubectl(
        "get", "selfalignmentrun", name, "-n", namespace, check=False).returncode != 0, timeout=60)
    cluster.wait_for("its Jobs collected", lambda: not stage_jobs(cluster, namespace, name), timeout=60)
    # the operator deleted it, once, no sooner than 3 s after it finished
    finished = max(parse_time(c["lastTransitionTime"]) for c in status["conditions"])
    deletes = [ev for ev in audit_events(cluster.control_plane.audit_log, namespace)
               if ev["verb"] == "delete" and ev["objectRef"].get("resource") == "selfalignmentruns"]
    assert [ev["userAgent"].split("/")[0] for ev in deletes] == [USER_AGENT], deletes
    assert (parse_time(deletes[0]["requestReceivedTimestamp"]) - finished).total_seconds() >= 3
