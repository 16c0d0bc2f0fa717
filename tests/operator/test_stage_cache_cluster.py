"""The stage cache on the real control plane (kwok completes the pods): two runs in one
namespace, on one storage claim, that differ only in curate's threshold share synthesize."""

from __future__ import annotations

import json

import pytest

from sheepdog.kube.stage_config_map import CONFIG_KEY, VOLUME_NAME
from tests.operator.conftest import events_of, get_run, run_manifest, stage_jobs, wait_phase

pytestmark = pytest.mark.cluster


def test_two_runs_differing_in_threshold_share_one_synthesize(cluster, namespace, storage, operator_process):
    # synthesize runs long enough that the second run finds it being produced and waits
    slow = {"synthesize": {"sheepdog.test/duration": "4s"}}
    low = run_manifest("low", namespace, iterations=1, extra_annotations=slow, stageCache=True,
                       filter={"threshold": 5})
    high = run_manifest("high", namespace, iterations=1, extra_annotations=slow, stageCache=True,
                        filter={"threshold": 8})
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in (low, high)))
    statuses = {n: wait_phase(cluster, namespace, n, ("Succeeded", "Failed"), timeout=240) for n in ("low", "high")}
    assert all(s["phase"] == "Succeeded" for s in statuses.values()), statuses

    jobs = sorted(j["metadata"]["name"] for j in stage_jobs(cluster, namespace))
    synthesize = [j for j in jobs if j.endswith("-i1-synthesize")]
    assert len(synthesize) == 1, jobs  # one producer
    producer = synthesize[0].removesuffix("-i1-synthesize")
    consumer = "high" if producer == "low" else "low"
    assert sorted(jobs) == sorted([f"{producer}-i1-{s}" for s in ("synthesize", "curate", "train")]
                                  + [f"{consumer}-i1-{s}" for s in ("curate", "train")])

    mine = statuses[consumer]["iterations"][0]
    theirs = statuses[producer]["iterations"][0]
    reused = mine["stages"]["synthesize"]
    assert reused["phase"] == "Succeeded" and reused["reusedFrom"] == f"{namespace}/{producer}/iteration-1/synthesize"
    assert reused["reusedRunDir"] == f"runs/{producer}" and "job" not in reused
    assert reused["cacheKey"] == theirs["stages"]["synthesize"]["cacheKey"]
    assert mine["stages"]["curate"]["cacheKey"] != theirs["stages"]["curate"]["cacheKey"]
    assert "reusedFrom" not in theirs["stages"]["synthesize"]
    assert mine["generated"] == theirs["generated"]  # the producer's figures
    # the consumer's curate reads synthesize through a link to the producer's directory
    # (its StageConfig: the ConfigMap mounted into its pods, kube/stage_config_map.py)
    curate = next(j for j in stage_jobs(cluster, namespace) if j["metadata"]["name"] == f"{consumer}-i1-curate")
    (volume,) = [v for v in curate["spec"]["template"]["spec"]["volumes"] if v["name"] == VOLUME_NAME]
    config = json.loads(cluster.get_json("configmap", volume["configMap"]["name"], "-n", namespace)["data"][CONFIG_KEY])
    assert config["reuseLinks"] == {f"/data/runs/{consumer}/i1/synthesize": f"/data/runs/{producer}/i1/synthesize"}
    # it said whom it waited for, and that it reused
    reasons = [e["reason"] for e in events_of(cluster, namespace, consumer)]
    assert "WaitingForStage" in reasons and "StageReused" in reasons
    assert get_run(cluster, namespace, consumer)["status"]["iterations"][0]["stages"]["synthesize"]["reusedFrom"]


def test_stage_cache_false_runs_everything(cluster, namespace, storage, operator_process):
    a = run_manifest("one", namespace, iterations=1, stageCache=True)
    cluster.apply(a)
    assert wait_phase(cluster, namespace, "one", ("Succeeded", "Failed"), timeout=240)["phase"] == "Succeeded"
    b = run_manifest("two", namespace, iterations=1, stageCache=False)
    cluster.apply(b)
    status = wait_phase(cluster, namespace, "two", ("Succeeded", "Failed"), timeout=240)
    assert status["phase"] == "Succeeded"
    assert len([j for j in stage_jobs(cluster, namespace, "two")]) == 3
    assert "cacheKey" not in json.dumps(status)
    # ...while the same spec with the cache on reuses all three of "one"'s stages: no Job at all
    cluster.apply(run_manifest("three", namespace, iterations=1, stageCache=True))
    status = wait_phase(cluster, namespace, "three", ("Succeeded", "Failed"), timeout=240)
    assert status["phase"] == "Succeeded" and stage_jobs(cluster, namespace, "three") == []
    assert {s["reusedFrom"] for s in status["iterations"][0]["stages"].values()} == {
        f"{namespace}/one/iteration-1/{s}" for s in ("synthesize", "curate", "train")}


def test_a_deleted_producer_leaves_the_stage_to_the_waiter(cluster, namespace, storage, operator_process):
    slow = {"synthesize": {"sheepdog.test/duration": "20s"}}
    low = run_manifest("low", namespace, iterations=1, extra_annotations=slow, stageCache=True, filter={"threshold": 5})
    cluster.apply(low)
    cluster.wait_for("low's synthesize Job", lambda: stage_jobs(cluster, namespace, "low"), timeout=120)
    high = run_manifest("high", namespace, iterations=1, extra_annotations=slow, stageCache=True,
                        filter={"threshold": 8})
    cluster.apply(high)
    cluster.wait_for("high waits for low's synthesize", lambda: "WaitingForStage" in [
        e["reason"] for e in events_of(cluster, namespace, "high")], timeout=120)
    cluster.kubectl("delete", "selfalignmentrun", "low", "-n", namespace, "--wait=true")
    # the producer is gone, its stage with it: high produces synthesize itself, reusing nothing
    status = wait_phase(cluster, namespace, "high", ("Succeeded", "Failed"), timeout=240)
    assert status["phase"] == "Succeeded", status
    assert all("reusedFrom" not in s for s in status["iterations"][0]["stages"].values())
    assert sorted(j["metadata"]["name"] for j in stage_jobs(cluster, namespace, "high")) == [
        f"high-i1-{s}" for s in ("curate", "synthesize", "train")]


def test_a_run_whose_data_goes_with_it_is_not_waited_for(cluster, namespace, storage, operator_process):
    # "doomed" deletes its data with the run (deleteDataOnDelete): its synthesize is never
    # offered, so "other" (the same key) produces its own at once instead of waiting for it
    slow = {"synthesize": {"sheepdog.test/duration": "8s"}}
    doomed = run_manifest("doomed", namespace, iterations=1, extra_annotations=slow, stageCache=True,
                          storage={"claimName": "sheepdog-data", "deleteDataOnDelete": True})
    cluster.apply(doomed)
    cluster.wait_for("doomed's synthesize Job", lambda: stage_jobs(cluster, namespace, "doomed"), timeout=120)
    cluster.apply(run_manifest("other", namespace, iterations=1, extra_annotations=slow, stageCache=True))
    for name in ("doomed", "other"):
        assert wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=240)["phase"] == "Succeeded"
    reasons = [e["reason"] for e in events_of(cluster, namespace, "other")]
    assert "WaitingForStage" not in reasons and "StageReused" not in reasons, reasons
    assert len(stage_jobs(cluster, namespace, "other")) == 3
