"""Inference engines behind one interface: vLLM where installed, transformers otherwise."""

from __future__ import annotations

import importlib.util
import logging

from sheepdog_jobs.engines.base import Completion, Engine, EngineError
from sheepdog_jobs.engines.prompting import ChatTemplateError, PromptFormat

__all__ = ["Completion", "Engine", "EngineError", "ChatTemplateError", "PromptFormat",
           "resolve_engine", "create_engine"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine(name: str) -> str:
    """auto -> vllm when importable, else transformers. Decided without importing vLLM."""
    if name == "auto":
        return "vllm" if vllm_available() else "transformers"
    if name == "vllm" and not vllm_available():
        raise EngineError("engine: vllm was requested but vLLM is not installed in this image")
    if name not in ("vllm", "transformers"):
        raise EngineError(f"unknown engine {name!r} (auto | vllm | transformers)")
    return name


def create_engine(name: str, model: str, chat_template: str = "none", **kwargs) -> Engine:
    name = resolve_engine(name)
    if name == "vllm":
        from sheepdog_jobs.engines.vllm_engine import VllmEngine

        return VllmEngine(model, chat_template, **kwargs)
    from sheepdog_jobs.engines.hf import TransformersEngine

    if kwargs.pop("engine_args", None):
        # engine auto on an image without vLLM (the spec refuses engineArgs with engine transformers)
        logging.getLogger("sheepdog_jobs").warning(
            "engineArgs are vLLM's; the transformers engine runs without them")
    kwargs.pop("seed", None)
    kwargs.pop("tensor_parallel", None)
    return TransformersEngine(model, chat_template, **kwargs)
