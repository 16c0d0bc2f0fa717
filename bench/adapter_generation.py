"""Benchmark: generation from a merged model vs the same model served as base + LoRA adapter.

    .venv/bin/python bench/adapter_generation.py                     # every engine installed
    .venv/bin/python bench/adapter_generation.py --engine vllm       # one engine
    .venv/bin/python bench/adapter_generation.py --quick             # 4 prompts, 32 tokens, 2 repeats

training.merge: false makes an iteration's model its LoRA adapter, served over the base
(jobs/sheepdog_jobs/engines/adapters.py): vLLM applies the adapter on every token through its
LoRA kernels (enable_lora, a LoRARequest); transformers folds it into the weights in memory at
load (peft merge_and_unload). This bench asks what that costs a generating stage.

One adapter of the tiny model (r 8, all-linear, random non-zero B, seed 0) is written, and its
merge into the base (merge_and_unload, the train stage's merge) beside it. Per engine, the merged
model and the adapter are each loaded in a fresh process through create_engine (as the stages
do), warmed up, then the same prompts (phase A's instruction requests) are generated greedily
`--repeats` times; the two sides alternate per engine, so load drifts hit both alike. Printed
side by side: load seconds, the fastest and the median generation seconds, tokens/s, and
adapter / merged ratios (> 1: the adapter is slower), and how many texts are identical. The
LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "operator"))
os.environ.setdefault("SHEEPDOG_TORCH_THREADS", "1")  # see tests/jobs/conftest.py

SEED = 7


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prompts(n: int) -> list[str]:
    from sheepdog_jobs.prompts import build_instruction_request
    from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, load_seed_tasks

    tasks = load_seed_tasks(SELF_INSTRUCT_SEED_TASKS)
    rng = random.Random(SEED)
    return [build_instruction_request(rng.sample(tasks, 3), num_tasks=20, include_output=False) for _ in range(n)]


def write_models(base: str, out: Path) -> tuple[str, str]:
    """(merged model dir, adapter dir): one random adapter over `base`, and its merge."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    # init_lora_weights=False: B is random, not zero, so the adapter changes the model.
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    adapter, merged = out / "adapter", out / "merged"
    model.save_pretrained(adapter)
    model.merge_and_unload().save_pretrained(merged)
    AutoTokenizer.from_pretrained(base).save_pretrained(merged)
    return str(merged), str(adapter)


def child(engine_name: str, model: str, n: int, max_tokens: int, repeats: int) -> dict:
    """One side, in its own process: load, warm up, generate `repeats` times."""
    from sheepdog_jobs.stages.common import configure_torch_threads

    configure_torch_threads()
    from sheepdog_jobs.engines import create_engine

    batch = prompts(n)
    t0 = time.perf_counter()
    engine = create_engine(engine_name, model, "none", seed=SEED)
    load = time.perf_counter() - t0
    kw = dict(temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=SEED)
    engine.generate(batch[:1], **{**kw, "max_tokens": 2})  # warm-up, not timed
    seconds, out = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = engine.generate(batch, **kw)
        seconds.append(time.perf_counter() - t0)
    served = {"adapter": engine.adapter, "lora": getattr(engine, "lora_request", None) is not None}
    if served["lora"]:
        # vLLM's LoRA slots as allocated (the in-process engine on CPU), for sheepdog plan's figure
        served["loraSlotBytes"], served["loraDtypeBytes"] = engine.llm.apply_model(_lora_slot_bytes)[0]
    engine.close()
    return {"loadSeconds": round(load, 2), "seconds": [round(s, 3) for s in seconds],
            "tokens": sum(c.num_tokens for c in out), "texts": [c.text for c in out], **served}


def _lora_slot_bytes(model) -> tuple[int, int]:
    """(bytes, element size) of every stacked LoRA A and B buffer vLLM allocated in `model`."""
    import torch

    total, size = 0, 0
    for module in model.modules():
        for name in ("lora_a_stacked", "lora_b_stacked"):
            stacked = getattr(module, name, None)
            # a tuple of per-slice tensors (packed q/k/v, gate/up) or one tensor
            for t in (stacked,) if isinstance(stacked, torch.Tensor) else (stacked or ()):
                total, size = total + t.numel() * t.element_size(), t.element_size()
    return total, size


def planned_slot_bytes(base: str, dtype_bytes: int) -> int:
    """sheepdog plan's figure for one adapter slot of rank 8 on one rank, at the served dtype."""
    from dataclasses import replace

    from sheepdog.capacity import read_shape
    from sheepdog.capacity.lora_serving import vllm_slot_bytes, vllm_slot_rank

    shape = replace(read_shape(Path(base) / "config.json"), dtype_bytes=dtype_bytes)
    return vllm_slot_bytes(shape, 1, vllm_slot_rank(8))


def run_side(engine: str, model: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", engine, model, "--prompts", str(args.prompts),
           "--max-tokens", str(args.max_tokens), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} on {model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=["transformers", "vllm"], action="append",
                    help="default: transformers, and vllm where installed")
    ap.add_argument("--quick", action="store_true", help="4 prompts, 32 new tokens, 2 repeats")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="the base (default: the tiny model)")
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.max_tokens, args.repeats = 4, 32, 2
    if args.child:
        print(json.dumps(child(*args.child, args.prompts, args.max_tokens, args.repeats)), flush=True)
        return 0

    from sheepdog_jobs.modelprep import default_cache_dir, prepare_model

    engines = args.engine or ["transformers"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    base = args.model or prepare_model(default_cache_dir())["model"]
    result = {"bench": "adapter_generation", "base": base, "prompts": args.prompts, "maxTokens": args.max_tokens,
              "repeats": args.repeats, "decoding": "greedy", "loadAverage": round(os.getloadavg()[0], 1),
              "engines": {}}
    with tempfile.TemporaryDirectory(prefix="sheepdog-adapter-bench-") as tmp:
        merged, adapter = write_models(base, Path(tmp))
        for engine in engines:
            sides = {}
            for side, model in (("merged", merged), ("adapter", adapter)):
                log(f"{engine}: {side} ...")
                sides[side] = run_side(engine, model, args)
            m, a = sides["merged"], sides["adapter"]
            assert a["adapter"] == adapter and m["adapter"] is None, (a["adapter"], m["adapter"])
            row = {"merged": {k: m[k] for k in ("loadSeconds", "seconds", "tokens")},
                   "adapter": {k: a[k] for k in ("loadSeconds", "seconds", "tokens", "lora")},
                   "identicalTexts": sum(x == y for x, y in zip(m["texts"], a["texts"]))}
            for name, s in (("merged", m), ("adapter", a)):
                row[name]["tokensPerSecond"] = round(s["tokens"] / min(s["seconds"]), 1)
            row["ratioMinSeconds"] = round(min(a["seconds"]) / min(m["seconds"]), 3)
            row["ratioMedianSeconds"] = round(statistics.median(a["seconds"]) / statistics.median(m["seconds"]), 3)
            row["ratioLoadSeconds"] = round(a["loadSeconds"] / m["loadSeconds"], 3)
            if "loraSlotBytes" in a:
                planned = planned_slot_bytes(base, a["loraDtypeBytes"])
                row["loraSlots"] = {"allocatedBytes": a["loraSlotBytes"], "plannedBytes": planned,
                                    "dtypeBytes": a["loraDtypeBytes"]}
                log(f"{engine}: LoRA slots allocated {a['loraSlotBytes']} bytes, sheepdog plan {planned}")
            result["engines"][engine] = row
            log(f"{engine}: merged {min(m['seconds']):.2f} s ({row['merged']['tokensPerSecond']} tokens/s), "
                f"adapter {min(a['seconds']):.2f} s ({row['adapter']['tokensPerSecond']} tokens/s): "
                f"adapter/merged {row['ratioMinSeconds']} (median {row['ratioMedianSeconds']}); load "
                f"{m['loadSeconds']} vs {a['loadSeconds']} s; identical texts {row['identicalTexts']}/{args.prompts}")
    result["loadAverageAfter"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
