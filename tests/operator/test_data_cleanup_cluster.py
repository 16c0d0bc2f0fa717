"""A run's data after its deletion, on the real control plane (issue 25 item 7).

Synthesize is a kwok pod with a canned summary (conftest); curate runs for real on a
pod-executor node (`python -m sheepdog_jobs curate ...`, this machine's venv): it claims the
run directory for the run's uid (sheepdog_jobs.run_marker) and then fails for want of
synthesize output, which leaves a claimed directory on the run's volume, as any real run does.
The cleanup Job of spec.storage.deleteDataOnDelete inherits curate's node selector and
tolerations, so it runs on the executor too, against the same directory.

  - a new run of a deleted run's name refuses its directory (exit 3: no retry spent) and says why;
  - deleteDataOnDelete: the run holds the finalizer; deleted, it goes once the cleanup Job has
    removed its directory (Event DataDeleted);
  - a cleanup Job that cannot delete (the marker names another run) fails, and the run still
    goes, with a Warning Event DataNotDeleted, its directory untouched.
"""

from __future__ import annotations

import json

import pytest

from sheepdog.planner.data_cleanup_policy import FINALIZER
from tests.cluster.pod_executor import TOLERATION
from tests.operator.conftest import events_of, get_run, run_manifest, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

MARKER = ".sheepdog-run.json"


def manifest(name: str, namespace: str, label: dict, **storage) -> dict:
    curate = {"nodeSelector": label, "tolerations": [TOLERATION]}
    stages = {"synthesize": {"gpus": 1, "tensorParallel": 1}, "curate": curate, "train": {"gpus": 1}}
    return run_manifest(name, namespace, iterations=1, stages=stages, retries=0, evaluation={"enabled": False},
                        storage={"claimName": "sheepdog-data", **storage})


def failed_in_curate(cluster, namespace: str, name: str) -> dict:
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=300)
    assert status["phase"] == "Failed", status
    return status


def delete(cluster, namespace: str, name: str, timeout: float = 300) -> None:
    cluster.kubectl("delete", "selfalignmentrun", name, "-n", namespace, "--wait=false")
    cluster.wait_for(f"run {name} gone", lambda: cluster.kubectl(
        "get", "selfalignmentrun", name, "-n", namespace, check=False).returncode != 0, timeout=timeout)


def reasons(cluster, namespace: str, name: str) -> dict[str, str]:
    return {e["reason"]: e["message"] for e in events_of(cluster, namespace, name)}


def test_a_new_run_refuses_the_directory_of_a_deleted_run_of_its_name(cluster, namespace, storage, executor_node,
                                                                      operator_process):
    label, volume = executor_node
    name = "reused"
    cluster.apply(manifest(name, namespace, label))
    failed_in_curate(cluster, namespace, name)
    first_uid = get_run(cluster, namespace, name)["metadata"]["uid"]
    run_dir = volume / "runs" / name
    assert json.loads((run_dir / MARKER).read_text()) == {"run": name, "uid": first_uid}
    assert "finalizers" not in get_run(cluster, namespace, name)["metadata"]  # no deleteDataOnDelete
    delete(cluster, namespace, name)
    assert (run_dir / MARKER).exists()  # the data stays by default

    cluster.apply(manifest(name, namespace, label))
    status = failed_in_curate(cluster, namespace, name)
    assert "belongs to another run" in status["message"] and first_uid in status["message"], status
    [rec] = status["iterations"]
    assert rec["stages"]["curate"]["phase"] == "Failed"
    [job] = cluster.get_json("jobs", "-n", namespace, "-l", f"sheepdog.dev/run={name},sheepdog.dev/stage=curate")["items"]
    assert job["status"].get("failed") == 1, job["status"]  # exit 3: the Job failed at once
    assert json.loads((run_dir / MARKER).read_text())["uid"] == first_uid  # untouched


def test_delete_data_on_delete_removes_the_directory_before_the_run_goes(cluster, namespace, storage, executor_node,
                                                                         operator_process):
    label, volume = executor_node
    name = "tidy"
    cluster.apply(manifest(name, namespace, label, deleteDataOnDelete=True))
    cluster.wait_for("the finalizer", lambda: FINALIZER in (
        get_run(cluster, namespace, name)["metadata"].get("finalizers") or ()), timeout=60)
    failed_in_curate(cluster, namespace, name)
    uid = get_run(cluster, namespace, name)["metadata"]["uid"]
    run_dir = volume / "runs" / name
    (run_dir / "i1" / "model").mkdir(parents=True, exist_ok=True)
    (run_dir / "i1" / "model" / "weights.bin").write_bytes(b"\0" * 4096)
    other = volume / "runs" / "neighbour"
    other.mkdir(parents=True)
    (other / "kept.jsonl").write_text("{}\n")

    delete(cluster, namespace, name)
    assert not run_dir.exists()
    assert (other / "kept.jsonl").exists()  # only the run's own directory
    assert "DataDeleted" in reasons(cluster, namespace, name)
    jobs = cluster.get_json("jobs", "-n", namespace, "-l", f"sheepdog.dev/run={name}")["items"]
    cleanup = [j for j in jobs if j["metadata"]["labels"].get("sheepdog.dev/run-uid") == uid]
    assert [j["metadata"]["name"] for j in cleanup] == [f"{name}-delete-data-{uid[:8]}"]
    pod = cleanup[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False


def test_a_cleanup_that_cannot_delete_lets_the_run_go_and_says_the_data_stays(cluster, namespace, storage,
                                                                              executor_node, operator_process):
    label, volume = executor_node
    name = "contested"
    cluster.apply(manifest(name, namespace, label, deleteDataOnDelete=True))
    failed_in_curate(cluster, namespace, name)
    run_dir = volume / "runs" / name
    taken = {"run": "someone-else", "uid": "00000000-0000-4000-8000-000000000000"}
    (run_dir / MARKER).write_text(json.dumps(taken))  # another run took the directory over

    delete(cluster, namespace, name)
    assert json.loads((run_dir / MARKER).read_text()) == taken
    events = reasons(cluster, namespace, name)
    assert "DataDeleted" not in events and f"runs/{name} stays" in events.get("DataNotDeleted", ""), events
