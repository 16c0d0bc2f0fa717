"""QLoRA for the train stage (training.quantization: 4bit): the base model loaded in 4-bit NF4
by bitsandbytes, the LoRA adapter trained over it in the run's precision.

bitsandbytes' 4-bit matmuls are CUDA kernels, so a CPU stage refuses 4bit before it loads
anything (the spec refuses it already for stages.train.gpus: 0; a local `sheepdog run` on a
machine without a GPU is caught here). The merge (train.py's _save) loads the base again in
full precision and adds the adapter, so the next iteration's model is not quantized.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Optional


class QuantizationError(ValueError):
    """training.quantization cannot be honoured on this machine."""


def check(quantization: str, cuda: bool, installed: Optional[bool] = None) -> None:
    """Raise QuantizationError when 4bit cannot run here (no CUDA GPU, no bitsandbytes)."""
    if quantization == "none":
        return
    if quantization != "4bit":
        raise QuantizationError(f"training.quantization {quantization!r}: none | 4bit")
    if installed is None:
        installed = importlib.util.find_spec("bitsandbytes") is not None
    missing = [what for what, ok in (("a CUDA GPU", cuda), ("the bitsandbytes package", installed)) if not ok]
    if missing:
        raise QuantizationError(
            f"training.quantization 4bit (QLoRA) needs {' and '.join(missing)}, which this train stage "
            "lacks: bitsandbytes' 4-bit kernels run on CUDA GPUs only. Use quantization: none on CPU "
            "(LoRA over the full-precision model).")


def load_kwargs(quantization: str, dtype, zero_stage: int, device: Optional[int] = None) -> dict[str, Any]:
    """Extra from_pretrained arguments for the base model of training.

    4bit: NF4 with double quantization (the QLoRA paper's settings), computing in the run's
    precision. The packed weights are stored in that dtype too, so that DeepSpeed ZeRO-3 can
    partition them like any other parameter; below ZeRO-3 each rank holds the whole quantized
    model on its own GPU (device_map), as bitsandbytes places weights at load time."""
    if quantization == "none":
        return {}
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)}
    if zero_stage < 3 and device is not None:
        kwargs["device_map"] = {"": device}
    return kwargs


def prepare(model, quantization: str, gradient_checkpointing: bool):
    """peft's preparation of a k-bit model for training (norms in fp32, input gradients on)."""
    if quantization == "none":
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None)
