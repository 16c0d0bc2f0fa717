"""How the train stage sets up memory-saving and speed options from training.* (its config):
the attention kernel, DeepSpeed's ZeRO settings, and packing examples into rows.

docs/training.md says what each saves; `sheepdog plan` (docs/gpu-plan.md) puts numbers on it.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

IGNORE = -100


class OptionError(ValueError):
    """A training option this machine cannot honour."""


def attention_implementation(wanted: str, cuda: bool, flash_installed: Optional[bool] = None) -> str:
    """transformers' attn_implementation for training.attnImplementation. flash_attention_2 runs
    only on a CUDA GPU with the flash-attn package; asked for elsewhere it is an error, not a
    silent fallback (a run planned with it would not use the memory it was planned with)."""
    if wanted != "flash_attention_2":
        return wanted
    if flash_installed is None:
        flash_installed = importlib.util.find_spec("flash_attn") is not None
    if not cuda or not flash_installed:
        missing = " and ".join(m for m, ok in (("a CUDA GPU", cuda), ("the flash-attn package", flash_installed))
                               if not ok)
        raise OptionError(f"training.attnImplementation flash_attention_2 needs {missing}, which this "
                          "machine lacks: use sdpa (torch's fused attention, the default; the same memory "
                          "for activations) or a worker image with flash-attn")
    return wanted


def deepspeed_config(zero_stage: int) -> dict:
    """The DeepSpeed config. "auto": the Trainer fills these from its arguments and, for the
    ZeRO-3 bucket and prefetch sizes, from the model's hidden size h (reduce bucket h^2,
    prefetch bucket 0.9 h^2, parameters under 10 h stay whole): sized to the model, where
    DeepSpeed's fixed defaults (5e8, 5e7, 1e5 elements) suit a 7B and under-fill a 72B's layers
    (h = 8192: 6.7e7 elements a bucket, 6.0e7 prefetched). Gathered parameters stay under 1e9
    (DeepSpeed's default cap, what `sheepdog plan` assumes)."""
    zero: dict = {"stage": zero_stage}
    if zero_stage == 3:
        zero.update({
            "overlap_comm": True, "contiguous_gradients": True,
            "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 10**9, "stage3_max_reuse_distance": 10**9,
        })
    return {
        "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
        "steps_per_print": 10**9, "wall_clock_breakdown": False,
    }


def pack(examples: list[dict], cutoff: int) -> list[dict]:
    """Examples ({input_ids, labels}, each at most `cutoff` tokens) packed into rows of at most
    `cutoff` tokens, in their order (first fit into the current row). Each row carries
    position_ids that restart at 0 for every example: transformers builds a block-causal mask
    from them (masking_utils.find_packed_sequence_indices, when no attention_mask is given) and
    FlashAttention reads the same boundaries, so no token attends across examples. An
    example's first label is always IGNORE (a prompt token), so none predicts across a seam."""
    rows: list[dict] = []
    current: Optional[dict] = None
    for ex in examples:
        n = len(ex["input_ids"])
        if current is None or len(current["input_ids"]) + n > cutoff:
            current = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(current)
        current["input_ids"] += ex["input_ids"]
        current["labels"] += ex["labels"]
        current["position_ids"] += list(range(n))
    return rows


class PackedCollator:
    """Right-pads packed rows. No attention_mask (it would hide the packing from transformers):
    the padding is a block of its own (positions from 0), out of the loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(x["input_ids"]) for x in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        positions = torch.arange(width).repeat(len(batch), 1)
        for i, x in enumerate(batch):
            n = len(x["input_ids"])
            ids[i, :n], labels[i, :n] = torch.tensor(x["input_ids"]), torch.tensor(x["labels"])
            positions[i, :n] = torch.tensor(x["position_ids"])
            positions[i, n:] = torch.arange(width - n)
        return {"input_ids": ids, "labels": labels, "position_ids": positions}
