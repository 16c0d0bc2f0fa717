"""Benchmark: batched generation vs one prompt at a time, same prompts and token budget.

    .venv/bin/python bench/generation.py                  # 8 prompts, 64 new tokens
    .venv/bin/python bench/generation.py --quick          # 4 prompts, 32 new tokens
    .venv/bin/python bench/generation.py --engine vllm    # the same on vLLM

Prompts: Alpaca-style instruction requests (build_instruction_request, 3 seed examples each,
drawn with a fixed random seed from the Self-Instruct seeds, read in place), as phase A of
synthesize sends them.  Greedy decoding (temperature 0), so both ways decode the same tokens
(up to floating-point differences of padded batches) and stop at the same end-of-sequence.
The same loaded engine runs both ways; model load is excluded.

* batched: one engine.generate call with all prompts (the transformers engine decodes
  batch_size=8 rows at once; vLLM schedules them together).
* sequential: one engine.generate call per prompt.
* tokens_per_second_*: generated tokens (end-of-sequence included) / wall seconds.
* batched_speedup: sequential seconds / batched seconds (the LAST line is one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "operator"))
os.environ.setdefault("SHEEPDOG_TORCH_THREADS", "1")  # see tests/jobs/conftest.py

from sheepdog_jobs.engines import create_engine  # noqa: E402
from sheepdog_jobs.modelprep import default_cache_dir, prepare_model  # noqa: E402
from sheepdog_jobs.prompts import build_instruction_request  # noqa: E402
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, load_seed_tasks  # noqa: E402
from sheepdog_jobs.stages.common import configure_torch_threads  # noqa: E402

SHARED_SEEDS = SELF_INSTRUCT_SEED_TASKS  # shipped in jobs/sheepdog_jobs/data/self_instruct
SEED = 7


def log(msg: str) -> None:
    print(msg, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 prompts, 32 new tokens")
    ap.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    n, max_tokens = (4, 32) if args.quick else (8, 64)

    configure_torch_threads()
    model = args.model or prepare_model(default_cache_dir())["model"]
    seed_file = SHARED_SEEDS  # a missing file fails: no silent fallback
    tasks = load_seed_tasks(seed_file)
    rng = random.Random(SEED)
    prompts = [build_instruction_request(rng.sample(tasks, 3), num_tasks=20, include_output=False)
               for _ in range(n)]
    log(f"generation bench: {n} instruction requests, {max_tokens} new tokens, greedy, "
        f"engine {args.engine}")
    engine = create_engine(args.engine, model, "none", seed=SEED)
    kw = dict(temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=SEED)
    engine.generate(prompts[:1], **{**kw, "max_tokens": 2})  # warm-up, not timed

    t0 = time.perf_counter()
    batched = engine.generate(prompts, **kw)
    b_sec = time.perf_counter() - t0
    b_tok = sum(c.num_tokens for c in batched)
    log(f"batched: {b_tok} tokens in {b_sec:.2f} s ({b_tok / b_sec:.1f} tokens/s)")

    seq = []
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        seq += engine.generate([p], **{**kw, "seed": SEED + i})
        log(f"  sequential {i + 1}/{n}: {time.perf_counter() - t0:.1f} s")
    s_sec = time.perf_counter() - t0
    s_tok = sum(c.num_tokens for c in seq)
    log(f"sequential: {s_tok} tokens in {s_sec:.2f} s ({s_tok / s_sec:.1f} tokens/s)")
    engine.close()

    same = sum(a.text == b.text for a, b in zip(batched, seq))
    result = {
        "bench": "generation", "quick": args.quick, "engine": args.engine, "prompts": n,
        "max_tokens": max_tokens, "decoding": "greedy",
        "batched_tokens": b_tok, "batched_seconds": round(b_sec, 2),
        "tokens_per_second_batched": round(b_tok / b_sec, 1),
        "sequential_tokens": s_tok, "sequential_seconds": round(s_sec, 2),
        "tokens_per_second_sequential": round(s_tok / s_sec, 1),
        "batched_speedup": round(s_sec / b_sec, 2),
        "throughput_ratio": round((b_tok / b_sec) / (s_tok / s_sec), 2),
        "identical_outputs": same,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
