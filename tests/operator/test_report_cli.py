"""A cluster run to its end on the real control plane: its export Job (spec.export) and
`sheepdog report RUN -n NAMESPACE` (its status read from the API server, printed as the local
table and drawn as report.png)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.operator.conftest import events_of, run_manifest, stage_jobs, wait_phase
from tests.reporting.test_plot import png_size

pytestmark = pytest.mark.cluster


def test_cluster_run_exports_its_best_model_and_reports(cluster, namespace, storage,
                                                                        operator_process, tmp_path):
    name = "reported"
    # one iteration (and M_0's evaluation), as small as shows both; kwok plays the pods, each
    # Job's termination message is the summary given here or in run_manifest
    summaries = {
        "i1.train": {"sheepdog.test/termination-message":
                     '{"stage":"train","ok":true,"trainLoss":0.75,"evalLoss":0.9,"samples":9,"iteration":1}'},
        "export": {"sheepdog.test/termination-message":
                   '{"stage":"export","ok":true,"to":"s3://models/r","files":5,"bytes":1000,"iteration":1}'},
    }
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": namespace},
                   "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}})
    cluster.apply(run_manifest(name, namespace, iterations=1, extra_annotations=summaries,
                               evaluation={"enabled": True, "suites": ["ifeval-smoke"]},
                               export={"to": "s3://models/r", "credentialsSecretRef": {"name": "s3-creds"}}))
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert status["phase"] == "Succeeded" and status["reason"] == "Completed", status

    # the export ran once, as a Job of the best iteration, before the run succeeded
    exports = [j for j in stage_jobs(cluster, namespace, name) if j["metadata"]["labels"]["sheepdog.dev/stage"] == "export"]
    assert [j["metadata"]["name"] for j in exports] == [f"{name}-i1-export"]
    container = exports[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "-m", "sheepdog.export"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    export = status["iterations"][-1]["stages"]["export"]
    assert export["phase"] == "Succeeded" and export["summary"] == {"to": "s3://models/r", "files": 5, "bytes": 1000}
    reasons = [e["reason"] for e in events_of(cluster, namespace, name)]
    # (events of one second have no order to test: the planner's tests check Exporting -> Exported -> Completed)
    assert [reasons.count(r) for r in ("Exporting", "Exported", "Completed")] == [1, 1, 1]

    png = tmp_path / "report.png"
    proc = subprocess.run([sys.executable, "-m", "sheepdog.cli", "report", name, "-n", namespace, "--plot", str(png)],
                          capture_output=True, text=True, env=cluster.full_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run {name}: Succeeded (Completed)"
    table = {row[0]: row for row in (line.split() for line in lines) if row and row[0].isdigit()}
    assert sorted(table) == ["0", "1"]  # iteration 0: M_0's evaluation
    assert table["1"][1:9] == ["20", "18", "1", "9", "50.0%", "7.5", "8.25", "0.75"]
    assert table["1"][9] == "ifeval-smoke.promptStrict=0.25(+0)"  # and its gain over M_0
    assert table["0"][1:9] == ["-"] * 8 and table["0"][9].startswith("ifeval-smoke.promptStrict=0.25")
    assert f"last iteration: 1, model runs/{name}/i1/model" in proc.stdout
    assert lines[-1] == f"plot: {png}"
    assert png_size(png) == (1100, 750)

    missing = subprocess.run([sys.executable, "-m", "sheepdog.cli", "report", "nosuchrun", "-n", namespace,
                              "--no-plot"], capture_output=True, text=True, env=cluster.full_env(), timeout=120)
    assert missing.returncode == 2 and f"no SelfAlignmentRun nosuchrun in namespace {namespace}" in missing.stderr
