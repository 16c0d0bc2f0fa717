#!/usr/bin/env bash
# The GPU smoke kit (issue 22 item 9): everything bench/gpu_smoke/smoke.py needs besides torch,
# in one directory under 64 MiB (about 0.1 MiB: no wheels, no weights): the script, the train
# stage's MFU arithmetic (jobs/sheepdog_jobs/training/mfu.py) and sheepdog plan's memory model
# (operator/sheepdog/capacity/{shape,memory}.py, under a package that imports nothing else).
# On the GPU machine, with its own Python and no network:
#
#   python3 KIT/smoke.py            # prints one JSON object (docs/gpu-plan.md, "GPU smoke")
#
#   bench/gpu_smoke/pack.sh [KIT_DIR]     (default bench/gpu_smoke_kit, git-ignored)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIT=${1:-$ROOT/bench/gpu_smoke_kit}
rm -rf "$KIT"
mkdir -p "$KIT/sheepdog/capacity"
cp "$ROOT/bench/gpu_smoke/smoke.py" "$ROOT/jobs/sheepdog_jobs/training/mfu.py" "$KIT/"
cp "$ROOT/operator/sheepdog/capacity/shape.py" "$ROOT/operator/sheepdog/capacity/memory.py" "$KIT/sheepdog/capacity/"
# The repository's sheepdog/capacity/__init__.py imports the planner (pydantic, the run spec):
# the kit's imports only the two modules the smoke reads.
printf '"""sheepdog.capacity in the GPU smoke kit: shape and memory only."""\n' > "$KIT/sheepdog/capacity/__init__.py"
printf '"""sheepdog, as much as the GPU smoke kit carries."""\n' > "$KIT/sheepdog/__init__.py"
size=$(du -sk "$KIT" | cut -f1)
echo "gpu smoke kit: $KIT (${size} KiB)" >&2
[ "$size" -le $((64 * 1024)) ] || { echo "the kit is over 64 MiB" >&2; exit 1; }
