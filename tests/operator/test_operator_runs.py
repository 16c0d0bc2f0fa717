"""The operator against the real control plane: runs that go through (kwok completes the pods).

The operator runs as a subprocess (`sheepdog operator`, fixture operator_process) watching the
test's namespace, with `--test-pod-annotations` so that kwok writes each stage's summary as
its pods' termination message (see conftest.py).
"""

from __future__ import annotations

import statistics
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

STAGES4 = ("synthesize", "curate", "train", "evaluate")


def _latencies_from_log(log: str) -> list[float]:
    out = []
    for line in log.splitlines():
        if "s after the previous stage completed)" in line:
            out.append(float(line.rsplit("(", 1)[1].split("s after")[0]))
    return out


def test_three_iterations_reach_succeeded_with_one_job_per_stage(cluster, namespace, storage, operator_process):
    name = "three"
    # M_0 (the base model) is evaluated first, as iteration 0, and scores 0.2 (each iteration 0.25)
    m0 = {"i0.evaluate": {"sheepdog.test/termination-message": '{"stage":"evaluate","ok":true,"skipped":false,"seconds":1.0,"evaluation":{"ifeval-smoke.promptStrict":0.2},"iteration":0}'}}
    manifest = run_manifest(name, namespace, iterations=3, evaluation={"enabled": True, "suites": ["ifeval-smoke"]},
                            extra_annotations=m0)
    t0 = time.monotonic()
    cluster.apply(manifest)
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=300)
    elapsed = time.monotonic() - t0
    assert status["phase"] == "Succeeded", status
    assert status["reason"] == "Completed"
    run = get_run(cluster, namespace, name)
    uid = run["metadata"]["uid"]

    # --- status: one record per iteration, figures from the termination messages ------------
    m0_record, *recs = status["iterations"]
    assert [r["iteration"] for r in recs] == [1, 2, 3]
    assert {k for k in m0_record if k not in ("stages", "startedAt", "finishedAt", "gpuSeconds")} == {
        "iteration", "model", "evaluation"}
    assert (m0_record["iteration"], m0_record["model"]) == (0, "models/tiny")
    assert m0_record["evaluation"] == {"ifeval-smoke.promptStrict": 0.2}
    assert m0_record["stages"]["evaluate"]["job"] == f"{name}-i0-evaluate"
    assert m0_record["stages"]["evaluate"]["phase"] == "Succeeded"
    for r in recs:
        n = r["iteration"]
        assert (r["generated"], r["assessed"], r["parseFailures"]) == (20, 18, 1)
        assert (r["kept"], r["keepRate"], r["meanQuality"], r["meanFollowing"]) == (9, 0.5, 7.5, 8.25)
        assert r["trainLoss"] == 1.25
        assert r["evaluation"] == {"ifeval-smoke.promptStrict": 0.25}
        assert r["evaluationGain"] == {"ifeval-smoke.promptStrict": 0.05}
        assert r["model"] == f"runs/{name}/i{n}/model"
        # one_base: M_{t-1} generates, the base is trained
        assert r["baseModel"] == "/data/models/tiny" or r["baseModel"].endswith("models/tiny")
        if n > 1:
            assert r["generatorModel"] == f"runs/{name}/i{n - 1}/model"
        for stage in STAGES4:
            srec = r["stages"][stage]
            assert srec["phase"] == "Succeeded" and srec["attempts"] == 1, srec
            assert srec["job"] == f"{name}-i{n}-{stage}"
            assert srec["summary"]["stage"] == stage and srec["summary"]["iteration"] == n
        assert r["startedAt"] and r["finishedAt"]
    assert status["iteration"] == 3 and status["observedGeneration"] == run["metadata"]["generation"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Progressing"]["status"] == "False"

    # --- exactly one Job per stage and iteration, each as the builders made it -------------
    jobs = stage_jobs(cluster, namespace, name)
    names = sorted(j["metadata"]["name"] for j in jobs)
    assert names == sorted([f"{name}-i0-evaluate"] + [f"{name}-i{n}-{s}" for n in (1, 2, 3) for s in STAGES4])
    for j in jobs:
        meta, spec = j["metadata"], j["spec"]
        stage = meta["labels"]["sheepdog.dev/stage"]
        assert meta["labels"]["sheepdog.dev/run"] == name
        [owner] = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("SelfAlignmentRun", name, uid, True)
        assert spec["backoffLimit"] == 2
        assert j["status"].get("succeeded") == 1 and not j["status"].get("failed")
        pod = spec["template"]["spec"]
        [c] = pod["containers"]
        assert c["image"] == "registry.example/sheepdog-worker:test"
        assert c["command"][:4] == ["python", "-m", "sheepdog_jobs", stage]
        res = c["resources"]
        if stage == "curate":
            assert res["requests"]["cpu"] == "100m" and "nvidia.com/gpu" not in res.get("limits", {})
        else:
            assert res["limits"]["nvidia.com/gpu"] == "1" and res["requests"]["nvidia.com/gpu"] == "1"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["restartPolicy"] == "Never"
        assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "sheepdog-data" for v in pod["volumes"])
    # one pod per Job (nothing retried)
    pods = cluster.get_json("pods", "-n", namespace, "-l", "sheepdog.dev/run=" + name)["items"]
    assert len(pods) == 13 and all(p["status"]["phase"] == "Succeeded" for p in pods)

    # --- Kopf left no trace on the run: no finalizer, no progress annotations --------------
    assert not run["metadata"].get("finalizers")
    assert not [k for k in (run["metadata"].get("annotations") or {}) if "kopf" in k]

    # --- events, in order, emitted after the status writes -----------------------------------
    reasons = [e["reason"] for e in events_of(cluster, namespace, name)]
    assert reasons.count("StageSucceeded") == 13, reasons
    assert reasons.count("Completed") == 1
    assert "Warning" not in {e["type"] for e in events_of(cluster, namespace, name)}

    # --- metrics ------------------------------------------------------------------------------
    s = metric_samples(operator_process.metrics())
    assert metric(s, "sheepdog_runs", namespace=namespace, phase="Succeeded") == [1]
    assert sum(metric(s, "sheepdog_jobs_created_total", namespace=namespace)) == 13
    assert metric(s, "sheepdog_run_iteration", run=name) == [3]
    assert metric(s, "sheepdog_iteration_kept_pairs", run=name, iteration="2") == [9]
    assert metric(s, "sheepdog_iteration_evaluation_score", run=name, iteration="3", metric="ifeval-smoke.promptStrict") == [0.25]
    assert sum(metric(s, "sheepdog_stage_transition_latency_seconds_count", namespace=namespace)) == 12
    assert sum(metric(s, "sheepdog_stage_duration_seconds_count", namespace=namespace)) == 13
    assert metric(s, "sheepdog_iteration_evaluation_score", run=name, iteration="0", metric="ifeval-smoke.promptStrict") == [0.2]
    log = operator_process.log()
    assert "Traceback" not in log and " ERROR " not in log, operator_process.log_tail()
    latencies = _latencies_from_log(log)
    assert len(latencies) == 12
    print(f"\nM_0 + 3 iterations x 4 stages in {elapsed:.1f}s; transition latency (Job completionTime -> next "
          f"Job created, 1 s timestamp resolution): median {statistics.median(latencies):.2f}s, "
          f"max {max(latencies):.2f}s")
    assert max(latencies) < 10


def test_metrics_during_a_run_and_series_removed_on_delete(cluster, namespace, storage, operator_process):
    name = "watched"
    # every pod runs 4 s, so the run is observably Running in a stage
    manifest = run_manifest(name, namespace, iterations=1, extra_annotations={"*": {"sheepdog.test/duration": "4s"}})
    cluster.apply(manifest)

    def running_in_synthesize():
        s = metric_samples(operator_process.metrics())
        info = metric(s, "sheepdog_run_stage_info", namespace=namespace, run=name, iteration="1", stage="synthesize")
        return s if info == [1] and metric(s, "sheepdog_run_phase", run=name, phase="Running") == [1] else None

    s = cluster.wait_for("stage info of synthesize", running_in_synthesize, timeout=60)
    families = {n for n, _ in s}
    for fam in ("sheepdog_runs", "sheepdog_run_iteration", "sheepdog_run_stage_info", "sheepdog_jobs_created_total",
                "sheepdog_reconcile_duration_seconds_count"):
        assert fam in families, fam
    assert metric(s, "sheepdog_runs", namespace=namespace, phase="Running") == [1]

    wait_phase(cluster, namespace, name, ("Succeeded",), timeout=120)
    text = operator_process.metrics()
    s = metric_samples(text)
    # every family of the operator is exposed (HELP/TYPE lines, also those with no sample yet)
    for fam in ("sheepdog_runs", "sheepdog_run_iteration", "sheepdog_run_stage_info",
                "sheepdog_stage_duration_seconds", "sheepdog_jobs_created_total", "sheepdog_job_failures_total",
                "sheepdog_stage_retries_total", "sheepdog_iteration_generated_instructions",
                "sheepdog_iteration_assessed_pairs", "sheepdog_iteration_parse_failures",
                "sheepdog_iteration_kept_pairs", "sheepdog_iteration_keep_ratio",
                "sheepdog_iteration_mean_quality_score", "sheepdog_iteration_mean_following_score",
                "sheepdog_iteration_train_loss", "sheepdog_iteration_evaluation_score",
                "sheepdog_stage_transition_latency_seconds", "sheepdog_reconcile_errors_total",
                "sheepdog_reconcile_duration_seconds"):
        assert f"# TYPE {fam} " in text, fam
    assert metric(s, "sheepdog_iteration_generated_instructions", run=name, iteration="1") == [20]
    assert metric(s, "sheepdog_run_stage_info", run=name) == []  # finished: no current stage
    durations = metric(s, "sheepdog_stage_duration_seconds_sum", namespace=namespace)
    assert sum(durations) >= 3 * 4 - 3  # three stages of ~4 s (1 s timestamps)

    cluster.kubectl("delete", "selfalignmentrun", name, "-n", namespace, "--timeout=60s")

    def gone():
        s = metric_samples(operator_process.metrics())
        return not [k for k in s if ("run", name) in k[1]]

    cluster.wait_for("series of the deleted run removed", gone, timeout=30)
    s = metric_samples(operator_process.metrics())
    assert metric(s, "sheepdog_runs", namespace=namespace, phase="Succeeded") == [0]


# Bulk (make test-all): concurrent runs are proven in make test by the SIGKILL test's 4 runs at once.
@pytest.mark.bulk
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_many_runs_at_once(cluster, namespace, storage, operator_process):
    """100 one-iteration runs applied together (300 Jobs): all succeed, one Job per stage, no
    reconcile errors but conflicts; prints the time and the transition latencies."""
    n = 100
    stages = {s: {"gpus": 0} for s in ("synthesize", "train", "evaluate")}
    stages["synthesize"]["tensorParallel"] = 1
    manifests = [run_manifest(f"many-{i:03d}", namespace, iterations=1, stages=stages) for i in range(n)]
    text = "\n---\n".join(__import__("json").dumps(m) for m in manifests)
    t0 = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=text)

    def all_done():
        items = cluster.get_json("selfalignmentruns", "-n", namespace)["items"]
        phases = [((i.get("status") or {}).get("phase")) for i in items]
        return phases if len(items) == n and all(p in ("Succeeded", "Failed") for p in phases) else None

    phases = cluster.wait_for(f"{n} runs finished", all_done, timeout=900, interval=2)
    elapsed = time.monotonic() - t0
    assert phases.count("Succeeded") == n
    jobs = stage_jobs(cluster, namespace)
    assert len(jobs) == 3 * n and len({j["metadata"]["name"] for j in jobs}) == 3 * n
    s = metric_samples(operator_process.metrics())
    errors = {dict(k[1]).get("reason"): v for k, v in s.items() if k[0] == "sheepdog_reconcile_errors_total"}
    assert set(errors) <= {"Conflict"}, errors
    count = sum(metric(s, "sheepdog_reconcile_duration_seconds_count", namespace=namespace))
    total = sum(metric(s, "sheepdog_reconcile_duration_seconds_sum", namespace=namespace))
    latencies = _latencies_from_log(operator_process.log())
    latencies.sort()
    print(f"\n{n} runs x 3 stages in {elapsed:.1f}s; {count:.0f} reconciles, mean {1000 * total / count:.1f} ms; "
          f"conflicts {errors.get('Conflict', 0):.0f}; transition latency p50 "
          f"{latencies[len(latencies) // 2]:.2f}s p95 {latencies[int(len(latencies) * 0.95)]:.2f}s "
          f"max {latencies[-1]:.2f}s")


def test_sharded_synthesize_and_multinode_train(cluster, namespace, storage, operator_process):
    """Indexed Jobs: synthesize in 2 shards (counts of the pods' summaries add up), train on 2
    nodes behind its rendezvous Service (rank 0's summary is the Job's)."""
    name = "wide"
    stages = {"synthesize": {"gpus": 1, "tensorParallel": 1, "shards": 2}, "train": {"gpus": 1, "nodes": 2}}
    cluster.apply(run_manifest(name, namespace, iterations=1, stages=stages))
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert status["phase"] == "Succeeded", status
    [rec] = status["iterations"]
    assert (rec["generated"], rec["assessed"], rec["parseFailures"]) == (40, 36, 2)
    assert rec["meanQuality"] == 7.5 and rec["trainLoss"] == 1.25
    jobs = {j["metadata"]["name"]: j for j in stage_jobs(cluster, namespace, name)}
    for stage in ("synthesize", "train"):
        j = jobs[f"{name}-i1-{stage}"]
        assert j["spec"]["completionMode"] == "Indexed" and j["spec"]["completions"] == 2
        assert j["status"]["succeeded"] == 2
    svc = cluster.get_json("service", f"{name}-i1-train-rdzv", "-n", namespace)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == get_run(cluster, namespace, name)["metadata"]["uid"]
