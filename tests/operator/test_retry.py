"""Recoverable runs on the real control plane (issue 24.2): a run whose i2 train failed for
good is resumed by `sheepdog retry RUN -n NS` from that stage, as a new Job `<job>-r1`, keeping
everything before it (its Jobs, records and figures) and the failed Job itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.operator.conftest import events_of, get_run, run_manifest, stage_jobs, summaries_annotation, wait_phase

pytestmark = pytest.mark.cluster


def _retry(cluster, namespace: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sheepdog.cli", "retry", name, "-n", namespace],
                          capture_output=True, text=True, env=cluster.full_env(), timeout=120)


def test_a_failed_run_resumes_from_its_failed_stage_on_sheepdog_retry(cluster, namespace, storage,
                                                                      operator_process):
    name = "retried"
    error = {"ok": False, "error": "train exploded: CUDA out of memory"}
    cluster.apply(run_manifest(name, namespace, iterations=2, retries=0, extra_annotations={
        "i2.train": {"sheepdog.test/fail": "true", "sheepdog.test/termination-message": json.dumps(error)}}))
    failed = wait_phase(cluster, namespace, name, ("Failed", "Succeeded"), timeout=240)
    assert (failed["phase"], failed["iteration"], failed["stage"]) == ("Failed", 2, "train"), failed
    assert "CUDA out of memory" in failed["message"]
    before = {j["metadata"]["name"]: j["metadata"]["uid"] for j in stage_jobs(cluster, namespace, name)}
    assert sorted(before) == sorted(f"{name}-i{i}-{s}" for i, s in
                                    [(1, "synthesize"), (1, "curate"), (1, "train"), (2, "synthesize"),
                                     (2, "curate"), (2, "train")])

    # the cause fixed (here: its pods no longer fail), the run is retried from the CLI
    cluster.kubectl("annotate", "sar", name, "-n", namespace, "--overwrite",
                    f"sheepdog.test/pod-annotations={summaries_annotation()}")
    proc = _retry(cluster, namespace, name)
    assert proc.returncode == 0, proc.stderr
    assert "sheepdog.dev/retry=" in proc.stdout and "iteration 2 train" in proc.stdout, proc.stdout
    token = get_run(cluster, namespace, name)["metadata"]["annotations"]["sheepdog.dev/retry"]

    done = wait_phase(cluster, namespace, name, ("Succeeded",), timeout=180)
    assert done["reason"] == "Completed", done
    # history kept: iteration 1 and i2's stages before train exactly as they were
    assert done["iterations"][0] == failed["iterations"][0]
    for stage in ("synthesize", "curate"):
        assert done["iterations"][1]["stages"][stage] == failed["iterations"][1]["stages"][stage]
    train = done["iterations"][1]["stages"]["train"]
    assert (train["phase"], train["retries"], train["job"], train["attempts"]) == (
        "Succeeded", 1, f"{name}-i2-train-r1", 1), train  # its attempts counted anew
    assert done["iterations"][1]["trainLoss"] == 1.25  # the retried train's figures are recorded
    last = done["lastRetry"]
    assert (last["token"], last["resumed"], last["iteration"], last["stage"], last["job"]) == (
        token, True, 2, "train", f"{name}-i2-train"), last
    assert "CUDA out of memory" in last["message"]

    # nothing that had run was run again: every earlier Job is the same object, the failed one
    # too (its pods stay for `kubectl logs`); one new Job, labelled as the first retry
    after = {j["metadata"]["name"]: j for j in stage_jobs(cluster, namespace, name)}
    assert {n: j["metadata"]["uid"] for n, j in after.items() if n in before} == before
    assert sorted(set(after) - set(before)) == [f"{name}-i2-train-r1"]
    assert after[f"{name}-i2-train-r1"]["metadata"]["labels"]["sheepdog.dev/retry"] == "1"
    old = after[f"{name}-i2-train"]["status"]
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in old["conditions"]), old

    events = events_of(cluster, namespace, name)
    retried = [e for e in events if e["reason"] == "Retried"]
    assert len(retried) == 1 and retried[0]["type"] == "Normal", retried
    assert "iteration 2 train runs again (retry 1" in retried[0]["message"]
    assert [e["reason"] for e in events].count("StageFailed") == 1

    # a run that has not failed is not retried: the CLI says so and changes nothing
    again = _retry(cluster, namespace, name)
    assert again.returncode != 0 and "not Failed" in again.stderr, again
    assert get_run(cluster, namespace, name)["metadata"]["annotations"]["sheepdog.dev/retry"] == token


def test_kubectl_annotate_is_a_retry_request_too(cluster, namespace, storage, operator_process):
    """The annotation is the interface: a first-stage failure retried with kubectl alone."""
    name = "annotated"
    cluster.apply(run_manifest(name, namespace, iterations=1, retries=0, extra_annotations={
        "synthesize": {"sheepdog.test/fail": "true"}}))
    failed = wait_phase(cluster, namespace, name, ("Failed", "Succeeded"), timeout=180)
    assert (failed["phase"], failed["stage"]) == ("Failed", "synthesize"), failed
    cluster.kubectl("annotate", "sar", name, "-n", namespace, "--overwrite",
                    f"sheepdog.test/pod-annotations={summaries_annotation()}", "sheepdog.dev/retry=by-hand-1")
    done = wait_phase(cluster, namespace, name, ("Succeeded",), timeout=180)
    assert done["iterations"][0]["stages"]["synthesize"]["job"] == f"{name}-i1-synthesize-r1"
    assert done["lastRetry"]["token"] == "by-hand-1" and done["lastRetry"]["resumed"] is True
