#!/usr/bin/env bash
# Prepare bench/gpu_smoke_kit/ (git-ignored; under 64 MiB) for bench/gpu_smoke.sh on a GPU machine
# that has torch, transformers, peft and accelerate but no DeepSpeed, no vLLM and no network:
#   wheels/  DeepSpeed's wheel (it ships as an sdist: built here, without its CUDA ops, which the
#            train stage does not use) and the packages DeepSpeed and sheepdog add to that set
#            (binary ones for CPython 3.10-3.13, manylinux x86_64);
#   model/   the tiny model's config, generation config and tokenizer, no weights (the smoke makes
#            random weights of the same architecture there).
#
#   bench/gpu_smoke_prepare.sh [KIT_DIR]     (after `make` has set up .venv and the tiny model)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=${1:-$ROOT/bench/gpu_smoke_kit}
PIP=("$ROOT/.venv/bin/python" -m pip --disable-pip-version-check)
MODEL=${SHEEPDOG_TINY_MODEL:-$("$ROOT/.venv/bin/python" -c 'from sheepdog_jobs.modelprep import default_cache_dir, prepare_model; print(prepare_model(default_cache_dir())["model"])')}

rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/model"
# The versions this repository's venv runs (requirements/jobs.txt pins DeepSpeed).
version() { "$ROOT/.venv/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
"${PIP[@]}" wheel -q --no-deps --no-build-isolation "deepspeed==$(version deepspeed)" -w "$KIT/wheels"
PURE=(hjson py-cpuinfo einops annotated-types typing-inspection typing-extensions pydantic)
for p in "${PURE[@]}"; do
  "${PIP[@]}" download -q --no-deps --only-binary=:all: "$p==$(version "$p")" -d "$KIT/wheels"
done
BINARY=(pydantic-core msgpack psutil ninja)
for py in 3.10 3.11 3.12 3.13; do
  for p in "${BINARY[@]}"; do
    "${PIP[@]}" download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64 \
      --python-version "$py" "$p==$(version "$p")" -d "$KIT/wheels"
  done
done
for f in config.json generation_config.json tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
  [ -f "$MODEL/$f" ] && cp "$MODEL/$f" "$KIT/model/"
done
size=$(du -sm "$KIT" | cut -f1)
ls -la "$KIT/wheels" "$KIT/model" >&2
echo "gpu smoke kit: $KIT (${size} MiB)" >&2
[ "$size" -le 64 ] || { echo "the kit is over 64 MiB" >&2; exit 1; }
