"""Benchmark: what the stage cache saves a sweep. The local threshold sweep
(examples/sweeps/quickstart-threshold.yaml: C in -1, 2.5, 3, one iteration, the tiny model) run
twice, side by side in one invocation: once with its cells sharing one stage cache
(`sheepdog sweep`, the default) and once without (`--no-stage-cache`).

    .venv/bin/python bench/sweep_sharing.py            # the example as it is (an hour or more on 2 cores)
    .venv/bin/python bench/sweep_sharing.py --quick    # test size: tests/local/test_sweep_model.py's cut

What is measured: CPU seconds (user + system) of each `sheepdog sweep` and every process it
started (the stage programs), from the kernel's accounting of that finished child (os.wait4's
rusage, which includes its reaped descendants), so other load on a shared machine matters
little; wall seconds (and their ratio) are reported too. The two sweeps run at the same time (halving the wall
time; each is charged only its own processes), each in a fresh workdir with the tiny model
linked in, cells one after another (--parallel 1), so the two differ only in the cache; each
stage with one intra-op thread (SHEEPDOG_TORCH_THREADS=1, as in the tests). Also reported: how many synthesize stages each ran (stage logs) and each cell's kept
count, which must be the same with and without sharing (the same seed, the same settings).

The LAST line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "examples" / "sweeps" / "quickstart-threshold.yaml"
MODEL = "models/smollm2-135m-instruct"


def model_dir() -> Path:
    cache = Path(os.environ.get("SHEEPDOG_CACHE") or Path.home() / ".cache" / "sheepdog")
    path = cache / "models" / "smollm2-135m-instruct"
    if not (path / "config.json").exists():
        sys.exit(f"the tiny model is not at {path}: run `make model` first")
    return path


def quick(doc: dict) -> dict:
    """The example cut to test size: 12 instructions, shorter generations, one epoch, no
    evaluation, the transformers engine (vLLM's CPU start-up dominates at this size)."""
    template = doc["spec"]["template"]
    template["synthesis"].update({"dataSize": 12, "maxTokens": 128, "maxRequests": 16})
    template["training"].update({"epochs": 1, "cutoffLength": 256})
    template["evaluation"] = {"enabled": False}
    template["engine"] = "transformers"
    return doc


def sweep_file(tmp: Path, is_quick: bool) -> Path:
    doc = yaml.safe_load(SWEEP.read_text())
    if is_quick:
        doc = quick(doc)
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start(sweep: Path, workdir: Path, shared: bool) -> tuple[subprocess.Popen, float]:
    (workdir / "models").mkdir(parents=True)
    (workdir / MODEL).symlink_to(model_dir())
    cmd = [sys.executable, "-m", "sheepdog.cli", "sweep", str(sweep), "--workdir", str(workdir), "--no-plot"]
    if not shared:
        cmd.append("--no-stage-cache")
    log = open(workdir / "sweep.out", "w")
    # one intra-op thread per stage, as the tests run them: two OpenMP threads on an
    # oversubscribed CPU spin-wait for each other, and that spinning would count as work
    env = {**os.environ, "SHEEPDOG_TORCH_THREADS": os.environ.get("SHEEPDOG_TORCH_THREADS", "1")}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                            start_new_session=True), time.monotonic()


def finish(proc: subprocess.Popen, started: float, workdir: Path, shared: bool) -> dict:
    _, code, usage = os.wait4(proc.pid, 0)  # this sweep's processes only, its stages included
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(code)
    if proc.returncode != 0:
        sys.exit(f"the {'shared' if shared else 'unshared'} sweep failed ({proc.returncode}):\n"
                 + (workdir / "sweep.out").read_text()[-3000:])
    doc = json.loads((workdir / "sweep.json").read_text())
    synthesized = sum(1 for cell in doc["cells"] if (workdir / cell["run"] / "i1" / "synthesize.log").exists()
                      and not any(r["stage"] == "synthesize" for r in cell["reused"]))
    return {
        "shared": shared,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "wall_seconds": round(wall, 1),
        "synthesize_runs": synthesized,
        "reused_stages": doc["reusedStages"],
        "kept": {cell["name"]: (cell["iterations"][-1].get("kept") if cell["iterations"] else None)
                 for cell in doc["cells"]},
        "table": (workdir / "table.txt").read_text(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the test-sized sweep (see quick())")
    p.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (default: a temporary directory)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp_name:
        tmp = Path(args.keep) if args.keep else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        sweep = sweep_file(tmp, args.quick)
        running = [(start(sweep, tmp / name, shared), tmp / name, shared)
                   for name, shared in (("shared", True), ("unshared", False))]
        results = [finish(proc, started, workdir, shared) for (proc, started), workdir, shared in running]
    shared, unshared = results
    print(f"{'':<10}{'CPU s':>10}{'wall s':>10}{'synthesize':>12}{'reused':>8}  kept per cell")
    for r in results:
        print(f"{'shared' if r['shared'] else 'unshared':<10}{r['cpu_seconds']:>10}{r['wall_seconds']:>10}"
              f"{r['synthesize_runs']:>12}{r['reused_stages']:>8}  {r['kept']}")
    ratio = unshared["cpu_seconds"] / shared["cpu_seconds"] if shared["cpu_seconds"] else None
    wall_ratio = unshared["wall_seconds"] / shared["wall_seconds"] if shared["wall_seconds"] else None
    print(f"\nCPU-seconds without sharing / with sharing: {ratio:.2f}" if ratio else "no CPU time measured")
    if wall_ratio:
        print(f"wall seconds without sharing / with sharing: {wall_ratio:.2f} (the two ran at once on shared cores)")
    print("\nthe shared sweep's table:\n" + shared["table"])
    same = shared["kept"] == unshared["kept"]
    print(json.dumps({"bench": "sweep_sharing", "quick": args.quick,
                      "shared_cpu_seconds": shared["cpu_seconds"], "unshared_cpu_seconds": unshared["cpu_seconds"],
                      "ratio": round(ratio, 2) if ratio else None,
                      "wall_ratio": round(wall_ratio, 2) if wall_ratio else None,
                      "shared_wall_seconds": shared["wall_seconds"], "unshared_wall_seconds": unshared["wall_seconds"],
                      "synthesize_runs": [shared["synthesize_runs"], unshared["synthesize_runs"]],
                      "kept": shared["kept"], "kept_same_without_sharing": same}))
    if not same:
        print("note: the kept counts differ with and without sharing (generation was not reproduced)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
