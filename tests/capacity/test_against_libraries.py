"""The planner's counts against the libraries that will do the work: the real transformers
module of Qwen1.5-72B's shape (built on the meta device: no memory, no weights), PEFT's LoRA
on it, and DeepSpeed's own ZeRO-3 estimator."""

from __future__ import annotations

import pytest

from sheepdog.capacity import shape_from_config
from sheepdog.capacity.memory import zero3_model_states_full_finetune
from tests.capacity.shapes import QWEN72B, SMOLLM2
from tests.jobs.conftest import tiny_model  # noqa: F401  (session fixture: the converted SmolLM2)

import torch  # noqa: E402  (the venv always has it; a missing torch must fail, not skip)


@pytest.fixture(scope="module")
def qwen72b_meta():
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**{k: v for k, v in QWEN72B.items() if k not in ("architectures", "model_type", "torch_dtype")})
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def test_parameter_counts_match_transformers_and_peft(qwen72b_meta):
    from peft import LoraConfig, get_peft_model

    shape = shape_from_config(QWEN72B)
    assert shape.params() == qwen72b_meta.num_parameters() == 72_287_920_128  # "72.3B" on the model card
    lora = get_peft_model(qwen72b_meta, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable, _ = lora.get_nb_trainable_parameters()
    assert shape.lora_params(8) == trainable == 104_857_600  # 0.42 GB as an fp32 adapter
    lora.unload()


def test_zero3_model_states_match_deepspeeds_estimator(qwen72b_meta):
    """DeepSpeed's estimator covers full fine-tuning (every parameter trained): for that case the
    planner's ZeRO-3 arithmetic must give DeepSpeed's per-GPU figure, with DeepSpeed's own
    largest layer (found by walking the real module)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs, model_to_params

    shape = shape_from_config(QWEN72B)
    # model_to_params's total dedupes by data_ptr, which is 0 for every meta tensor: take the
    # total from transformers, the largest layer from DeepSpeed's walk.
    _, largest = model_to_params(qwen72b_meta)
    assert largest == shape.largest_module_params()
    for gpus in (8, 16):
        _, ds_gpu, _ = estimate_zero3_model_states_mem_needs(
            qwen72b_meta.num_parameters(), largest, num_gpus_per_node=gpus, num_nodes=1, cpu_offload=False)
        assert zero3_model_states_full_finetune(shape, gpus) == pytest.approx(ds_gpu, rel=1e-6)


def test_lora_states_are_far_below_full_finetuning():
    """LoRA under ZeRO-3 on 8 GPUs: the frozen base costs 2 bytes a parameter (sharded) instead
    of DeepSpeed's 18, and the trained parameters are 0.15 % of the model."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    from sheepdog.capacity.memory import train_memory

    shape = shape_from_config(QWEN72B)
    m = train_memory(shape, ranks=8, zero_stage=3, lora_rank=8, micro_batch=1, seq_len=1024, checkpointing=True)
    _, ds_gpu, _ = estimate_zero3_model_states_mem_needs(shape.params(), shape.largest_module_params(),
                                                         num_gpus_per_node=8, cpu_offload=False)
    states = m.weights + m.gathered + m.lora_states
    assert states < ds_gpu / 7
    # and above DeepSpeed's lower bound with everything offloaded but the largest layer
    _, offloaded, _ = estimate_zero3_model_states_mem_needs(shape.params(), shape.largest_module_params(),
                                                            num_gpus_per_node=8, cpu_offload=True)
    assert states > offloaded


@pytest.mark.model
def test_tiny_model_shape_matches_its_weights(tiny_model):
    """The shape read from the tiny model's own config.json counts the parameters its
    safetensors file holds (134,515,008: SmolLM2-135M)."""
    import json
    import struct
    from pathlib import Path

    from sheepdog.capacity import read_shape

    path = Path(tiny_model) / "model.safetensors"
    with path.open("rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    stored = 0
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for d in info["shape"]:
                n *= d
            stored += n
    shape = read_shape(tiny_model)
    assert shape.params() == stored == shape_from_config(SMOLLM2).params() == 134_515_008
