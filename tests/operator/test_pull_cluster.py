"""`sheepdog pull` on the real control plane: the CLI reads the run from the API server, creates
the short-lived pod that mounts the run's claim, the scheduler binds it to a pod-executor node
(tests/cluster/pod_executor.py runs its shell script on the claim's directory), the CLI reads
the archive through the API server's pods/log proxy, unpacks it and deletes the pod."""

from __future__ import annotations

import os

import pytest

from sheepdog.cli import main
from tests.cluster.fixture import PodExecutorProcess
from tests.cluster.pod_executor import TOLERATION
from tests.operator.conftest import run_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def test_pull_copies_the_runs_directory_off_the_claim(cluster, crd, namespace, storage, tmp_path, capsys):
    volume_root = tmp_path / "volumes"
    run_dir = volume_root / "sheepdog-data" / "runs" / "pulled"
    files = {"report.json": b'{"run": "pulled"}', "i1/curate/kept.jsonl": b'{"instruction": "x"}\n' * 50,
             "i1/model/model.safetensors": os.urandom(2048), "i1/synthesize.log": b"done\n"}
    for rel, data in files.items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_bytes(data)
    label = {"sheepdog.test/pull": namespace}
    executor = PodExecutorProcess(cluster, f"pull-{namespace}", volume_root, labels=label)
    try:
        # the pull pod goes where the run's curate stage would: the executor's node
        cluster.apply(run_manifest("pulled", namespace, iterations=1, stages={
            "curate": {"nodeSelector": label, "tolerations": [TOLERATION]}}))
        base = ["pull", "pulled", "-n", namespace, "--kubeconfig", str(cluster.kubeconfig), "--timeout", "300"]
        assert main([*base, "--to", str(tmp_path / "all")]) == 0, capsys.readouterr().err
        assert f"pulled {namespace}/pulled: 4 files into {tmp_path / 'all'}" in capsys.readouterr().out
        for rel, data in files.items():
            assert (tmp_path / "all" / rel).read_bytes() == data, rel

        assert main([*base, "--to", str(tmp_path / "light"), "--no-models"]) == 0, capsys.readouterr().err
        assert not (tmp_path / "light" / "i1" / "model").exists()
        assert (tmp_path / "light" / "i1" / "curate" / "kept.jsonl").read_bytes() == files["i1/curate/kept.jsonl"]
        # the pods are gone once the copies are made
        pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/component=pull")["items"]
        assert [p for p in pods if not p["metadata"].get("deletionTimestamp")] == []
    finally:
        executor.stop()


def test_pull_of_a_missing_run_says_so(cluster, crd, namespace, capsys):
    assert main(["pull", "nope", "-n", namespace, "--kubeconfig", str(cluster.kubeconfig), "--to", "x"]) == 2
    assert f"pull: no SelfAlignmentRun nope in namespace {namespace}" in capsys.readouterr().err
