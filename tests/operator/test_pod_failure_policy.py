"""Pods that end cleanly (issue 24.5), on the real Job controller: a stage program that exits 3
(EXIT_UNFIXABLE: an error no retry can fix) fails its Job at once through the podFailurePolicy's
FailJob rule, its retries unspent; exit 1 is retried as before (test_operator_faults.py)."""

from __future__ import annotations

import json

import pytest

from tests.operator.conftest import run_manifest, stage_jobs, wait_phase

pytestmark = pytest.mark.cluster


def test_an_unfixable_exit_code_fails_the_job_without_spending_its_retries(cluster, namespace, storage,
                                                                           operator_process):
    name = "unfixable"
    error = {"ok": False, "error": "config: spec.synthesis.dataSize: greater than or equal to 1"}
    cluster.apply(run_manifest(name, namespace, iterations=1, retries=3, extra_annotations={
        "synthesize": {"sheepdog.test/fail": "true", "sheepdog.test/exit-code": "3",
                       "sheepdog.test/termination-message": json.dumps(error)}}))
    status = wait_phase(cluster, namespace, name, ("Failed", "Succeeded"), timeout=120)
    assert (status["phase"], status["stage"]) == ("Failed", "synthesize"), status
    assert "failed after 1 attempt" in status["message"] and "dataSize" in status["message"], status
    [job] = stage_jobs(cluster, namespace, name)
    assert job["spec"]["backoffLimit"] == 3 and job["status"]["failed"] == 1  # 3 retries left unspent
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy", failed  # the FailJob rule, not BackoffLimitExceeded
    assert job["spec"]["activeDeadlineSeconds"] == 3 * 86400  # the stage's default deadline
