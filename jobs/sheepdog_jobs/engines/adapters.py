"""A model reference that is a LoRA adapter (training.merge: false), served as base + adapter.

With merge: false the train stage writes the adapter (adapter_config.json, no config.json) as
the model of its iteration, and adapter_config.json's base_model_name_or_path names the model
it was trained over (the run's base under one_base, total_base and direct). The engines load
that base and apply the adapter at generation time: vLLM through its LoRA support
(enable_lora, one LoRARequest on every request), transformers through peft. An iteration then
writes a ~0.4 GB adapter instead of a 145 GB merged 72B model.

An adapter whose base is itself an adapter (one_last with merge: false: each iteration trains
over the previous one's model) would need the adapters stacked, which neither engine serves:
the spec refuses that combination, and ``resolve`` says so if it meets one anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sheepdog.capacity.lora_serving import vllm_slot_rank
from sheepdog_jobs.engines.base import EngineError

ADAPTER_CONFIG = "adapter_config.json"

class AdapterError(EngineError):
    """A model reference that is an adapter the engines cannot serve."""


@dataclass(frozen=True)
class Served:
    """What an engine loads for a model reference: ``base`` weights, and the ``adapter``
    directory applied over them (None: the reference is a whole model)."""

    base: str
    adapter: Optional[str] = None
    rank: Optional[int] = None  # the adapter's r


def is_adapter(model: str) -> bool:
    """A directory holding an unmerged LoRA adapter (no config.json of its own)."""
    p = Path(model).expanduser()
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def resolve(model: str) -> Served:
    """The base and adapter behind a model reference (a hub id or a whole model: itself)."""
    if not is_adapter(model):
        return Served(base=model)
    path = Path(model).expanduser() / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path}: not a readable adapter config ({exc})") from None
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise AdapterError(f"{path}: names no base model (base_model_name_or_path)")
    if is_adapter(base):
        raise AdapterError(f"{model} is an adapter over another adapter ({base}); stacked adapters cannot be "
                           "served: training.strategy one_last needs training.merge: true")
    rank = config.get("r")
    return Served(base=base, adapter=str(Path(model).expanduser()), rank=int(rank) if rank else None)


def vllm_max_lora_rank(rank: Optional[int]) -> int:
    """The smallest LoRA slot vLLM offers that holds an adapter of rank ``rank`` (the slot
    sheepdog plan counts: sheepdog.capacity.lora_serving)."""
    try:
        return vllm_slot_rank(rank)
    except ValueError as exc:
        raise AdapterError(str(exc)) from None
