"""A SelfAlignmentSweep against the real control plane (kwok nodes): the operator creates one
child run per cell, owned by the sweep and at most maxParallelRuns unfinished at a time; the
sweep's status holds every cell's run, phase and kept per iteration; `sheepdog report SWEEP`
prints the table; an operator SIGKILLed mid-sweep and started again loses and duplicates
nothing; an invalid cell refuses the whole sweep."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.operator.conftest import events_of, run_manifest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SWEEP_CRD = ROOT / "crds" / "sheepdog.dev_selfalignmentsweeps.yaml"


@pytest.fixture
def sweep_crd(cluster, crd):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(SWEEP_CRD))
    cluster.wait_established("selfalignmentsweeps.sheepdog.dev")
    cluster.wait_for("SelfAlignmentSweep discovery",
                     lambda: cluster.kubectl("get", "sweep", "-A", check=False).returncode == 0, timeout=30)
    return SWEEP_CRD


def sweep_manifest(name: str, namespace: str, values, iterations: int = 2, max_parallel: int = 2) -> dict:
    run = run_manifest("template", namespace, iterations=iterations,
                       extra_annotations={"*": {"sheepdog.test/duration": "2s"}})
    run["spec"]["stageCache"] = True  # the tests' runs turn it off; a sweep's cells share through it
    return {
        "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentSweep",
        "metadata": {"name": name, "namespace": namespace, "annotations": run["metadata"]["annotations"]},
        "spec": {"template": run["spec"], "maxParallelRuns": max_parallel,
                 "axes": [{"field": "filter.threshold", "name": "c", "values": values}]},
    }


def children(cluster, namespace: str, sweep: str) -> list[dict]:
    return cluster.get_json("selfalignmentruns", "-n", namespace, "-l", f"sheepdog.dev/sweep={sweep}")["items"]


def get_sweep(cluster, namespace: str, name: str) -> dict:
    return cluster.get_json("selfalignmentsweep", name, "-n", namespace)


def test_sweep_fans_out_survives_a_sigkill_and_reports(cluster, namespace, storage, sweep_crd, operator_process,
                                                       capsys):
    name = "thr"
    cluster.apply(sweep_manifest(name, namespace, [-1, 5, 8]))
    uid = get_sweep(cluster, namespace, name)["metadata"]["uid"]
    # maxParallelRuns 2: two children first, the third only once one has finished
    first = cluster.wait_for("two child runs", lambda: (lambda c: c if len(c) >= 2 else None)(
        children(cluster, namespace, name)), timeout=60, interval=0.2)
    assert len(first) == 2, [c["metadata"]["name"] for c in first]
    assert sorted(c["metadata"]["name"] for c in first) == ["thr-c-5", "thr-c-m1"]
    before = {c["metadata"]["name"]: c["metadata"]["uid"] for c in first}
    # mid-sweep: the first children's Jobs exist and the third child does not yet
    cluster.wait_for("a stage Job of a child", lambda: cluster.get_json(
        "jobs", "-n", namespace, "-l", "sheepdog.dev/run=thr-c-m1")["items"], timeout=60, interval=0.2)
    operator_process.kill()  # SIGKILL: no cleanup at all
    time.sleep(3)
    operator_process.start()

    def finished():
        st = get_sweep(cluster, namespace, name).get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    status = cluster.wait_for("the sweep to finish", finished, timeout=300, interval=1)
    assert status["phase"] == "Succeeded", status
    kids = children(cluster, namespace, name)
    # nothing duplicated, nothing lost: three children, the first two the same objects as before
    assert sorted(c["metadata"]["name"] for c in kids) == ["thr-c-5", "thr-c-8", "thr-c-m1"]
    for c in kids:
        [ref] = c["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("SelfAlignmentSweep", name, uid, True)
        assert c["status"]["phase"] == "Succeeded"
        if c["metadata"]["name"] in before:
            assert c["metadata"]["uid"] == before[c["metadata"]["name"]]
    assert [c["spec"]["filter"]["threshold"] for c in sorted(kids, key=lambda c: c["metadata"]["name"])] == [5, 8, -1]
    # the sweep's status: per cell its run, phase and kept per iteration (kwok's curate keeps 9)
    assert [(c["name"], c["run"], c["phase"]) for c in status["cells"]] == [
        ("c-m1", "thr-c-m1", "Succeeded"), ("c-5", "thr-c-5", "Succeeded"), ("c-8", "thr-c-8", "Succeeded")]
    assert all([it["kept"] for it in c["iterations"] if it["iteration"] >= 1] == [9, 9] for c in status["cells"])
    assert (status["progress"], status["runs"], status["failed"]) == ("3/3", 3, 0)
    reasons = [e["reason"] for e in events_of_sweep(cluster, namespace, name)]
    assert reasons.count("RunCreated") <= 3 and reasons.count("SweepSucceeded") == 1, reasons
    # every child's stage Jobs once each; iteration 1's synthesize (the same in every cell: the
    # cells differ from curate on) ran in one child only, the other two reused it
    synthesize_i1 = []
    for c in kids:
        jobs = cluster.get_json("jobs", "-n", namespace, "-l", f"sheepdog.dev/run={c['metadata']['name']}")["items"]
        job_names = [j["metadata"]["name"] for j in jobs]
        assert len(job_names) == len(set(job_names))
        synthesize_i1 += [n for n in job_names if n.endswith("-i1-synthesize")]
    assert len(synthesize_i1) == 1, synthesize_i1
    producer = synthesize_i1[0].removesuffix("-i1-synthesize")
    reused = {c["name"]: c.get("reused", []) for c in status["cells"]}
    assert sorted(len(r) for r in reused.values()) == [0, 1, 1], reused
    for cell, items in reused.items():
        for item in items:
            assert item == {"iteration": 1, "stage": "synthesize",
                            "from": f"{namespace}/{producer}/iteration-1/synthesize"}, item
    assert status["reusedStages"] == 2 and status["savedGpuSeconds"] > 0, status
    assert "Traceback" not in operator_process.log()

    # kubectl get sweep: the printer columns
    out = cluster.kubectl("get", "sweep", name, "-n", namespace).stdout
    assert "Succeeded" in out and "3/3" in out

    # sheepdog report SWEEP -n NS: the table from the sweep's status
    from sheepdog.cli import main

    capsys.readouterr()
    code = main(["report", name, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig), "--no-plot"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("cell"))
    assert "i1 kept" in header and "i2 kept" in header
    assert [line.split()[0] for line in lines if line.startswith("c-")] == ["c-m1", "c-5", "c-8"]


def events_of_sweep(cluster, namespace: str, name: str) -> list[dict]:
    return cluster.get_json("events", "-n", namespace, "--field-selector",
                            f"involvedObject.name={name},involvedObject.kind=SelfAlignmentSweep")["items"]


def test_an_invalid_cell_refuses_the_sweep(cluster, namespace, storage, sweep_crd, operator_process):
    name = "bad"
    cluster.apply(sweep_manifest(name, namespace, [5, 42]))

    def refused():
        st = get_sweep(cluster, namespace, name).get("status") or {}
        return st if st.get("phase") == "Invalid" else None

    status = cluster.wait_for("the sweep refused", refused, timeout=60, interval=0.5)
    assert "cell c-42 (filter.threshold=42): spec.filter.threshold: must be between -1 and 10 (got 42)" in status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Invalid"] == "True"
    assert children(cluster, namespace, name) == []
    warnings = [e for e in events_of_sweep(cluster, namespace, name) if e["reason"] == "InvalidSweep"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    # fixed: the children come
    cluster.kubectl("patch", "selfalignmentsweep", name, "-n", namespace, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/spec/axes/0/values", "value": [5, 8]}]))
    cluster.wait_for("two children", lambda: len(children(cluster, namespace, name)) == 2, timeout=60)
