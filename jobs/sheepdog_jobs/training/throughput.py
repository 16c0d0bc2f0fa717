"""The train stage's figures worth comparing across machines and with the paper: samples and
tokens per second of the optimizer steps alone, the model FLOPs utilisation (MFU), and the
peak memory of each rank.

Start-up is not throughput: loading the model, DeepSpeed's set-up, the first step (allocator
warm-up, kernel selection), evaluation and checkpoint saves between steps would make a short
CPU run and a long GPU run incomparable. StepTimer times each optimizer step from
on_step_begin to on_step_end and the figures use the steps after the first.

MFU (PaLM's definition, recomputation not counted):

    MFU = tokens/s x flops_per_token / (ranks x peak FLOP/s of one device)
    flops_per_token = 4 x N_frozen + 6 x N_lora + 12 x L x d_attn x s

N_frozen: the parameters in the base's matrix multiplies (every linear and the LM head; the
input embedding is a lookup), whose weights get no gradient under LoRA: forward 2N, the
activations' gradients 2N. N_lora: LoRA's parameters (forward 2, both gradients 4). The
attention's scores and weighted sum: 4 x L x d_attn x s FLOPs a token forward (s the mean row
length, d_attn = heads x head_dim, counted non-causal as PaLM does), x3 with backward. Gradient
checkpointing recomputes the forward (2N more a token): that is hardware work, not model work,
so it lowers MFU. Peak FLOP/s are the dense 16-bit tensor figures of the device (PEAK_FLOPS);
SHEEPDOG_PEAK_TFLOPS sets it for any other device. A CPU has no reliable figure: MFU is null
there unless SHEEPDOG_PEAK_TFLOPS is set.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from transformers import TrainerCallback

from sheepdog_jobs.training.mfu import PEAK_ENV, PEAK_FLOPS, flops_per_token, mfu, peak_flops  # noqa: F401

GIB = 2 ** 30


def steady_seconds(durations: Sequence[float], skip: int = 1) -> tuple[float, int]:
    """(seconds, steps) of the optimizer steps after the first ``skip`` (warm-up); a run of
    ``skip`` steps or fewer has nothing else and counts them all."""
    kept = list(durations[skip:]) if len(durations) > skip else list(durations)
    return sum(kept), len(kept)


def rates(durations: Sequence[float], samples_per_step: int, tokens_per_step: float) -> dict:
    """samplesPerSecond, tokensPerSecond and stepSeconds of the steady steps."""
    seconds, steps = steady_seconds(durations)
    if steps == 0 or seconds <= 0:
        return {"samplesPerSecond": None, "tokensPerSecond": None, "stepSeconds": None, "timedSteps": 0}
    return {"samplesPerSecond": round(steps * samples_per_step / seconds, 3),
            "tokensPerSecond": round(steps * tokens_per_step / seconds, 1),
            "stepSeconds": round(seconds / steps, 4), "timedSteps": steps}


def matmul_params(model) -> tuple[int, int]:
    """(N_frozen, N_lora) of a peft-wrapped causal LM: parameters of the base's linears and LM
    head, and the trainable LoRA ones. ZeRO-3 partitions parameters (numel 0 on a rank);
    ds_numel is then the whole count. The input embedding is left out unless tied to the head."""
    def count(p) -> int:
        return int(getattr(p, "ds_numel", 0) or p.numel())

    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    frozen = lora = 0
    seen = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            lora += count(p)
        elif p is embedding and not tied:
            continue
        elif p.dim() >= 2 or getattr(p, "ds_shape", None) is not None and len(p.ds_shape) >= 2:
            frozen += count(p)
    return frozen, lora


def attention_shape(config) -> tuple[int, int]:
    """(layers, heads x head_dim) of a transformers config."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, heads * head_dim


def peak_memory_bytes(torch) -> tuple[int, str]:
    """This process's peak: the CUDA allocator's on a GPU (what the model, activations and
    optimizer held at most), else the resident set size's high-water mark."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda.max_memory_allocated"
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "maxrss"  # Linux: KiB


def gather_per_rank(value: float) -> list[float]:
    """``value`` of every rank, in rank order (this rank's alone outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return [float(v) for v in out]


class StepTimer(TrainerCallback):
    """Seconds of each optimizer step of this attempt (on_step_begin to on_step_end): the
    gradient-accumulation micro-steps and the optimizer's update, nothing between steps."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.durations: list[float] = []
        self._began: Optional[float] = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self._began is not None:
            self.durations.append(self.clock() - self._began)
            self._began = None
