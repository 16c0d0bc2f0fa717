"""The planner's activation figures against what torch really keeps for backward.

A LLaMA model of the tiny model's shape (random weights, a few layers: only the per-layer
figure is compared) with LoRA as the train stage sets it (all-linear, dropout 0.05, cast to
bf16 as DeepSpeed's bf16 engine casts the whole module). torch's saved-tensor hooks see every
tensor autograd keeps; counted once per storage, parameters excluded. The difference between
an L+1- and an L-layer model is one layer's activations, which the planner multiplies by the
model's layers (docs/gpu-plan.md)."""

from __future__ import annotations

import pytest

from sheepdog.capacity import shape_from_config
from sheepdog.capacity.memory import layer_activation_bytes
from tests.capacity.shapes import SMOLLM2

import torch  # noqa: E402  (the venv always has it; a missing torch must fail, not skip)

SEQ = 128


def saved_bytes(layers: int, attn: str, checkpointing: bool, config: dict = SMOLLM2) -> int:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    keys = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
            "vocab_size", "max_position_embeddings", "tie_word_embeddings")
    cfg = LlamaConfig(num_hidden_layers=layers, **{k: config[k] for k in keys if k in config})
    cfg._attn_implementation = attn
    model = LlamaForCausalLM(cfg)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM")).to(torch.bfloat16)
    model.train()
    if checkpointing:  # as the train stage turns it on (training.gradientCheckpointing)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, cfg.vocab_size, (1, SEQ))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


def per_layer(attn: str = "sdpa", checkpointing: bool = False, config: dict = SMOLLM2) -> int:
    return saved_bytes(3, attn, checkpointing, config) - saved_bytes(2, attn, checkpointing, config)


def test_one_layers_activations_without_checkpointing():
    planned = layer_activation_bytes(shape_from_config(SMOLLM2), 8, SEQ, SEQ, "sdpa")
    assert per_layer() == pytest.approx(planned, rel=0.01)


def test_a_wider_mlp_and_full_attention():
    """Another ratio of hidden, KV and MLP widths: the coefficients are not fitted to one shape."""
    config = {**SMOLLM2, "hidden_size": 256, "intermediate_size": 2048, "num_attention_heads": 4,
              "num_key_value_heads": 4, "head_dim": 64}
    planned = layer_activation_bytes(shape_from_config(config), 8, SEQ, SEQ, "sdpa")
    assert per_layer(config=config) == pytest.approx(planned, rel=0.01)


def test_eager_attention_keeps_the_scores():
    planned = layer_activation_bytes(shape_from_config(SMOLLM2), 8, SEQ, SEQ, "eager")
    assert per_layer("eager") == pytest.approx(planned, rel=0.05)
    assert planned > layer_activation_bytes(shape_from_config(SMOLLM2), 8, SEQ, SEQ, "sdpa")


def test_checkpointing_keeps_only_each_layers_input():
    """With checkpointing a layer keeps its input (hidden x 2 bytes a token); its other
    activations come back one layer at a time during backward."""
    shape = shape_from_config(SMOLLM2)
    assert per_layer(checkpointing=True) == SEQ * shape.hidden * 2
