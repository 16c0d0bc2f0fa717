"""A running train's progress reaches the run's status through its pod's log: the operator GETs
the tail of rank 0's log through the API server's pods/log proxy, which reaches the node's
kubelet (here the pod executor's log endpoint), and records stages.train.progress.

Synthesize and curate are kwok pods with canned summaries (conftest). The train pod runs on a
pod-executor node with its own command, `python -m sheepdog_jobs train ...`, where the run's
podTemplate puts a stand-in sheepdog_jobs first on PYTHONPATH (fake_train/, copied onto the run's
volume and named by its path in the pod, as a user's file would be: the pod executor rewrites
a value under any of the pod's mounts, /tmp included, so the repository's own path would break
in a clone under /tmp): it prints progress
lines up to step 3 of 6, then waits for a file the test writes, so no training is needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sheepdog.progress import parse_progress_log
from sheepdog.stage_config import VOLUME_MOUNT
from tests.cluster.pod_executor import TOLERATION
from tests.operator.conftest import _OPERATORS, OperatorProcess, get_run, run_manifest, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

FAKE_TRAIN = Path(__file__).resolve().parent / "fake_train"


@pytest.fixture
def quick_operator(request, cluster, crd, namespace, tmp_path):
    """The operator with a 2 s resync (the last --resync-seconds wins): it reads a running
    train's log about every 2 s instead of 10, and the test waits that much less."""
    op = OperatorProcess(cluster, [namespace], tmp_path / "operator.log", extra=("--resync-seconds", "2"))
    request.node.stash[_OPERATORS] = [op]  # its log goes into a failure's report
    op.start()
    try:
        yield op
    finally:
        op.stop()


def train_record(cluster, namespace: str, name: str) -> dict:
    status = get_run(cluster, namespace, name).get("status") or {}
    for rec in status.get("iterations") or ():
        if rec.get("iteration") == 1:
            return (rec.get("stages") or {}).get("train") or {}
    return {}


def test_the_status_shows_the_running_trains_step_from_its_pod_log(cluster, namespace, storage, crd,
                                                                   executor_node, quick_operator):
    label, claim = executor_node
    name = "progress"
    shutil.copytree(FAKE_TRAIN, claim / "fake_train", ignore=shutil.ignore_patterns("__pycache__"))
    train = {"gpus": 0, "nodeSelector": label, "tolerations": [TOLERATION],
             "podTemplate": {"env": [{"name": "PYTHONPATH", "value": f"{VOLUME_MOUNT}/fake_train"}]}}
    stages = {"synthesize": {"gpus": 1, "tensorParallel": 1}, "curate": {}, "train": train}
    cluster.apply(run_manifest(name, namespace, iterations=1, stages=stages, retries=0,
                               evaluation={"enabled": False}))

    # the operator reads the log of the running pod, which waits at step 3 of 6
    running = cluster.wait_for(
        "stages.train.progress at step 3",
        lambda: (lambda t: t if (t.get("progress") or {}).get("step") == 3 else None)(
            train_record(cluster, namespace, name)),
        timeout=300)
    assert running["phase"] == "Running", running
    progress = running["progress"]
    assert {k: progress[k] for k in ("step", "totalSteps", "epoch", "etaSeconds")} == \
        {"step": 3, "totalSteps": 6, "epoch": 0.5, "etaSeconds": 30.0}
    assert progress["observedAt"].endswith("Z")
    # `kubectl logs` takes the same way (pods/log -> the node's kubelet endpoint)
    [pod] = cluster.get_json("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={name}-i1-train")["items"]
    tail = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], "--tail=3").stdout
    assert parse_progress_log(tail)["step"] == 3 and len(tail.splitlines()) == 3, tail

    (claim / "runs" / name / "i1" / "train" / "finish").touch()
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert status["phase"] == "Succeeded", status
    [rec] = status["iterations"]
    done = rec["stages"]["train"]
    # its summary reports the end; the progress of a finished train is gone
    assert done["phase"] == "Succeeded" and "progress" not in done, done
    assert rec["trainLoss"] == 0.5
