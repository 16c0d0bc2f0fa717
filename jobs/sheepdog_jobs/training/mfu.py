"""MFU arithmetic, pure (no torch, no transformers): the train stage's summary
(training/throughput.py) and the GPU smoke kit (bench/gpu_smoke, which carries this file)
compute it the same way. The formula and its terms: training/throughput.py's docstring and
docs/gpu-plan.md."""

from __future__ import annotations

import os
from typing import Optional

PEAK_ENV = "SHEEPDOG_PEAK_TFLOPS"
# Dense bf16/fp16 tensor-core peak of one device, FLOP/s (the vendors' data sheets, no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
              "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_flops(device_name: Optional[str], environ=os.environ) -> Optional[float]:
    """Peak FLOP/s of one device: SHEEPDOG_PEAK_TFLOPS if set, else the table entry whose name
    appears in the device's name (torch.cuda.get_device_name), else None (a CPU, or unknown)."""
    raw = environ.get(PEAK_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{PEAK_ENV}={raw!r} is not a number (TFLOP/s of one device)") from None
        if value <= 0:
            raise ValueError(f"{PEAK_ENV}={raw!r} must be positive")
        return value * 1e12
    if not device_name:
        return None
    upper = device_name.upper()
    for name, flops in PEAK_FLOPS.items():
        if name in upper:
            return flops
    return None


def flops_per_token(frozen_params: int, lora_params: int, layers: int, attn_dim: int, mean_row: float) -> float:
    """Model FLOPs of one trained token (module docstring)."""
    return 4.0 * frozen_params + 6.0 * lora_params + 12.0 * layers * attn_dim * mean_row


def mfu(tokens_per_second: float, per_token: float, ranks: int, peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation in [0, 1], or None without a peak figure."""
    if not peak or ranks < 1 or tokens_per_second <= 0:
        return None
    return tokens_per_second * per_token / (ranks * peak)
