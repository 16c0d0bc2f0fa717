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
    # iteration 2 trains to a lower loss than iteration 1, so the table shows both records
    # (kwok plays the pods: each Job's termination message is the summary given here)
    summaries = {
        "i2.train": {"sheepdog.test/termination-message":
                     '{"stage":"train","ok":true,"trainLoss":0.75,"evalLoss":0.9,"samples":9,"iteration":2}'},
        "export": {"sheepdog.test/termination-message":
                   '{"stage":"export","ok":true,"to":"s3://models/r","files":5,"bytes":1000,"iteration":2}'},
    }
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": namespace},
                   "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}})
    cluster.apply(run_manifest(name, namespace, iterations=2, extra_annotations=summaries,
                               evaluation={"enabled": True, "suites": ["ifeval"]},
                               export={"to": "s3://models/r", "credentialsSecretRef": {"name": "s3-creds"}}))
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert status["phase"] == "Succeeded" and status["reason"] == "Completed", status

    # the export ran once, as a Job of the best (last) iteration, before the run succeeded
    exports = [j for j in stage_jobs(cluster, namespace, name) if j["metadata"]["labels"]["sheepdog.dev/stage"] == "export"]
    assert [j["metadata"]["name"] for j in exports] == [f"{name}-i2-export"]
    container = exports[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "-m", "sheepdog.export"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    export = status["iterations"][-1]["stages"]["export"]
    assert export["phase"] == "Succeeded" and export["summary"] == {"to": "s3://models/r", "files": 5, "bytes": 1000}
    reasons = [e["reason"] for e in events_of(cluster, namespace, name)]
    assert reasons.index("Exporting") < reasons.index("Exported") < reasons.index("Completed")

    png = tmp_path / "report.png"
    proc = subprocess.run([sys.executable, "-m", "sheepdog.cli", "report", name, "-n", namespace, "--plot", str(png)],
                          capture_output=True, text=True, env=cluster.full_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run {name}: Succeeded (Completed)"
    table = {row[0]: row for row in (line.split() for line in lines) if row and row[0].isdigit()}
    assert sorted(table) == ["0", "1", "2"]  # iteration 0: M_0's evaluation
    assert table["1"][1:9] == ["20", "18", "1", "9", "50.0%", "7.5", "8.25", "1.25"]
    assert table["2"][8] == "0.75" and table["2"][9].startswith("ifeval.promptStrict=0.25")
    assert f"best: iteration 2, model runs/{name}/i2/model" in proc.stdout
    assert lines[-1] == f"plot: {png}"
    assert png_size(png) == (1100, 750)

    missing = subprocess.run([sys.executable, "-m", "sheepdog.cli", "report", "nosuchrun", "-n", namespace,
                              "--no-plot"], capture_output=True, text=True, env=cluster.full_env(), timeout=120)
    assert missing.returncode == 2 and f"no SelfAlignmentRun nosuchrun in namespace {namespace}" in missing.stderr
