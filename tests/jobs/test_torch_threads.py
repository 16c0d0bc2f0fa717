"""SHEEPDOG_TORCH_THREADS caps a stage program's threads, OpenMP's pool included (vLLM's CPU
kernels size theirs from OMP_NUM_THREADS, not from torch.set_num_threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os, sys
from sheepdog_jobs.stages.common import configure_torch_threads
configure_torch_threads()
import torch
print(json.dumps({"omp": os.environ.get("OMP_NUM_THREADS"), "torch": torch.get_num_threads()}))
"""


def probe(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SHEEPDOG_TORCH_THREADS")}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env={**base, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_cap_reaches_openmp_before_torch_loads():
    assert probe(SHEEPDOG_TORCH_THREADS="1") == {"omp": "1", "torch": 1}


def test_a_users_own_openmp_setting_wins_and_no_cap_changes_nothing():
    assert probe(SHEEPDOG_TORCH_THREADS="1", OMP_NUM_THREADS="2")["omp"] == "2"
    assert probe()["omp"] is None
