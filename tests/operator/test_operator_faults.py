"""The operator against the real control plane: failures, suspend/resume, deletion while the
operator is down, and an operator killed mid-run."""

from __future__ import annotations

import json
import time

import pytest

from tests.operator.conftest import (
    events_of,
    get_run,
    metric,
    metric_samples,
    run_manifest,
    stage_jobs,
    wait_phase,
)

pytestmark = pytest.mark.cluster


def _patch_spec(cluster, namespace: str, name: str, patch: dict) -> None:
    cluster.kubectl("patch", "selfalignmentrun", name, "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": patch}))


def _job_names(cluster, namespace: str, name: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in stage_jobs(cluster, namespace, name))


def _edit_and_wait_reconciled(cluster, namespace: str, name: str, patch: dict) -> dict:
    """Edits the spec, then waits until a reconcile has answered the edit (status.observedGeneration
    reaches the new generation): the positive signal that the operator has looked at the run
    again. That reconcile creates its Jobs before its status write, so the Jobs it would have
    created already exist when this returns. Returns the status."""
    _patch_spec(cluster, namespace, name, patch)
    generation = get_run(cluster, namespace, name)["metadata"]["generation"]

    def answered():
        st = get_run(cluster, namespace, name).get("status") or {}
        return st if (st.get("observedGeneration") or 0) >= generation else None

    return cluster.wait_for(f"the operator to answer generation {generation} of {name}", answered,
                            timeout=60, interval=0.2)


def test_failing_stage_is_retried_by_the_job_then_fails_the_run(cluster, namespace, storage, operator_process):
    name = "failing"
    error = {"ok": False, "error": "curate exploded: no pairs left"}
    manifest = run_manifest(name, namespace, iterations=2, retries=2, extra_annotations={
        "i1.curate": {"sheepdog.test/fail": "true", "sheepdog.test/termination-message": json.dumps(error)},
    })
    cluster.apply(manifest)
    # the Job controller backs off 10 s, 20 s between pod retries
    status = wait_phase(cluster, namespace, name, ("Failed", "Succeeded"), timeout=240)
    assert (status["phase"], status["reason"]) == ("Failed", "StageFailed"), status
    msg = status["message"]
    assert "iteration 1 curate failed after 3 attempts" in msg, msg
    assert "curate exploded: no pairs left" in msg and "BackoffLimitExceeded" in msg, msg
    assert {c["type"]: c["status"] for c in status["conditions"]}["Failed"] == "True"

    # one Job for the stage, its backoffLimit spent by the real Job controller: 3 pods
    assert _job_names(cluster, namespace, name) == [f"{name}-i1-curate", f"{name}-i1-synthesize"]
    [job] = [j for j in stage_jobs(cluster, namespace, name) if j["metadata"]["name"].endswith("curate")]
    assert job["spec"]["backoffLimit"] == 2 and job["status"]["failed"] == 3
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={name}-i1-curate")["items"]
    assert len(pods) == 3 and all(p["status"]["phase"] == "Failed" for p in pods)
    curate = status["iterations"][0]["stages"]["curate"]
    assert curate["phase"] == "Failed" and curate["attempts"] == 3

    events = events_of(cluster, namespace, name)
    reasons = [e["reason"] for e in events]
    assert "StageFailed" in reasons and reasons.count("StageRetrying") >= 1, reasons
    [failed] = [e for e in events if e["reason"] == "StageFailed"]
    assert failed["type"] == "Warning" and "curate exploded" in failed["message"]

    s = metric_samples(operator_process.metrics())
    assert metric(s, "sheepdog_job_failures_total", namespace=namespace, stage="curate") == [1]
    assert metric(s, "sheepdog_stage_retries_total", namespace=namespace, stage="curate") == [2]
    assert metric(s, "sheepdog_runs", namespace=namespace, phase="Failed") == [1]

    # Failed is final: a later reconcile (here the answer to raising iterations, which would run
    # more on a succeeded run) creates nothing
    status = _edit_and_wait_reconciled(cluster, namespace, name, {"iterations": 3})
    assert (status["phase"], status["reason"]) == ("Failed", "StageFailed"), status
    assert _job_names(cluster, namespace, name) == [f"{name}-i1-curate", f"{name}-i1-synthesize"]


def test_suspend_mid_run_then_resume(cluster, namespace, storage, operator_process):
    name = "pausable"
    manifest = run_manifest(name, namespace, iterations=1, extra_annotations={
        "*": {"sheepdog.test/duration": "4s"}, "synthesize": {"sheepdog.test/duration": "20s"}})
    cluster.apply(manifest)
    job = f"{name}-i1-synthesize"
    selector = f"batch.kubernetes.io/job-name={job}"
    cluster.wait_for("synthesize pod running", lambda: any(
        p["status"].get("phase") == "Running" for p in cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]),
        timeout=60, interval=0.2)
    _patch_spec(cluster, namespace, name, {"suspend": True})
    # the running stage's Job is suspended: its pod goes (its GPU is free), the run is Suspended
    status = wait_phase(cluster, namespace, name, ("Suspended",), timeout=60)
    assert status["reason"] == "Suspended" and "synthesize" in status["message"], status
    assert "GPUs freed" in status["message"], status
    assert status["iterations"][0]["stages"]["synthesize"]["phase"] == "Running"
    assert cluster.get_json("job", job, "-n", namespace)["spec"]["suspend"] is True
    cluster.wait_for("the suspended Job's pod gone", lambda: not cluster.get_json(
        "pods", "-n", namespace, "-l", selector)["items"], timeout=60)
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stuck"] == "False"
    # a later reconcile of the suspended run (the answer to an edit) starts nothing either
    status = _edit_and_wait_reconciled(cluster, namespace, name, {"synthesis": {"maxTokens": 65}})
    assert _job_names(cluster, namespace, name) == [f"{name}-i1-synthesize"]
    assert status["phase"] == "Suspended", status
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "True"

    _patch_spec(cluster, namespace, name, {"suspend": False})
    cluster.wait_for("the Job resumed", lambda: not cluster.get_json("job", job, "-n", namespace)["spec"]["suspend"],
                     timeout=60)
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=120)
    assert status["phase"] == "Succeeded", status
    assert _job_names(cluster, namespace, name) == sorted(f"{name}-i1-{s}" for s in ("synthesize", "curate", "train"))
    reasons = [e["reason"] for e in events_of(cluster, namespace, name)]
    assert "Suspended" in reasons and "Resumed" in reasons, reasons


def test_run_deleted_while_operator_is_down_goes_with_its_jobs(cluster, namespace, storage, operator_process):
    name = "orphan"
    manifest = run_manifest(name, namespace, iterations=2, extra_annotations={"*": {"sheepdog.test/duration": "30s"}})
    cluster.apply(manifest)
    cluster.wait_for("synthesize Job", lambda: _job_names(cluster, namespace, name) == [f"{name}-i1-synthesize"],
                     timeout=60, interval=0.2)
    # SIGTERM: a clean exit (0) within a pod's default grace period (30 s), else SIGKILL and -9
    assert operator_process.stop(timeout=30) == 0

    t0 = time.monotonic()
    cluster.kubectl("delete", "selfalignmentrun", name, "-n", namespace, "--timeout=30s")
    deleted_in = time.monotonic() - t0
    assert cluster.kubectl("get", "selfalignmentrun", name, "-n", namespace, check=False).returncode != 0
    # the real garbage collector removes the Job (and its pods) through the ownerReference
    cluster.wait_for("Jobs garbage-collected", lambda: not stage_jobs(cluster, namespace, name), timeout=90)
    cluster.wait_for("pods garbage-collected", lambda: not cluster.get_json(
        "pods", "-n", namespace, "-l", f"sheepdog.dev/run={name}")["items"], timeout=90)
    print(f"\nrun deleted in {deleted_in:.2f}s with the operator down")

    # the operator starts again with nothing to do for it. It has listed and watches the
    # namespace once it reconciles (and exports) a new run there; only then is the absence
    # of the deleted run's series worth asserting
    operator_process.start()
    cluster.apply(run_manifest("witness", namespace, iterations=1))
    cluster.wait_for("the operator's series of the new run", lambda: [
        k for k in metric_samples(operator_process.metrics()) if ("run", "witness") in k[1]], timeout=60, interval=0.2)
    s = metric_samples(operator_process.metrics())
    assert not [k for k in s if ("run", name) in k[1]]
    assert "Traceback" not in operator_process.log()


def test_operator_killed_mid_run_resumes_without_duplicates(cluster, namespace, storage, operator_process):
    name = "sturdy"
    manifest = run_manifest(name, namespace, iterations=2, extra_annotations={"*": {"sheepdog.test/duration": "2s"}})
    cluster.apply(manifest)
    cluster.wait_for("curate Job", lambda: f"{name}-i1-curate" in _job_names(cluster, namespace, name), timeout=90,
                     interval=0.2)
    operator_process.kill()  # SIGKILL: no cleanup at all
    time.sleep(3)  # the curate pod finishes while nobody watches
    operator_process.start()
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert status["phase"] == "Succeeded", status
    jobs = _job_names(cluster, namespace, name)
    assert jobs == sorted(f"{name}-i{n}-{s}" for n in (1, 2) for s in ("synthesize", "curate", "train"))
    assert [r["kept"] for r in status["iterations"]] == [9, 9]
    # each stage's success recorded once: one StageSucceeded event per stage
    reasons = [e["reason"] for e in events_of(cluster, namespace, name)]
    assert reasons.count("StageSucceeded") == 6, reasons
    # the restarted operator's first reconcile saw the Jobs (Kopf runs no handler before the
    # watch cache's initial listings are in): no running Job taken for one deleted by hand
    assert "StageRestarted" not in reasons and "WaitingForOldPods" not in reasons, reasons
    # Kopf still added nothing to the run
    run = get_run(cluster, namespace, name)
    assert not run["metadata"].get("finalizers")


def test_apiserver_restart_mid_run(cluster, namespace, storage, operator_process):
    """The API server goes away for a while (watch streams break, requests fail): the operator
    reconnects its watches and the run finishes with one Job per stage."""
    name = "weather"
    manifest = run_manifest(name, namespace, iterations=2, extra_annotations={"*": {"sheepdog.test/duration": "2s"}})
    cluster.apply(manifest)
    cluster.wait_for("curate Job", lambda: f"{name}-i1-curate" in _job_names(cluster, namespace, name), timeout=90,
                     interval=0.2)
    cluster.control_plane.stop("kube-apiserver")
    time.sleep(5)
    cluster.control_plane.start("kube-apiserver")
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=240)
    assert status["phase"] == "Succeeded", status
    assert _job_names(cluster, namespace, name) == sorted(
        f"{name}-i{n}-{s}" for n in (1, 2) for s in ("synthesize", "curate", "train"))
    assert operator_process.proc.poll() is None  # still the same process


def test_spec_the_api_server_accepts_but_the_operator_rejects_holds_the_run(cluster, namespace, storage,
                                                                             operator_process):
    """`training.lora.targetModules` is a string or a list: the CRD cannot type it, so the real
    API server stores a number as given (tests/api/invalid/lora-target-modules-number.yaml); the
    operator's loader rejects it. docs/design.md: reason InvalidSpec, a Warning event, no stage
    starts, not a failure: once the spec is fixed the run goes on."""
    name = "untyped"
    manifest = run_manifest(name, namespace, iterations=1)
    manifest["spec"]["training"]["lora"] = {"targetModules": 7}
    cluster.apply(manifest)
    assert get_run(cluster, namespace, name)["spec"]["training"]["lora"]["targetModules"] == 7

    def held():
        st = get_run(cluster, namespace, name).get("status") or {}
        return st if st.get("reason") == "InvalidSpec" else None

    status = cluster.wait_for("reason InvalidSpec", held, timeout=60, interval=0.2)
    assert status["phase"] == "Pending", status
    assert "spec.training.lora.targetModules" in status["message"], status["message"]
    assert "no new stage starts until it is fixed" in status["message"], status["message"]
    assert not stage_jobs(cluster, namespace, name)  # the reconcile that wrote this created nothing
    [event] = [e for e in events_of(cluster, namespace, name) if e["reason"] == "InvalidSpec"]
    assert event["type"] == "Warning" and "targetModules" in event["message"], event

    _patch_spec(cluster, namespace, name, {"training": {"lora": {"targetModules": ["q_proj", "v_proj"]}}})
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=120)
    assert status["phase"] == "Succeeded", status
    assert _job_names(cluster, namespace, name) == sorted(f"{name}-i1-{s}" for s in ("synthesize", "curate", "train"))
