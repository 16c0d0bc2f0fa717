"""Per-rank GPU memory of sheepdog's stages, from a ModelShape and the run's settings: pure
arithmetic, in bytes. docs/gpu-plan.md states every formula and where its constants come from.
"""

from __future__ import annotations

from dataclasses import dataclass

from sheepdog.capacity.shape import ModelShape

GiB = 2**30

# Saved for backward, per token and per decoder layer, in 2-byte elements, by a LoRA model
# (all-linear, dropout > 0, adapters cast to the training dtype as DeepSpeed's bf16 engine
# does) with SDPA or FlashAttention: 18 h + 2 kv_dim + 5 intermediate + 7 r + 2 heads. The
# coefficients were counted with torch's saved-tensor hooks on LLaMA-shaped models of several
# widths (tests/capacity/test_activations.py repeats the count on the tiny model's shape):
# 18 h = the LoRA dropouts' outputs (q, k, v, o, gate, up), q and the attention output twice,
# the two RMSNorms' fp32 inputs and outputs; 5 i = gate, up, SiLU(gate), their product and the
# down projection's dropout; 7 r = the LoRA A outputs; 2 heads = the attention's fp32
# log-sum-exp. With dropout 0 PEFT skips the dropout copies: the figure is then an upper bound.
ACT_HIDDEN, ACT_KV, ACT_INTERMEDIATE, ACT_RANK, ACT_HEADS = 18, 2, 5, 7, 2
# eager attention also keeps the attention probabilities: heads x s x s, about 6 bytes per
# score (the bf16 weights, the fp32 softmax and the dropout's), counted the same way.
EAGER_SCORE_BYTES = 6
# Logits at the loss, per token and vocabulary entry: the LM head's bf16 output (2 bytes), the
# fp32 copy transformers' loss makes of it (4), cross-entropy's log-probabilities kept for
# backward (4) and their fp32 gradient (4): 14 (the loss step's peak growth measured on CPU was
# 12.0 to 14.0, bench/train_peak_memory.py's lossStep: the allocator may reuse a freed copy).
LOGIT_BYTES = 14
# Bytes per trainable parameter held by DeepSpeed's mixed-precision Adam: the 16-bit parameter
# and gradient, the fp32 master copy, momentum and variance, and 2 bytes of buffers: the 18 of
# DeepSpeed's own ZeRO-3 estimator (estimate_zero3_model_states_mem_needs).
TRAINABLE_BYTES = 18
# CUDA context, NCCL's buffers, CUDA graphs (vLLM) or allocator fragmentation (training): a
# flat reserve per rank, an assumption (commonly 1-3 GiB each in practice).
RUNTIME_RESERVE = 3 * GiB
# ZeRO-3 defaults sheepdog keeps (transformers fills "auto" from the hidden size; the live
# parameters cap is DeepSpeed's default): what may be gathered besides the largest module.
ZERO3_MAX_LIVE_PARAMETERS = 10**9
ZERO3_REDUCE_BUCKET_ELEMENTS = 5 * 10**8


@dataclass(frozen=True)
class TrainMemory:
    weights: int        # the base's frozen 16-bit weights held by this rank (its ZeRO-3 shard)
    gathered: int       # weights gathered to compute with (ZeRO-3), at peak
    lora_states: int    # LoRA parameters, gradients and Adam states under the ZeRO stage
    buffers: int        # gradient reduce buckets
    activations: int    # saved for backward, this setting
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    logits: int
    reserve: int

    def total(self, activations: int | None = None) -> int:
        act = self.activations if activations is None else activations
        return (self.weights + self.gathered + self.lora_states + self.buffers + act + self.logits
                + self.reserve)


def activation_bytes_per_token_layer(shape: ModelShape, lora_rank: int) -> int:
    return 2 * (ACT_HIDDEN * shape.hidden + ACT_KV * shape.kv_dim + ACT_INTERMEDIATE * shape.intermediate
                + ACT_RANK * lora_rank + ACT_HEADS * shape.heads)


def layer_activation_bytes(shape: ModelShape, lora_rank: int, tokens: int, seq_len: int,
                           attn: str = "sdpa") -> int:
    """One decoder layer's saved activations for `tokens` tokens in sequences of `seq_len`."""
    act = tokens * activation_bytes_per_token_layer(shape, lora_rank)
    if attn == "eager":
        sequences = max(1, tokens // max(1, seq_len))
        act += sequences * shape.heads * seq_len * seq_len * EAGER_SCORE_BYTES
    return act


def train_memory(shape: ModelShape, *, ranks: int, zero_stage: int, lora_rank: int, micro_batch: int,
                 seq_len: int, checkpointing: bool, attn: str = "sdpa",
                 param_bytes: int = 2) -> TrainMemory:
    """Peak per-rank memory of LoRA training: base frozen in 16 bits (param_bytes), LoRA
    trained with Adam under DeepSpeed ZeRO `zero_stage` over `ranks` ranks."""
    tokens = micro_batch * seq_len
    base = shape.params() * param_bytes
    lora = shape.lora_params(lora_rank)
    if zero_stage >= 3:
        weights = base // ranks
        # The largest module (embedding / LM head) gathered whole, plus the next layer that
        # prefetching brings in, within DeepSpeed's cap on live parameters (a single module
        # above the cap is still gathered whole).
        largest = shape.largest_module_params()
        gathered = min(largest + shape.layer_params(), max(largest, ZERO3_MAX_LIVE_PARAMETERS)) * param_bytes
    else:
        weights, gathered = base, 0
    # ZeRO-1/2 partition the optimizer states (and 2 the gradients); 3 also the parameters.
    states_divisor = ranks if zero_stage >= 1 else 1
    lora_states = lora * TRAINABLE_BYTES // states_divisor
    buffers = min(lora, ZERO3_REDUCE_BUCKET_ELEMENTS) * 4
    per_layer = layer_activation_bytes(shape, lora_rank, tokens, seq_len, attn)
    without = shape.layers * per_layer
    # Checkpointing keeps each layer's input (h per token, 16 bits) and recomputes one layer at
    # a time during backward: that layer's activations are alive once more.
    with_ckpt = shape.layers * tokens * shape.hidden * 2 + per_layer
    return TrainMemory(
        weights=weights, gathered=gathered, lora_states=lora_states, buffers=buffers,
        activations=with_ckpt if checkpointing else without,
        activations_without_checkpointing=without, activations_with_checkpointing=with_ckpt,
        logits=tokens * shape.vocab * LOGIT_BYTES, reserve=RUNTIME_RESERVE,
    )


def zero3_model_states_full_finetune(shape: ModelShape, ranks: int) -> int:
    """What this module's ZeRO-3 arithmetic gives for training every parameter (not LoRA):
    the case DeepSpeed's estimator covers, so the two can be compared (tests/capacity)."""
    return shape.params() * TRAINABLE_BYTES // ranks + 4 * shape.largest_module_params()


@dataclass(frozen=True)
class EngineMemory:
    budget: int          # what vLLM takes: gpu_memory_utilization x the GPU's memory
    weights: int         # this rank's share of the weights (tensor parallel)
    activations: int     # the profile run's peak (max_num_batched_tokens), vLLM sets it aside
    reserve: int
    kv_cache: int        # what is left for the KV cache (may be negative: does not load)
    kv_bytes_per_token: int
    lora: int = 0        # LoRA slots of an adapter served over the base (capacity/lora_serving.py)

    @property
    def kv_tokens(self) -> int:
        return max(0, self.kv_cache // self.kv_bytes_per_token)


def kv_bytes_per_token(shape: ModelShape, tensor_parallel: int, kv_dtype_bytes: int = 2) -> int:
    """K and V of every layer for one token on one rank. KV heads split over the ranks; with
    fewer KV heads than ranks each rank keeps one (vLLM replicates them)."""
    heads_per_rank = max(1, shape.kv_heads // tensor_parallel)
    return 2 * shape.layers * heads_per_rank * shape.head_dim * kv_dtype_bytes


def engine_memory(shape: ModelShape, *, tensor_parallel: int, gpu_bytes: int, fraction: float,
                  batched_tokens: int, max_seqs: int, lora_bytes: int = 0,
                  lora_activation_bytes: int = 0) -> EngineMemory:
    """vLLM's memory on one rank: it takes `fraction` of the GPU, holds its weight shard (and,
    serving an adapter, its LoRA slots: `lora_bytes`), sets aside the activations of a profile
    run, and makes the rest KV cache."""
    tp = tensor_parallel
    budget = int(gpu_bytes * fraction)
    weights = shape.weight_bytes() // tp
    # A forward pass over batched_tokens: the residual stream and its norm (2 h), this rank's
    # q, k, v and gate, up outputs, in 16 bits; plus the sampled positions' fp32 logits.
    per_token = 2 * shape.hidden + (shape.heads * shape.head_dim + 2 * shape.kv_dim) // tp \
        + 2 * shape.intermediate // tp
    activations = batched_tokens * per_token * 2 + max_seqs * shape.vocab * 4 + lora_activation_bytes
    kv = budget - weights - lora_bytes - activations - RUNTIME_RESERVE
    return EngineMemory(budget=budget, weights=weights, activations=activations, reserve=RUNTIME_RESERVE,
                        kv_cache=kv, kv_bytes_per_token=kv_bytes_per_token(shape, tp), lora=lora_bytes)
