"""The GPU smoke kit (bench/gpu_smoke, issue 22 item 9): packed under 64 MiB, and its script runs
with torch alone (transformers, peft, vLLM, DeepSpeed and pydantic made unimportable), from the
kit's own directory, in its --device cpu mode; the JSON it prints holds the figures docs/gpu-plan.md
reads, and sheepdog plan's activation figures from the capacity modules the kit carries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("transformers", "peft", "vllm", "deepspeed", "pydantic", "sheepdog_jobs")
# A bare machine's Python: the packages above cannot be imported, whatever this venv holds.
RUN = ("import runpy, sys; sys.modules.update({name: None for name in %r}); "
       "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')") % (BLOCKED,)


@pytest.mark.timeout(600)
def test_the_kit_runs_with_torch_alone_on_cpu(tmp_path):
    kit = tmp_path / "kit"
    subprocess.run([str(REPO / "bench" / "gpu_smoke" / "pack.sh"), str(kit)], check=True, capture_output=True,
                   timeout=60)
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    assert 0 < size < 64 * 2**20
    args = ["--device", "cpu", "--cutoff", "32", "--steps", "2", "--batch", "2", "--prompt-tokens", "8",
            "--decode-tokens", "4"]
    proc = subprocess.run([sys.executable, "-c", RUN, str(kit / "smoke.py"), *args], capture_output=True,
                          text=True, timeout=540, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["shape"] == "smollm2-135m" and result["dtype"] == "float32"
    runs = {(r["layers"], r["gradientCheckpointing"]): r for r in result["train"]}
    assert set(runs) == {(2, False), (4, False), (2, True), (4, True)}
    for r in runs.values():
        assert r["tokensPerSecond"] > 0 and r["stepSeconds"] > 0 and r["peakGiB"] > 0
        assert r["mfu"] is None  # no peak FLOP/s for a CPU
        assert r["loraParams"] > 0 and r["frozenParams"] > r["loraParams"]
    # two more layers keep more for backward; checkpointing keeps far less of it
    per = result["perLayer"]
    assert per["withoutCheckpointing"]["savedForBackwardGiB"] > 0
    assert per["withCheckpointing"]["savedForBackwardGiB"] < per["withoutCheckpointing"]["savedForBackwardGiB"]
    assert result["planned"]["activationGiBPerLayer"] > 0, result["planned"]  # the kit's capacity modules
    gen = result["generate"]
    assert gen["prefillTokensPerSecond"] > 0 and gen["decodeTokensPerSecond"] > 0 and gen["batch"] == 2


def test_make_bench_does_not_run_the_gpu_smoke():
    """make bench runs bench/*.py; the smoke lives in bench/gpu_smoke/ and runs on its own."""
    assert not list((REPO / "bench").glob("gpu_smoke*.py"))
    assert "for b in bench/*.py" in (REPO / "Makefile").read_text()
