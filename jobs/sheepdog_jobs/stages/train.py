"""Stage train (ISHEEP.md stage fact 6): LoRA SFT through DeepSpeed ZeRO, then merge.

Runs as one process (the local executor, one pod) or under torchrun (multi-node Indexed
Job); DeepSpeed reads RANK/WORLD_SIZE/MASTER_* from the environment, which we fill in for a
single process. On CPU the collective backend is gloo (DeepSpeed's CPU default, oneCCL, is
not installed) and ZeRO stages 2 and 3 both work.

Examples use the exact prompt synthesize sampled with (build_response_prompt + the chat
template setting, via PromptFormat); the loss covers the response tokens (+ end of
sequence) only. After training the LoRA weights are gathered (ZeRO-3 partitions them), put
into a fresh PEFT wrapper of the base model, saved as the adapter, merged, and the merged
model is written to modelOut through a temp directory and one rename.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
import time
from pathlib import Path

from sheepdog.stage_config import StageConfig
from sheepdog_jobs import storage
from sheepdog_jobs.prompts import build_response_prompt
from sheepdog_jobs.stages.common import (StageError, check_file, check_model, check_not_adapter, derive_seed,
                                         layout, log)

IGNORE = -100
LINEAGE = "sheepdog_model.json"


def _inputs(config: StageConfig) -> list[dict]:
    if not config.train_data:
        raise StageError("trainData is empty: nothing to train on")
    records = []
    for path in config.train_data:
        check_file(path, "trainData")
        parent = Path(path).parent
        manifest = storage.verify_manifest(parent, None)
        if manifest is None or os.path.relpath(path, parent) not in manifest["files"]:
            raise StageError(f"trainData: {path} is not a complete curate output (no valid _SUCCESS beside it)")
        try:
            rows = storage.read_jsonl(path)
        except ValueError as exc:
            raise StageError(str(exc)) from None
        for n, r in enumerate(rows, start=1):
            if not all(isinstance(r.get(k), str) for k in ("instruction", "input", "output")):
                raise StageError(f"trainData: {path}: record {n} lacks string instruction/input/output")
        records += rows
    return records


def _distributed_env() -> None:
    """Single process without torchrun: the env a launcher would give a world of one."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _precision(torch, wanted: str) -> str:
    cuda = torch.cuda.is_available()
    if wanted == "fp32":
        return "fp32"
    if wanted == "bf16":
        ok = torch.cuda.is_bf16_supported() if cuda else bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    else:
        ok = cuda  # fp16 mixed precision needs CUDA's loss scaling kernels
    if not ok:
        log.warning("training.precision %s is not supported on this %s: training in fp32",
                    wanted, "GPU" if cuda else "CPU")
        return "fp32"
    return wanted


def _encode(fmt, tokenizer, records, cutoff: int):
    eos = tokenizer.eos_token_id
    examples, dropped = [], 0
    for r in records:
        prompt = fmt.encode(build_response_prompt(r["instruction"], r["input"]))
        answer = list(tokenizer(r["output"], add_special_tokens=False)["input_ids"]) + ([eos] if eos is not None else [])
        ids = (prompt + answer)[:cutoff]
        labels = ([IGNORE] * len(prompt) + answer)[:cutoff]
        if all(x == IGNORE for x in labels):
            dropped += 1  # the prompt alone fills the cutoff: nothing to learn from
            continue
        examples.append((ids, labels))
    return examples, dropped


def _collate(torch, batch, pad_id):
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids, mask, labels


def _replace_dir(tmp: Path, final: Path) -> None:
    # rename(2) cannot replace a non-empty directory: drop the old one first. A crash in
    # between leaves no model and no _SUCCESS, so the stage simply runs again.
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def run(config: StageConfig) -> dict:
    t = config.spec.training
    check_model(config.base_model, "baseModel")
    check_not_adapter(config.base_model, "baseModel")
    records = _inputs(config)[: t.max_samples]
    if not records:
        raise StageError(f"trainData {config.train_data}: no samples (curate kept nothing); "
                         "lower filter.threshold or use filter.keepFraction")
    out, model_out = Path(config.out_dir), Path(config.model_out)
    fp = storage.fingerprint(
        {"stage": "train", "iteration": config.iteration, "training": t.model_dump(mode="json"),
         "chatTemplate": config.spec.model.chat_template, "base": storage.model_identity(config.base_model),
         "modelOut": config.model_out, "seed": config.spec.synthesis.random_seed},
        config.train_data)
    done = storage.verify_manifest(out, fp)
    if done is not None:
        return {**done["summary"], "skipped": True}
    return _train(config, records, fp, out, model_out)


def _train(config, records, fp, out: Path, model_out: Path) -> dict:
    import deepspeed
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from sheepdog_jobs.engines.prompting import PromptFormat

    t, seed = config.spec.training, config.spec.synthesis.random_seed
    _distributed_env()
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    precision = _precision(torch, t.precision)

    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    fmt = PromptFormat(tokenizer, config.spec.model.chat_template)
    order = list(range(len(records)))
    random.Random(derive_seed(seed, config.iteration, "split")).shuffle(order)
    n_val = min(round(len(records) * t.validation_fraction), len(records) - 1)
    val_recs, train_recs = [records[i] for i in order[:n_val]], [records[i] for i in order[n_val:]]
    train_ex, too_long = _encode(fmt, tokenizer, train_recs, t.cutoff_length)
    val_ex, _ = _encode(fmt, tokenizer, val_recs, t.cutoff_length)
    if not train_ex:
        raise StageError(f"no training example fits cutoffLength={t.cutoff_length}")
    # Every rank must take the same number of steps, or the collectives hang.
    per_rank = max(1, len(train_ex) // world)
    mine = train_ex[rank::world][:per_rank]

    micro_per_epoch = math.ceil(len(mine) / t.per_device_batch_size)
    total_steps = max(1, math.ceil(t.epochs * micro_per_epoch / t.gradient_accumulation))
    ds_config = {
        "train_micro_batch_size_per_gpu": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # A plain torch AdamW: DeepSpeed's fused Adam needs CUDA kernels we do not build.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    # ZeRO-3: with this object alive, from_pretrained builds the model under zero.Init, so
    # each rank only ever holds its partition (a 72B model does not fit one node's RAM).
    ds_hint = HfDeepSpeedConfig(ds_config) if t.zero_stage == 3 else None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(
        config.base_model, dtype=torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16"
        else torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(r=t.lora.rank, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                      target_modules=t.lora.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=0.0)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_config,
        lr_scheduler=lambda opt: get_scheduler(t.lr_scheduler, opt, num_warmup_steps=min(t.warmup_steps, total_steps),
                                               num_training_steps=total_steps))
    device = engine.device
    log.info("train: %d examples (%d validation, %d over cutoff), %d steps, ZeRO-%d, %s, world %d",
             len(train_ex), len(val_ex), too_long, total_steps, t.zero_stage, precision, world)

    started, micro, epoch, losses, log_rows, step_losses = time.monotonic(), 0, 0, {}, [], []
    engine.train()
    while micro < total_steps * t.gradient_accumulation:
        perm = list(range(len(mine)))
        random.Random(derive_seed(seed, config.iteration, "epoch", epoch, rank)).shuffle(perm)
        for b in range(0, len(perm), t.per_device_batch_size):
            if micro >= total_steps * t.gradient_accumulation:
                break
            ids, mask, labels = (x.to(device) for x in _collate(torch, [mine[i] for i in perm[b:b + t.per_device_batch_size]], fmt.tokenizer.pad_token_id or 0))
            loss = engine(input_ids=ids, attention_mask=mask, labels=labels).loss
            engine.backward(loss)
            engine.step()
            micro += 1
            value = float(loss.detach().float())
            losses.setdefault(epoch, []).append(value)
            step_losses.append(value)
            if micro % t.gradient_accumulation == 0:  # an optimizer step: log its mean loss
                log_rows.append({"step": micro // t.gradient_accumulation, "epoch": epoch,
                                 "loss": round(sum(step_losses) / len(step_losses), 5), "lr": engine.get_lr()[0]})
                step_losses = []
        epoch += 1
    train_loss = _mean_across(torch, dist, device, sum(losses[epoch - 1]), len(losses[epoch - 1]))
    eval_loss = _evaluate(torch, dist, engine, val_ex, fmt.tokenizer.pad_token_id or 0, rank, world)
    train_seconds = time.monotonic() - started
    if not math.isfinite(train_loss):
        raise StageError(f"training diverged: loss {train_loss}")

    lora_state = _gather_trainable(engine)
    # Off again: the fresh base that _save merges into must be a whole, unpartitioned model.
    del ds_hint
    unset_hf_deepspeed_config()
    summary = {
        "trainLoss": round(train_loss, 5), "evalLoss": None if eval_loss is None else round(eval_loss, 5),
        # What was trained on: ranks take equal shares, so up to world-1 examples sit out.
        "samples": per_rank * world if world > 1 else len(train_ex), "validationSamples": len(val_ex),
        "steps": total_steps, "world": world,
        "model": layout(config).relative(str(model_out)), "precision": precision, "zeroStage": t.zero_stage,
        "trainSeconds": round(train_seconds, 1),
    }
    if rank == 0:
        _save(config, lora, lora_state, tokenizer, out, model_out, log_rows, fp, summary)
    dist.barrier()
    return summary


def _mean_across(torch, dist, device, total: float, count: int) -> float:
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] else float("nan")


def _evaluate(torch, dist, engine, examples, pad_id, rank: int, world: int):
    """Token-weighted mean loss over the validation set, sharded over ranks. Every rank runs
    the same number of forwards (a short shard repeats an example with weight 0): under
    ZeRO-3 each forward gathers parameters collectively and would hang otherwise."""
    if not examples:
        return None
    engine.eval()
    mine = examples[rank::world]
    rounds = math.ceil(len(examples) / world)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(rounds):
            ex = mine[i] if i < len(mine) else examples[0]
            ids, mask, labels = (x.to(engine.device) for x in _collate(torch, [ex], pad_id))
            loss = float(engine(input_ids=ids, attention_mask=mask, labels=labels).loss.float())
            if i < len(mine):
                n = int((labels[:, 1:] != IGNORE).sum())
                total, count = total + loss * n, count + n
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=engine.device)
    dist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] else None


def _gather_trainable(engine) -> dict:
    import deepspeed

    state = {}
    for name, p in engine.module.named_parameters():
        if p.requires_grad:
            with deepspeed.zero.GatheredParameters([p]):  # no-op below ZeRO-3
                state[name] = p.detach().float().cpu().clone()
    return state


def _save(config, lora, lora_state, tokenizer, out: Path, model_out: Path, log_rows, fp, summary) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    t = config.spec.training
    # A fresh base in its checkpoint dtype, not the DeepSpeed-wrapped (partitioned) module;
    # the merged model keeps the base's dtype.
    base = AutoModelForCausalLM.from_pretrained(config.base_model, dtype="auto")
    peft_model = get_peft_model(base, lora)
    result = peft_model.load_state_dict(lora_state, strict=False)
    if result.unexpected_keys or len(lora_state) == 0:
        raise RuntimeError(f"LoRA weights did not map back: unexpected {result.unexpected_keys[:3]}")
    out.mkdir(parents=True, exist_ok=True)
    storage.remove_manifest(out)
    model_out.parent.mkdir(parents=True, exist_ok=True)
    adapter_tmp = out / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(adapter_tmp, ignore_errors=True)
    peft_model.save_pretrained(adapter_tmp)  # adapter_config.json names the base model
    _replace_dir(adapter_tmp, out / "adapter")
    storage.write_jsonl(out / "trainer_log.jsonl", log_rows)

    tmp = model_out.parent / f".{model_out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if t.merge:
        peft_model.merge_and_unload().save_pretrained(tmp)
    else:
        peft_model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    storage.atomic_write_json(tmp / LINEAGE, {
        "iteration": config.iteration, "base": config.base_model, "merged": t.merge,
        "trainData": config.train_data, "run": config.run})
    _replace_dir(tmp, model_out)

    files = [p for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith(storage.MANIFEST)]
    files += [p for p in sorted(model_out.rglob("*")) if p.is_file()]
    storage.write_manifest(out, files, fp, counts={"samples": summary["samples"]}, summary=summary)
