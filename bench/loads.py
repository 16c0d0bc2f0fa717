"""Benchmark: model loads per iteration, counted in a real synthesize run on the tiny model.

    .venv/bin/python bench/loads.py            # dataSize 4, up to 160 tokens per generation
    .venv/bin/python bench/loads.py --quick    # dataSize 2, up to 96 tokens

Runs the real stage command (python -m sheepdog_jobs synthesize --config <StageConfig JSON>
--summary-file ...) in a fresh temporary work directory, with a StageConfig built as
tests/jobs/conftest.py builds it (the tiny-model settings: logprob scoring, keepFraction),
and reads `modelLoads` from the summary it writes.  The synthesize stage is the part of an
iteration that the reference scripts run as three separate vLLM launches (instructions,
responses, assessment), so reference_loads_per_iteration is 3.  Training loads its model
once in both, and is not counted on either side.  The LAST line is one JSON object.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "operator"))

from sheepdog.api.spec import RunSpec  # noqa: E402
from sheepdog.stage_config import StageConfig  # noqa: E402
from sheepdog_jobs.modelprep import default_cache_dir, prepare_model  # noqa: E402
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS  # noqa: E402

SHARED_SEEDS = SELF_INSTRUCT_SEED_TASKS  # shipped in jobs/sheepdog_jobs/data/self_instruct


def log(msg: str) -> None:
    print(msg, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="dataSize 2, 96 tokens")
    ap.add_argument("--engine", default="transformers", choices=["transformers", "vllm", "auto"])
    args = ap.parse_args(argv)
    data_size, max_tokens = (2, 96) if args.quick else (4, 160)

    model = prepare_model(default_cache_dir())["model"]
    seed_file = SHARED_SEEDS  # a missing file fails: no silent fallback
    spec = RunSpec.model_validate({
        "model": {"base": model}, "engine": args.engine,
        "seed": {"examplesPerRequest": 3},
        "synthesis": {"dataSize": data_size, "maxTokens": max_tokens, "maxRequests": 8},
        "assessment": {"scoring": "logprobs"},
        "filter": {"keepFraction": 0.5},
        "stages": {"synthesize": {"gpus": 0, "tensorParallel": 1}, "train": {"gpus": 0}},
    })
    with tempfile.TemporaryDirectory(prefix="sheepdog-bench-loads-") as work:
        config = StageConfig(
            run="bench", iteration=1, stage="synthesize", spec=spec, root=work, run_dir=work,
            out_dir=f"{work}/i1/synthesize", seed_file=str(seed_file), generator_model=model,
            base_model=model, train_data=[f"{work}/i1/curate/kept.jsonl"],
            model_out=f"{work}/i1/model", data_size=data_size)
        summary_file = Path(work) / "synthesize.summary.json"
        env = dict(os.environ)
        env.setdefault("SHEEPDOG_TORCH_THREADS", "1")
        cmd = [sys.executable, "-m", "sheepdog_jobs", "synthesize", "--config", config.to_json(),
               "--summary-file", str(summary_file)]
        log(f"loads bench: real synthesize stage, engine {args.engine}, dataSize {data_size}, "
            f"maxTokens {max_tokens}, seeds {seed_file}")
        started = time.monotonic()
        proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
        wall = time.monotonic() - started
        if proc.returncode != 0 or not summary_file.exists():
            log(f"synthesize failed (exit {proc.returncode})")
            return 1
        summary = json.loads(summary_file.read_text())
    log(f"synthesize: {summary.get('generated')} pairs, {summary.get('assessed')} assessed, "
        f"modelLoads {summary.get('modelLoads')}, loadSeconds {summary.get('loadSeconds')}, "
        f"{wall:.0f} s")
    loads = summary["modelLoads"]
    result = {
        "bench": "loads", "quick": args.quick, "engine": summary.get("engine"),
        "data_size": data_size, "max_tokens": max_tokens,
        "generated": summary.get("generated"), "assessed": summary.get("assessed"),
        "phases": ["instructions", "responses", "assessments"],
        "loads_per_iteration": loads, "reference_loads_per_iteration": 3,
        "loads_saved_per_iteration": 3 - loads,
        "load_seconds": summary.get("loadSeconds"),
        "load_seconds_saved_per_iteration_estimate": (
            None if summary.get("loadSeconds") is None else round((3 - loads) * summary["loadSeconds"], 1)),
        "tokens_per_second": summary.get("tokensPerSecond"),
        "stage_wall_seconds": round(wall, 1),
    }
    print(json.dumps(result), flush=True)
    return 0 if loads == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
