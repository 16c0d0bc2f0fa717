"""Benchmark: the train stage's peak memory on CPU, with and without gradient checkpointing,
beside what `sheepdog plan` predicts for the same model and settings.

    .venv/bin/python bench/train_peak_memory.py                # 1024 tokens, 2 runs per setting
    .venv/bin/python bench/train_peak_memory.py --tokens 512 --runs 1

The real tiny model (SmolLM2-135M-Instruct) with LoRA as the train stage sets it (r 8,
all-linear, dropout 0.05, the whole module in bf16, SDPA), one sequence of `--tokens` tokens,
micro-batch 1. Each setting runs in a fresh process: a warm-up forward and backward of 16
tokens (so the weights, the allocator and the kernels are in place), then the measured one;
its peak is the resident set's high-water mark (VmHWM, reset just before the step through
/proc/self/clear_refs) less the resident set just before it: what that forward and backward
added at their peak. The plan's figure for the
same step is activations + logits (sheepdog.capacity.memory.train_memory: saved for backward
by the settings, and the loss's logits: LOGIT_BYTES a token and vocabulary entry, which a
separate process measures for the loss step alone: `lossStep`); the weights,
LoRA states and buffers are in place before the step and not part of the growth. The settings
alternate (off, on, off, on, ...) so a drift of the machine hits both. The LAST line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "operator"))
os.environ.setdefault("SHEEPDOG_TORCH_THREADS", "1")  # see tests/jobs/conftest.py

MiB = 2**20


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


def _reset_peak() -> None:
    # Linux resets the resident set's high-water mark (VmHWM) to the current resident set on
    # "5" written here: the peak read after the step is then the step's own.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def child(model_dir: str, tokens: int, checkpointing: bool) -> dict:
    from sheepdog_jobs.stages.common import configure_torch_threads

    configure_torch_threads()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM")).to(torch.bfloat16)
    model.train()
    if checkpointing:  # as the train stage turns it on (training/options.py)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    vocab = model.config.vocab_size

    def step(n: int) -> None:
        ids = torch.randint(0, vocab, (1, n))
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    step(16)
    before = _status_kib("VmRSS")
    _reset_peak()
    step(tokens)
    peak = _status_kib("VmHWM")
    return {"growthBytes": (peak - before) * 1024, "rssBeforeBytes": before * 1024, "peakBytes": peak * 1024}


def loss_child(vocab: int, hidden: int, tokens: int) -> dict:
    """The loss step alone: the LM head's bf16 logits, transformers' fp32 upcast, cross-entropy
    and backward, as the train stage's model does them; its peak growth per token x vocab entry
    against the plan's LOGIT_BYTES."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    h = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    head = torch.randn(vocab, hidden, dtype=torch.bfloat16) * 0.02
    labels = torch.randint(0, vocab, (1, tokens))

    def step() -> None:
        loss = F.cross_entropy((h @ head.t()).float().view(-1, vocab), labels.view(-1))
        loss.backward()
        h.grad = None

    step()
    before = _status_kib("VmRSS")
    _reset_peak()
    step()
    return {"growthBytes": (_status_kib("VmHWM") - before) * 1024}


def planned(model_dir: str, tokens: int, checkpointing: bool) -> dict:
    from sheepdog.capacity import read_shape
    from sheepdog.capacity.memory import train_memory

    m = train_memory(read_shape(model_dir), ranks=1, zero_stage=0, lora_rank=8, micro_batch=1, seq_len=tokens,
                     checkpointing=checkpointing)
    return {"activationsBytes": m.activations, "logitsBytes": m.logits}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--model", default=None, help="default: the tiny model")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "TOKENS", "CHECKPOINTING"), help=argparse.SUPPRESS)
    ap.add_argument("--loss-child", nargs=3, type=int, metavar=("VOCAB", "HIDDEN", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loss_child:
        print(json.dumps(loss_child(*args.loss_child)), flush=True)
        return 0
    if args.child:
        model, tokens, ckpt = args.child
        print(json.dumps(child(model, int(tokens), ckpt == "1")), flush=True)
        return 0

    from sheepdog_jobs.modelprep import default_cache_dir, prepare_model

    model = args.model or prepare_model(default_cache_dir())["model"]
    result = {"bench": "train_peak_memory", "model": model, "tokens": args.tokens, "runs": args.runs,
              "loadAverage": round(os.getloadavg()[0], 1), "settings": {}}
    measured: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.runs):
        for name in ("off", "on"):
            proc = subprocess.run([sys.executable, __file__, "--child", model, str(args.tokens),
                                   "1" if name == "on" else "0"], capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise SystemExit(f"checkpointing {name} failed:\n{proc.stderr[-3000:]}")
            growth = json.loads(proc.stdout.strip().splitlines()[-1])["growthBytes"]
            measured[name].append(round(growth / MiB, 1))
            print(f"checkpointing {name}: peak growth {growth / MiB:.0f} MiB", file=sys.stderr, flush=True)
    for name in ("off", "on"):
        p = planned(model, args.tokens, name == "on")
        plan_mib = (p["activationsBytes"] + p["logitsBytes"]) / MiB
        result["settings"][name] = {
            "measuredPeakGrowthMiB": measured[name],
            "plannedActivationsMiB": round(p["activationsBytes"] / MiB, 1),
            "plannedLogitsMiB": round(p["logitsBytes"] / MiB, 1),
            "plannedMiB": round(plan_mib, 1),
            "measuredOverPlanned": round(max(measured[name]) / plan_mib, 3),
        }
    from sheepdog.capacity import read_shape
    from sheepdog.capacity.memory import LOGIT_BYTES

    shape = read_shape(model)
    proc = subprocess.run([sys.executable, __file__, "--loss-child", str(shape.vocab), str(shape.hidden),
                           str(args.tokens)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the loss step failed:\n{proc.stderr[-3000:]}")
    growth = json.loads(proc.stdout.strip().splitlines()[-1])["growthBytes"]
    result["lossStep"] = {"measuredBytesPerTokenVocab": round(growth / (args.tokens * shape.vocab), 2),
                          "plannedLogitBytes": LOGIT_BYTES}
    off, on = result["settings"]["off"], result["settings"]["on"]
    saved = max(off["measuredPeakGrowthMiB"]) - max(on["measuredPeakGrowthMiB"])
    result["checkpointingSavesMeasuredMiB"] = round(saved, 1)
    result["checkpointingSavesPlannedMiB"] = round(off["plannedMiB"] - on["plannedMiB"], 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
