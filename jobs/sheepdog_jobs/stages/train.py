"""Stage train (ISHEEP.md stage fact 6): LoRA SFT with transformers' Trainer, DeepSpeed ZeRO, merge.

docs/training.md has the whole story. In short: transformers' `Trainer` with a PEFT LoRA
model and its DeepSpeed integration (the spec's zeroStage; on CPU the collective backend is
gloo). One process (a world of one) or N ranks under torchrun: the Trainer's distributed
sampler shards the data, so the effective batch is perDeviceBatchSize x gradientAccumulation x
world size and the LR schedule counts those optimizer steps.

Examples use the exact prompt synthesize sampled with (build_response_prompt + the chat
template setting, via PromptFormat); the loss covers the response tokens (+ end of
sequence) only. Checkpoints every training.checkpointEvery steps and at each epoch; a
restarted attempt resumes from the latest complete one (training/checkpoints.py). After
training the LoRA weights are gathered (ZeRO-3 partitions them), put into a fresh PEFT
wrapper of the base model, merged, and rank 0 writes the merged model to modelOut through a
temp directory and one rename.
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
from sheepdog_jobs.prompts import build_response_prompt, training_template
from sheepdog_jobs.train_selection import samples_from, select_training_records
from sheepdog_jobs.stages.common import (StageError, check_file, check_model, check_not_adapter, derive_seed,
                                         layout, log, settings_dump)
from sheepdog_jobs.training import LOG_FILE
from sheepdog_jobs.training.options import IGNORE

LINEAGE = "sheepdog_model.json"
CHECKPOINTS = "checkpoints"


def load_records(config: StageConfig) -> list[dict]:
    """The training records: every file of trainData, each a complete curate output. (The
    one place that decides what is trained on: a record-selection policy plugs in here.)"""
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


def split(records: list, fraction: float, seed: int, iteration: int) -> tuple[list, list]:
    """(train, validation): a seeded shuffle, at least one training record."""
    order = list(range(len(records)))
    random.Random(derive_seed(seed, iteration, "split")).shuffle(order)
    n_val = min(round(len(records) * fraction), len(records) - 1)
    return [records[i] for i in order[n_val:]], [records[i] for i in order[:n_val]]


def _distributed_env() -> None:
    """Single process without torchrun: the env a launcher would give a world of one."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _skip_cpu_shm_comm() -> None:
    """DeepSpeed on the CPU JIT-compiles a shared-memory all-reduce when its comm backend starts.
    Training never calls it (it serves inference_all_reduce only); the compile costs 40 s to
    minutes per machine, and a compile killed midway leaves its lock file behind, on which every
    later start waits for ever (a CI run's two-rank trains hung so). Marked incompatible, the
    op is not built and DeepSpeed's collectives go through gloo, as they did anyway."""
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def _distributed_state(backend: str, timeout_minutes: int) -> None:
    """accelerate's process state for DeepSpeed with an explicit backend. Left to
    TrainingArguments, a machine without an accelerator gets no backend, hence a world of one
    whatever WORLD_SIZE says; gloo on CPU (DeepSpeed's CPU default, oneCCL, is not installed).
    The group's timeout is training.distributedTimeoutMinutes (torch's default is 30 minutes)."""
    from datetime import timedelta

    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


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


def encode(fmt, tokenizer, records, cutoff: int, template: str | None = None, suffix: str = ""):
    """Token ids and labels of the training examples: the prompt (``template``, then the chat
    template) masked out of the loss, then the output, ``suffix`` (training.outputSuffix) and
    the end-of-sequence token."""
    eos = tokenizer.eos_token_id
    examples, dropped = [], 0
    for r in records:
        prompt = fmt.encode(build_response_prompt(r["instruction"], r["input"], template))
        answer = list(tokenizer(r["output"] + suffix, add_special_tokens=False)["input_ids"]) \
            + ([eos] if eos is not None else [])
        ids = (prompt + answer)[:cutoff]
        labels = ([IGNORE] * len(prompt) + answer)[:cutoff]
        if all(x == IGNORE for x in labels):
            dropped += 1  # the prompt alone fills the cutoff: nothing to learn from
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples, dropped


class Collator:
    """Right-pads a batch; padding is masked out of attention and of the loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(x["input_ids"]) for x in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            n = len(x["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(x["input_ids"]), torch.tensor(x["labels"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def total_steps(n_examples: int, world: int, batch: int, accumulation: int, epochs: float) -> int:
    """Optimizer steps of the whole training, as the Trainer counts them: each rank gets
    ceil(n / (batch x world)) micro-batches an epoch, and an epoch's last, partial
    accumulation still makes an optimizer step."""
    micro = math.ceil(n_examples / (batch * world))
    return max(1, math.ceil(epochs * math.ceil(micro / accumulation)))


def warmup_for(requested: int, steps: int) -> int:
    """The warmup steps of a training of ``steps`` optimizer steps: at most ``steps - 1``. The
    Trainer's warmup starts at a learning rate of 0 (step s of w gets s/w of it), so with as many
    warmup steps as steps a one-step training never moved a weight: examples/paper-tiny.yaml's
    iterations (1 or 2 kept pairs, warmupSteps 2) gave models bit-identical to the base."""
    return max(0, min(requested, steps - 1))


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
    if config.delete_models:  # storage.keepModels: before the free-space check counts the room
        from sheepdog_jobs.training import superseded

        superseded.delete(config.delete_models, config.run_dir,
                          (config.base_model, config.generator_model, config.judge_model, config.model_out), LINEAGE)
    records = select_training_records(load_records(config), t.max_samples, config.spec.synthesis.random_seed,
                                      config.iteration)
    if not records:
        raise StageError(f"trainData {config.train_data}: no samples (curate kept nothing); "
                         "lower filter.threshold or use filter.keepFraction")
    out, model_out = Path(config.out_dir), Path(config.model_out)
    # What decides the trained weights; reportTo and checkpointEvery do not.
    # gradientCheckpointing recomputes the same activations (dropout's RNG state restored): no
    # weight changes, so it is not part of the fingerprint.
    training = settings_dump(t, ("prompt", "output_suffix", "attn_implementation", "packing",
                                 "trainer_args", "quantization"),
                             exclude={"report_to", "checkpoint_every", "tracking_uri", "gradient_checkpointing",
                                      "distributed_timeout_minutes"})
    fp = storage.fingerprint(
        {"stage": "train", "iteration": config.iteration, "training": training,
         "chatTemplate": config.spec.model.chat_template, "base": storage.model_identity(config.base_model),
         "responsePrompt": training_template(config.spec, config.iteration),
         "modelOut": config.model_out, "seed": config.spec.synthesis.random_seed},
        config.train_data)
    done = storage.verify_manifest(out, fp)
    if done is not None:
        # A kill between the manifest and the checkpoints' removal left them: the model is safe.
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        return {**done["summary"], "skipped": True}
    return _train(config, records, fp, out, model_out)


def _train(config, records, fp, out: Path, model_out: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from sheepdog_jobs.engines.prompting import PromptFormat
    from sheepdog_jobs.training import checkpoints, free_space, throughput, tracking
    from sheepdog_jobs.training.options import (OptionError, PackedCollator, attention_implementation,
                                                deepspeed_config, pack)
    from sheepdog_jobs.training import quantization
    from sheepdog_jobs.training.progress import StepLog

    t, seed = config.spec.training, config.spec.synthesis.random_seed
    # Before any training, on every rank (none waits for one that failed): a save that cannot
    # fit fails now, not after the training.
    _check_space(model_out, free_space.needed_bytes(config.base_model, t.merge), "the model this train writes")
    _distributed_env()
    cuda = torch.cuda.is_available()
    try:
        attn = attention_implementation(t.attn_implementation, cuda)
        quantization.check(t.quantization, cuda)
    except (OptionError, quantization.QuantizationError) as exc:
        raise StageError(str(exc)) from None
    precision = _precision(torch, t.precision)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    fmt = PromptFormat(tokenizer, config.spec.model.chat_template)
    train_recs, val_recs = split(records, t.validation_fraction, seed, config.iteration)
    # training.prompt, or the prompt this iteration's pairs were answered with
    template = training_template(config.spec, config.iteration)
    train_ex, too_long = encode(fmt, tokenizer, train_recs, t.cutoff_length, template, t.output_suffix)
    val_ex, _ = encode(fmt, tokenizer, val_recs, t.cutoff_length, template, t.output_suffix)
    if not train_ex:
        raise StageError(f"no training example fits cutoffLength={t.cutoff_length}")
    examples = len(train_ex)
    # Trained tokens (prompt and output, no padding) and the mean example length: the token
    # rate and the attention term of MFU (training/throughput.py).
    trained_tokens = sum(len(x["input_ids"]) for x in train_ex)
    mean_length = trained_tokens / examples
    if t.packing:  # rows of several examples: the steps, batches and schedule count rows
        train_ex, val_ex = pack(train_ex, t.cutoff_length), pack(val_ex, t.cutoff_length)

    world = int(os.environ["WORLD_SIZE"])
    if not cuda:
        _skip_cpu_shm_comm()
    _distributed_state("nccl" if cuda else "gloo", t.distributed_timeout_minutes)
    steps = total_steps(len(train_ex), world, t.per_device_batch_size, t.gradient_accumulation, t.epochs)
    ckpt_dir = out / CHECKPOINTS
    tracking.prepare_env(t.report_to, out, config.run, config.iteration)
    # Built before the model: with ZeRO-3 its DeepSpeed config makes from_pretrained load
    # under zero.Init, so each rank only ever holds its partition.
    # training.trainerArgs go last and win (the spec refused the keys sheepdog sets itself).
    args = TrainingArguments(**{**dict(
        output_dir=str(ckpt_dir), seed=seed, data_seed=derive_seed(seed, config.iteration, "order"),
        per_device_train_batch_size=t.per_device_batch_size, per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation, num_train_epochs=t.epochs,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, weight_decay=0.0, max_grad_norm=1.0,
        # Warmup shorter than the training, so that its last step trains at the full rate.
        warmup_steps=warmup_for(t.warmup_steps, steps),
        bf16=precision == "bf16" and cuda, fp16=precision == "fp16",
        deepspeed=deepspeed_config(t.zero_stage), ddp_backend=None if cuda else "gloo",
        ddp_timeout=t.distributed_timeout_minutes * 60,
        # Non-reentrant: works with frozen inputs (LoRA) and ZeRO-3's gathered parameters.
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        logging_strategy="steps", logging_steps=1,
        eval_strategy="epoch" if val_ex else "no",
        save_strategy="steps", save_steps=t.checkpoint_every, save_total_limit=2,
        report_to=tracking.trainer_reports(t.report_to), run_name=f"{config.run}-iteration-{config.iteration}",
        remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=cuda,
        accelerator_config={"use_configured_state": True},  # _distributed_state's
    ), **t.trainer_args})
    if precision == "bf16" and not cuda:
        # transformers refuses bf16=True without a GPU unless use_cpu, which turns DeepSpeed
        # off; DeepSpeed itself trains in bf16 on a CPU that has it, so tell it directly.
        args.hf_deepspeed_config.config["bf16"]["enabled"] = True
        args.hf_deepspeed_config._dtype = torch.bfloat16
    rank = args.process_index
    if args.world_size != world:
        raise StageError(f"WORLD_SIZE={world} but the Trainer sees a world of {args.world_size}")
    resume = checkpoints.latest_complete(ckpt_dir, fp)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for d in checkpoints.drop_untrusted(ckpt_dir, fp):
            log.warning("train: ignoring incomplete checkpoint %s", d.name)

    torch.manual_seed(seed)  # the LoRA initialisation
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    model = AutoModelForCausalLM.from_pretrained(
        config.base_model, dtype=dtype, attn_implementation=attn,
        **quantization.load_kwargs(t.quantization, dtype, t.zero_stage,
                                   torch.cuda.current_device() if cuda else None))
    model.config.use_cache = False
    model = quantization.prepare(model, t.quantization, t.gradient_checkpointing)
    lora = LoraConfig(r=t.lora.rank, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                      target_modules=t.lora.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    frozen_params, lora_params = throughput.matmul_params(model)
    effective = t.per_device_batch_size * t.gradient_accumulation * world
    timer = throughput.StepTimer()
    callbacks = [StepLog(out, effective), checkpoints.MarkComplete(fp), timer]
    mlflow = None
    if "mlflow" in t.report_to:
        mlflow = tracking.MlflowTracker(tracking.tracking_uri(config), config.run, config.iteration,
                                        config.spec.model_dump(mode="json", by_alias=True))
        callbacks.append(mlflow)
    trainer = Trainer(model=model, args=args, train_dataset=train_ex, eval_dataset=val_ex or None,
                      data_collator=(PackedCollator if t.packing else Collator)(tokenizer.pad_token_id or 0),
                      callbacks=callbacks)
    for noisy in (PrinterCallback, ProgressCallback):  # they print dicts; StepLog prints lines
        trainer.remove_callback(noisy)
    log.info("train: %d examples%s (%d validation, %d over cutoff), %d steps, ZeRO-%d, %s, world %d, "
             "effective batch %d%s, attention %s, gradient checkpointing %s%s", examples,
             f" in {len(train_ex)} packed rows" if t.packing else "", len(val_ex), too_long, steps, t.zero_stage,
             precision, world, effective, " rows" if t.packing else "", attn,
             "on" if t.gradient_checkpointing else "off", f", resuming from {resume.name}" if resume else "")
    if t.quantization != "none" or t.trainer_args:
        log.info("train: quantization %s, trainerArgs %s", t.quantization, t.trainer_args or "none")

    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    state = trainer.state
    first_step = int(resume.name.split("-")[1]) if resume else 0
    eval_loss = _final_eval_loss(trainer) if val_ex else None
    train_seconds = time.monotonic() - started
    train_loss = _last_epoch_loss(state.log_history, state.epoch)
    if not math.isfinite(train_loss):
        raise StageError(f"training diverged: loss {train_loss}")
    if state.max_steps != steps:
        log.warning("train: the Trainer ran %d steps, sheepdog expected %d", state.max_steps, steps)

    lora_state = _gather_trainable(trainer.model_wrapped)
    peak_bytes, peak_source = throughput.peak_memory_bytes(torch)
    peaks = throughput.gather_per_rank(round(peak_bytes / throughput.GIB, 3))  # before the group closes
    unset_hf_deepspeed_config()  # the fresh base that _save merges into must be whole
    _close_group()
    # Rates of the optimizer steps alone, the first excluded (start-up is not throughput); a
    # step trains effective rows and, on average, tokens_per_step of the epochs' tokens.
    tokens_per_step = trained_tokens * t.epochs / max(state.max_steps, 1)
    rate = throughput.rates(timer.durations, effective, tokens_per_step)
    layers, attn_dim = throughput.attention_shape(model.config)
    per_token = throughput.flops_per_token(frozen_params, lora_params, layers, attn_dim, mean_length)
    peak_flops = throughput.peak_flops(torch.cuda.get_device_name() if cuda else None)
    utilisation = throughput.mfu(rate["tokensPerSecond"] or 0.0, per_token, world, peak_flops)
    summary = {
        "trainLoss": round(train_loss, 5), "evalLoss": None if eval_loss is None else round(eval_loss, 5),
        "samples": examples, "validationSamples": len(val_ex), "samplesFrom": samples_from(records),
        "steps": state.max_steps, "step": state.global_step, "totalSteps": state.max_steps,
        "resumedFromStep": first_step, "world": world, "worldSize": world, "effectiveBatchSize": effective,
        **rate,
        "flopsPerToken": round(per_token), "peakFlopsPerDevice": peak_flops,
        "mfu": None if utilisation is None else round(utilisation, 4),
        "peakMemoryGiBPerRank": peaks, "peakMemoryGiB": max(peaks), "peakMemorySource": peak_source,
        "model": layout(config).relative(str(model_out)), "precision": precision, "zeroStage": t.zero_stage,
        "gradientCheckpointing": t.gradient_checkpointing, "attnImplementation": attn,
        **({"packedRows": len(train_ex)} if t.packing else {}),
        "trainSeconds": round(train_seconds, 1),
    }
    if rank == 0:
        _save(config, lora, lora_state, tokenizer, out, model_out, fp, summary)
        if mlflow is not None:
            try:
                mlflow.finish({**_upstream_figures(config), **summary}, state.global_step)
            except Exception as exc:  # noqa: BLE001 - the model is written: a report must not undo that
                log.warning("train: MLflow did not take the iteration's figures: %s", exc)
        from sheepdog_jobs.training import iteration_tracking

        iteration_tracking.report_iteration(
            t.report_to, Path(config.run_dir), out, config.run, config.iteration,
            figures=iteration_tracking.numeric({**_upstream_figures(config), "trainLoss": summary["trainLoss"],
                                                "evalLoss": summary["evalLoss"]}),
            pairs=iteration_tracking.sampled_pairs(Path(config.train_data[-1])))
    return summary


def _check_space(model_out: Path, needed: int, what: str) -> None:
    from sheepdog_jobs.training import free_space

    try:
        free_space.check(model_out.parent, needed, what)
    except free_space.NoSpace as exc:
        raise StageError(str(exc)) from None


def _close_group() -> None:
    """Every rank has its copy of the adapter: the last collective. The group is closed before
    rank 0 loads, merges, writes and hashes (tens of minutes for a 72B), so no rank waits in a
    collective whose timeout the save could outlast; ranks 1..N end, torchrun waits for rank 0."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _last_epoch_loss(history: list[dict], epoch: float) -> float:
    """Mean logged training loss of the last (started) epoch, as the hand loop reported it."""
    last = math.ceil(epoch) - 1 if epoch else 0
    losses = [h["loss"] for h in history if "loss" in h and h.get("epoch", 0) > last]
    return sum(losses) / len(losses) if losses else float("nan")


def _final_eval_loss(trainer) -> float:
    """Validation loss of the trained model: the end-of-epoch evaluation when the training
    ended on an epoch boundary, else one more evaluation (every rank takes part)."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if evals and evals[-1].get("step") == trainer.state.global_step:
        return float(evals[-1]["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def _upstream_figures(config) -> dict:
    """The iteration's counts that its synthesize and curate stages recorded in their manifests."""
    figures = {}
    for path in config.train_data[-1:]:
        manifest = storage.read_manifest(Path(path).parent) or {}
        figures.update((manifest.get("summary") or {}))
    synth = storage.read_manifest(Path(layout(config).stage_dir(config.iteration, "synthesize"))) or {}
    figures.update(synth.get("summary") or {})
    keep = ("generated", "assessed", "parseFailures", "meanQuality", "meanFollowing", "kept", "keepRate")
    return {k: v for k, v in figures.items() if k in keep}


def _gather_trainable(engine) -> dict:
    import deepspeed

    module = getattr(engine, "module", engine)
    state = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            with deepspeed.zero.GatheredParameters([p]):  # no-op below ZeRO-3
                state[name] = p.detach().float().cpu().clone()
    return state


def _save(config, lora, lora_state, tokenizer, out: Path, model_out: Path, fp, summary) -> None:
    """Rank 0, the process group closed. The order makes every kill recoverable: the model and
    adapter are written (hashed as they are written) under temporary names, renamed, the
    manifest written, and only then the checkpoints removed, so a retry finds either a valid
    manifest (done) or the last checkpoint (resume at its step, never step 0)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from sheepdog_jobs.training.crash_points import reach
    from sheepdog_jobs.training.hashed_save import HashingWriter

    t = config.spec.training
    writer = HashingWriter()
    storage.remove_manifest(out)
    model_out.parent.mkdir(parents=True, exist_ok=True)
    # A killed attempt's temporary directories (another pid's name): up to a model's size each.
    for stale in [*out.glob(".adapter.tmp-*"), *model_out.parent.glob(f".{model_out.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    from sheepdog_jobs.training import free_space

    adapter = sum(v.numel() * v.element_size() for v in lora_state.values())
    _check_space(model_out, free_space.needed_bytes(config.base_model, t.merge, adapter), "saving the model")
    with writer.timed("load"):
        # A fresh base in its checkpoint dtype, not the DeepSpeed-wrapped (partitioned) module;
        # the merged model keeps the base's dtype.
        base = AutoModelForCausalLM.from_pretrained(config.base_model, dtype="auto")
        peft_model = get_peft_model(base, lora)
        result = peft_model.load_state_dict(lora_state, strict=False)
    if result.unexpected_keys or len(lora_state) == 0:
        raise RuntimeError(f"LoRA weights did not map back: unexpected {result.unexpected_keys[:3]}")
    reach("save:loaded")
    adapter_tmp = out / f".adapter.tmp-{os.getpid()}"
    tmp = model_out.parent / f".{model_out.name}.tmp-{os.getpid()}"
    with writer.installed():
        with writer.timed("write"):
            peft_model.save_pretrained(adapter_tmp)  # adapter_config.json names the base model
        if t.merge:
            with writer.timed("merge"):
                merged = peft_model.merge_and_unload()
            reach("save:merged")
            # 5 GB shards (transformers' default is 50 GB): the writer holds one shard's bytes.
            with writer.timed("write"):
                merged.save_pretrained(tmp, max_shard_size="5GB")
        else:
            with writer.timed("write"):
                peft_model.save_pretrained(tmp)
    with writer.timed("write"):
        tokenizer.save_pretrained(tmp)
        storage.atomic_write_json(tmp / LINEAGE, {
            "iteration": config.iteration, "base": config.base_model, "merged": t.merge,
            "trainData": config.train_data, "run": config.run})
    hashed = {**writer.entries_under(adapter_tmp, out / "adapter"), **writer.entries_under(tmp, model_out)}
    reach("save:written")
    _replace_dir(adapter_tmp, out / "adapter")
    _replace_dir(tmp, model_out)
    reach("save:model-renamed")

    summary["saveSeconds"] = writer.rounded()
    log.info("train: save %s", ", ".join(f"{k} {v:.2f} s" for k, v in summary["saveSeconds"].items()))
    # Not the trackers' directories: W&B and TensorBoard may still touch their files, and a
    # manifest that no longer verifies would train the iteration again.
    files = [p for p in sorted((out / "adapter").rglob("*")) if p.is_file()]
    files += [out / LOG_FILE] if (out / LOG_FILE).is_file() else []
    files += [p for p in sorted(model_out.rglob("*")) if p.is_file()]
    storage.write_manifest(out, files, fp, counts={"samples": summary["samples"]}, summary=summary, hashed=hashed)
    reach("save:manifest-written")
    # The model is safe and recorded: the checkpoints (optimizer states, the size of the model
    # and more) have done their job.
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
