"""Finished stage Jobs of older iterations are deleted once the run's status holds their outcome
(planner/retention_policy.py, kube/job_cleanup.py), on the real control plane: the operator at
its default (--job-history 2) runs 3 iterations; what stays is iterations 2 and 3, what went was
created once and deleted once (the API server's audit log), and the status still holds every
stage of every iteration with the name of its Job.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.operator.conftest import OperatorProcess, run_manifest, stage_jobs, wait_phase

pytestmark = pytest.mark.cluster

STAGES = ("synthesize", "curate", "train")


def job_requests(audit_log, namespace: str, verb: str) -> Counter:
    """How many requests of `verb` on Jobs of `namespace` the API server answered, by Job name."""
    seen, out = set(), Counter()
    for line in audit_log.read_text(errors="replace").splitlines():
        if '"jobs"' not in line or namespace not in line:
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        ref = ev.get("objectRef") or {}
        if (ev.get("verb") != verb or ref.get("resource") != "jobs" or ref.get("subresource")
                or ref.get("namespace") != namespace or ev.get("stage") != "ResponseComplete"
                or ev.get("auditID") in seen):
            continue
        seen.add(ev["auditID"])
        if (ev.get("responseStatus") or {}).get("code", 0) < 300:
            out[ref.get("name") or ""] += 1
    return out


def test_older_iterations_jobs_go_and_the_status_keeps_them(cluster, namespace, storage, tmp_path):
    op = OperatorProcess(cluster, [namespace], tmp_path / "operator.log", extra=("--job-history", "2")).start()
    try:
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
    finally:
        op.stop()
