"""Pass-through knobs (sheepdog/api/passthrough.py): training.trainerArgs and engineArgs are
checked by name against the field lists generated into the package, the lists equal the
installed transformers' TrainingArguments and vLLM's EngineArgs, and the keys sheepdog sets
itself are refused with the spec field to use. training.quantization 4bit needs a train GPU."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sheepdog.api import passthrough, passthrough_fields
from sheepdog.api.overrides import apply_overrides
from sheepdog.api.spec import RunSpec


def spec(**fields) -> RunSpec:
    return RunSpec.model_validate({"model": {"base": "m"}, **fields})


def test_generated_field_lists_match_the_installed_transformers_and_vllm():
    # `python -m sheepdog.api.passthrough` regenerates the file after an upgrade
    installed = passthrough.installed_fields()
    assert passthrough.render(installed) == passthrough.GENERATED.read_text()
    assert "gradient_checkpointing" in installed["TRAINING_ARGUMENTS"]
    assert "max_model_len" in installed["ENGINE_ARGS"]


@pytest.mark.parametrize("owned,known", [(passthrough.TRAINER_OWNED, passthrough_fields.TRAINING_ARGUMENTS),
                                         (passthrough.ENGINE_OWNED, passthrough_fields.ENGINE_ARGS)])
def test_every_key_sheepdog_owns_is_a_real_field(owned, known):
    # a renamed field upstream would otherwise slip past the refusal as "unknown"
    assert sorted(set(owned) - set(known)) == []


def test_trainer_args_pass_as_given():
    args = {"optim": "adamw_torch_fused", "weight_decay": 0.01, "lr_scheduler_kwargs": {"num_cycles": 2}}
    assert spec(training={"trainerArgs": args}).training.trainer_args == args
    assert spec().training.trainer_args == {}


def test_an_unknown_trainer_arg_names_the_close_field():
    with pytest.raises(ValidationError) as err:
        spec(training={"trainerArgs": {"wieght_decay": 0.1}})
    text = str(err.value)
    assert "training.trainerArgs: wieght_decay is not a field of TrainingArguments (transformers " in text
    assert "did you mean weight_decay?" in text


@pytest.mark.parametrize("key,field", [("learning_rate", "training.learningRate"),
                                       ("num_train_epochs", "training.epochs"),
                                       ("report_to", "training.reportTo"),
                                       ("gradient_checkpointing", "training.gradientCheckpointing"),
                                       ("deepspeed", "training.zeroStage")])
def test_a_trainer_arg_that_a_spec_field_sets_is_refused_with_that_field(key, field):
    with pytest.raises(ValidationError, match=f"{key} is set by sheepdog; use {field}"):
        spec(training={"trainerArgs": {key: 1}})


def test_engine_args_pass_and_unknown_or_owned_keys_are_refused():
    args = {"max_model_len": 4096, "dtype": "bfloat16", "max_num_seqs": 64, "quantization": "fp8"}
    assert spec(engineArgs=args).engine_args == args
    with pytest.raises(ValidationError, match=r"engineArgs: maxModelLen is not a field of vLLM's EngineArgs "
                                              r"\(vllm [0-9.]+\) \(did you mean max_model_len\?\)"):
        spec(engineArgs={"maxModelLen": 4096})
    with pytest.raises(ValidationError, match="engineArgs: tensor_parallel_size is set by sheepdog; use stages"):
        spec(engineArgs={"tensor_parallel_size": 2})


def test_engine_args_with_the_transformers_engine_are_refused():
    with pytest.raises(ValidationError, match="engineArgs are vLLM's EngineArgs: engine transformers"):
        spec(engine="transformers", engineArgs={"max_model_len": 512})
    assert spec(engine="transformers").engine_args == {}


def test_qlora_needs_a_train_gpu():
    with pytest.raises(ValidationError, match="training.quantization 4bit .* needs a CUDA GPU: stages.train.gpus is 0"):
        spec(training={"quantization": "4bit"}, stages={"train": {"gpus": 0}})
    assert spec(training={"quantization": "4bit"}, stages={"train": {"gpus": 1}}).training.quantization == "4bit"
    with pytest.raises(ValidationError):
        spec(training={"quantization": "8bit"})


def test_set_reaches_the_pass_through_mappings():
    run = {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun", "metadata": {"name": "r"},
           "spec": {"model": {"base": "m"}}}
    out = apply_overrides(run, ["training.trainerArgs.weight_decay=0.05", "engineArgs.max_model_len=2048"])
    checked = RunSpec.model_validate(out["spec"])
    assert checked.training.trainer_args == {"weight_decay": 0.05}
    assert checked.engine_args == {"max_model_len": 2048}
