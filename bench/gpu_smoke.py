"""The GPU smoke (bench/gpu_smoke.sh runs it): the train stage (DeepSpeed, bf16, LoRA) over every
GPU of the machine, then generation with the transformers engine on synthesize's own requests;
the last line of stdout is one JSON object with samples/s, tokens/s, peak GPU memory and the
world size. `--cpu` runs the same steps on the CPU (gloo, fp32 fallback, 2 ranks): the check
that the script is right, on a machine without a GPU.

The model is the tiny model's architecture (config + tokenizer from the kit) with random
weights made here: throughput does not depend on the weights, and the weights are too large
to travel. Random weights write no parsable instruction, so the synthesize stage itself would
stop after its first phase ("no instruction survived"); the smoke therefore drives the engine
synthesize uses (sheepdog_jobs.engines, engine transformers) with the requests synthesize
builds (the Alpaca meta prompt over seed examples), the part of synthesize that costs GPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "jobs" / "sheepdog_jobs" / "data" / "self_instruct" / "seed_tasks.jsonl"


def make_model(kit_model: Path, out: Path, dtype: str) -> None:
    """Random weights of the kit's architecture, saved with its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(kit_model)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(kit_model).save_pretrained(out)
    for name in ("generation_config.json", "chat_template.jinja"):
        if (kit_model / name).exists():
            shutil.copy(kit_model / name, out / name)


def write_train_data(curate_dir: Path, seeds: list) -> Path:
    """The seed tasks as curate's output (kept.jsonl + _SUCCESS), what train reads."""
    from sheepdog_jobs import storage

    curate_dir.mkdir(parents=True, exist_ok=True)
    path = curate_dir / "kept.jsonl"
    storage.write_jsonl(path, [{"instruction": s.instruction, "input": s.input, "output": s.output} for s in seeds])
    storage.write_manifest(curate_dir, [path], "gpu-smoke", counts={"kept": len(seeds)})
    return path


class GpuMemory:
    """Peak GPU memory in use (all processes, as nvidia-smi counts it), sampled twice a second."""

    def __init__(self) -> None:
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                self.peak_mib = max([self.peak_mib, *(int(x) for x in out.split() if x.strip().isdigit())])
            except (OSError, subprocess.SubprocessError, ValueError):
                pass

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def run_train(args, work: Path, model_dir: Path, train_file: Path, ranks: int) -> dict:
    from sheepdog.api.spec import RunSpec
    from sheepdog.planner import stage_config
    from sheepdog.stage_config import Layout, stage_command

    spec = RunSpec.model_validate({
        "model": {"base": str(model_dir), "chatTemplate": "auto"},
        "training": {"epochs": 1, "maxSamples": args.samples, "cutoffLength": 512, "warmupSteps": 0,
                     "validationFraction": 0, "perDeviceBatchSize": args.batch, "gradientAccumulation": 2,
                     "zeroStage": 3, "precision": "fp32" if args.cpu else "bf16", "reportTo": []},
        "stages": {"synthesize": {"gpus": 0, "tensorParallel": 1}, "train": {"gpus": ranks, "nodes": 1}},
    })
    layout = Layout(root=str(work), run_dir=str(work / "run"))
    config = stage_config("gpu-smoke", spec, 1, "train", layout)
    config = config.model_copy(update={"train_data": [str(train_file)]})
    summary_file = work / "train.summary.json"
    command = stage_command(config, python=sys.executable, summary_file=str(summary_file))
    print(f"[gpu-smoke] train: {' '.join(command[:command.index('--config')])} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, env=env, cwd=work)
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if proc.returncode != 0 or not summary.get("ok"):
        raise SystemExit(f"gpu-smoke: train failed (exit {proc.returncode}): {summary.get('error')}")
    return summary


def run_generation(args, model_dir: Path, seeds: list) -> dict:
    import torch

    from sheepdog_jobs.engines import create_engine
    from sheepdog_jobs.prompts import build_instruction_request

    rng = random.Random(0)
    prompts = [build_instruction_request(rng.sample(seeds, 3), num_tasks=20) for _ in range(args.prompts)]
    engine = create_engine("transformers", str(model_dir), "none", seed=0, tensor_parallel=1)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    outputs = engine.generate(prompts, temperature=1.0, top_p=0.9, max_tokens=args.max_tokens, seed=0)
    seconds = time.monotonic() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"prompts": len(outputs), "tokensPerSecond": round(engine.tokens_per_second, 1),
            "generateSeconds": round(seconds, 1), "generatePeakGiB": None if peak is None else round(peak, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", type=Path, default=ROOT / "bench" / "gpu_smoke_kit",
                    help="made by bench/gpu_smoke_prepare.sh: model/ (config + tokenizer) and wheels/")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a fresh temp dir)")
    ap.add_argument("--cpu", action="store_true", help="the same steps on the CPU (2 ranks, gloo): a dry run")
    ap.add_argument("--ranks", type=int, default=None, help="train ranks (default: every GPU; --cpu: 2)")
    ap.add_argument("--samples", type=int, default=None, help="training pairs (default 175, --cpu 8)")
    ap.add_argument("--batch", type=int, default=None, help="per-device batch (default 8, --cpu 1)")
    ap.add_argument("--prompts", type=int, default=None, help="generation requests (default 64, --cpu 2)")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per request (default 256, --cpu 16)")
    args = ap.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("gpu-smoke: no CUDA device; run with --cpu for a dry run on the CPU")
    for name, gpu, cpu in (("samples", 175, 8), ("batch", 8, 1), ("prompts", 64, 2), ("max_tokens", 256, 16)):
        if getattr(args, name) is None:
            setattr(args, name, cpu if args.cpu else gpu)
    ranks = args.ranks or (2 if args.cpu else torch.cuda.device_count())
    if args.cpu and torch.cuda.is_available():
        # hide the GPUs from the stages and from the engine here (torch reads this lazily)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    kit_model = args.kit / "model"
    if not (kit_model / "config.json").exists():
        raise SystemExit(f"gpu-smoke: {kit_model}/config.json missing: run bench/gpu_smoke_prepare.sh first")
    started = time.monotonic()
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="sheepdog-gpu-smoke-"))
    model_dir = work / "model"
    make_model(kit_model, model_dir, "float32" if args.cpu else "bfloat16")

    from sheepdog_jobs.seeds import load_seed_tasks

    seeds = load_seed_tasks(SEEDS)
    train_file = write_train_data(work / "run" / "i1" / "curate", seeds[: args.samples])
    with GpuMemory() as memory:
        train = run_train(args, work, model_dir, train_file, ranks)
    gen = run_generation(args, model_dir, seeds)
    world = train.get("worldSize", train.get("world"))
    samples_per_second = train.get("samplesPerSecond")
    if samples_per_second is None and train.get("trainSeconds"):
        samples_per_second = round(train["samples"] / train["trainSeconds"], 3)
    peaks = [x for x in (memory.peak_mib / 1024 if memory.peak_mib else None, gen["generatePeakGiB"]) if x]
    result = {
        "mode": "cpu" if args.cpu else "gpu",
        "device": "cpu" if args.cpu else torch.cuda.get_device_name(0),
        "gpus": 0 if args.cpu else torch.cuda.device_count(),
        "worldSize": world,
        "samplesPerSecond": samples_per_second,
        "effectiveBatchSize": train.get("effectiveBatchSize"),
        "trainSamples": train.get("samples"),
        "trainSeconds": train.get("trainSeconds"),
        "precision": train.get("precision"),
        "tokensPerSecond": gen["tokensPerSecond"],
        "generatedPrompts": gen["prompts"],
        "peakGpuMemoryGiB": round(max(peaks), 2) if peaks else None,
        # --cpu: the largest resident set of one stage process, for comparison only
        "peakRssGiB": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
