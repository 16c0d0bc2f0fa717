"""What serving a LoRA adapter over the base costs an engine's rank (training.merge: false).

With merge: false an iteration's model is its adapter, served as base + adapter
(jobs/sheepdog_jobs/engines/adapters.py). The plan counts, for each stage that may serve one:

* vLLM (enable_lora, max_loras 1, max_lora_rank the smallest slot holding the adapter's r):
  at start it allocates, for every linear of every layer it can put LoRA on (q/k/v, o,
  gate/up, down: all of them, whatever modules the adapter targets), stacked A and B buffers of
  max_loras x max_lora_rank in the model's dtype (and, in the families whose vLLM class declares
  embedding_modules, such as LLaMA but not Qwen2, for the embedding and the LM head), split as
  the base layer is (vLLM 0.32,
  lora/layers/column_parallel_linear.py and row_parallel_linear.py: a column-parallel layer
  keeps A whole and splits B's output, a row-parallel one splits A's input and keeps B
  whole). The adapter itself is read into host memory and copied into that slot. Its forward
  also keeps a fp32 buffer of slices x tokens x max_lora_rank per layer call (punica's
  shrink output), counted in the profile pass's activations.
* transformers: peft loads the adapter (fp32) over the whole base and folds it in: the adapter
  is on the device beside the weights until it is unloaded.
"""

from __future__ import annotations

from typing import Optional

from sheepdog.capacity.shape import ModelShape

# vLLM allocates LoRA slots for a maximum rank taken from this list (vllm.config.lora's
# possible_max_ranks); the adapter's r must not exceed it, and a larger slot costs memory.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# sheepdog's engines serve one adapter (vllm_engine.py: max_loras=1).
VLLM_MAX_LORAS = 1
# q, k, v: the widest packed layer's slices, whose shrink buffer is the largest one alive.
_QKV_SLICES = 3


def vllm_slot_rank(rank: Optional[int]) -> int:
    """The smallest LoRA slot vLLM offers that holds an adapter of rank ``rank`` (default 8)."""
    r = rank or 8
    for slot in VLLM_LORA_RANKS:
        if slot >= r:
            return slot
    raise ValueError(f"LoRA rank {r} is above the largest vLLM serves ({VLLM_LORA_RANKS[-1]})")


def vllm_slot_bytes(shape: ModelShape, tensor_parallel: int, max_lora_rank: int,
                    max_loras: int = VLLM_MAX_LORAS) -> int:
    """Bytes of vLLM's stacked LoRA buffers on one rank: per layer, max_loras x max_lora_rank x
    (7 h + (2 q + 2 kv + 3 i) / tp) elements in the model's dtype (+ 2 (V + h) x the same for
    the embedding and the LM head of the families that have LoRA there).

    A elements: q, k, v and gate, up read the whole hidden state (5 h), o and down their split
    input (q / tp, i / tp). B elements: q, k, v and gate, up write their split output
    ((q + 2 kv + 2 i) / tp), o and down the whole hidden state (2 h)."""
    tp = tensor_parallel
    h, q, i = shape.hidden, shape.heads * shape.head_dim, shape.intermediate
    kv = max(1, shape.kv_heads // tp) * shape.head_dim * tp  # fewer KV heads than ranks: replicated
    per_layer = 7 * h + (2 * q + 2 * kv + 3 * i) // tp
    # Families with LoRA on the embedding and the LM head (shape.vllm_lora_embeddings): A and B
    # of each, vocabulary x r and h x r, whole on every rank (layers/vocab_parallel_embedding.py,
    # logits_processor.py). Measured on the tiny model (LLaMA) by bench/adapter_generation.py.
    embeddings = 2 * (shape.vocab + h) if shape.vllm_lora_embeddings else 0
    return max_loras * max_lora_rank * (shape.layers * per_layer + embeddings) * shape.dtype_bytes


def vllm_activation_bytes(batched_tokens: int, max_lora_rank: int) -> int:
    """punica's fp32 shrink buffer of the profile pass's widest layer call (q, k, v)."""
    return _QKV_SLICES * batched_tokens * max_lora_rank * 4


def transformers_adapter_bytes(shape: ModelShape, rank: int) -> int:
    """The adapter peft loads beside the whole base (fp32, as PEFT saves it)."""
    return shape.lora_params(rank) * 4
