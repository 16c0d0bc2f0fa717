#!/usr/bin/env bash
# The GPU check of issue 12, for the day a GPU is at hand (docs/benchmarks.md, "GPU smoke"):
# the train stage (DeepSpeed ZeRO-3, bf16, LoRA) with one rank per GPU, then generation with the
# transformers engine on synthesize's requests; the last stdout line is one JSON object:
# samplesPerSecond, tokensPerSecond, peakGpuMemoryGiB, worldSize (bench/gpu_smoke.py).
#
# Needs: python with torch (CUDA), transformers, peft, accelerate; no network, no vLLM, no
# DeepSpeed: DeepSpeed and the few packages it adds come from bench/gpu_smoke_kit/wheels (made
# by bench/gpu_smoke_prepare.sh, which travels with the working tree), installed into a venv
# that sees the machine's packages. Under 8 minutes on one GPU.
#
#   bench/gpu_smoke.sh [--cpu] [gpu_smoke.py options]     PYTHON=python3 by default
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=${SHEEPDOG_SMOKE_KIT:-$ROOT/bench/gpu_smoke_kit}
PYTHON=${PYTHON:-python3}
[ -d "$KIT/wheels" ] || { echo "no $KIT/wheels: run bench/gpu_smoke_prepare.sh where there is a network" >&2; exit 2; }
VENV=${SHEEPDOG_SMOKE_VENV:-${TMPDIR:-/tmp}/sheepdog-gpu-smoke-venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
# Only what the machine lacks is installed; nothing is fetched.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index --find-links "$KIT/wheels" deepspeed pydantic >&2
export PYTHONPATH="$ROOT/operator:$ROOT/jobs${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$VENV/bin/python" "$ROOT/bench/gpu_smoke.py" --kit "$KIT" "$@"
