"""The light install `pip install "sheepdog[cli]"`: the cluster commands (pull, report, retry)
import nothing outside the core and the extra's packages (urllib3, matplotlib) — no Kopf, no
Prometheus client, no `kubernetes` package (kube/transport.py is the client), no torch. Checked
in a fresh interpreter that refuses to import the rest."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "operator" / "pyproject.toml"
REFUSED = ("kopf", "kubernetes", "prometheus_client", "torch", "transformers", "vllm", "sheepdog_jobs", "mlflow", "wandb")

PROBE = f"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {REFUSED!r}:
            raise ImportError("not in sheepdog[cli]: " + name)
sys.meta_path.insert(0, Refuse())
from sheepdog.cli import build_parser, cmd_pull, cmd_report, cmd_retry
import sheepdog.kube.client, sheepdog.kube.pull, sheepdog.kube.retry_request
import sheepdog.local.report, sheepdog.reporting.plot
build_parser().parse_args(["pull", "r", "-n", "ns", "--to", "d"])
print("ok")
"""


def test_the_cli_extra_names_what_the_cluster_commands_need():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    names = {spec.split(">")[0].split("=")[0] for spec in extras["cli"]}
    assert names == {"urllib3", "matplotlib"}


def test_the_cluster_commands_import_nothing_heavier():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
