"""vLLM's logging in the stage programs (engines/vllm_logging.py): WARNING by default, and its
per-weight dtype warnings folded into one line per cast."""

from __future__ import annotations

import io
import logging
import os

from sheepdog_jobs.engines import vllm_logging


def vllm_like_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger configured as vLLM configures "vllm": its own handler, no propagation."""
    stream = io.StringIO()
    logger = logging.getLogger(name)
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_weight_cast_warnings_are_counted_not_printed():
    logger, stream = vllm_like_logger("vllm_test_casts")
    emitters = ("vllm_test_casts.model_executor.models.utils",)
    flt = vllm_logging.install("vllm_test_casts", emitters)
    assert vllm_logging.install("vllm_test_casts", emitters) is flt  # once per process
    # vLLM configures its logging again when it builds an engine: new handlers, without the
    # filter (what let the warnings through when the filter sat on the handlers only)
    logger.handlers[:] = [logging.StreamHandler(stream)]
    child = logging.getLogger(emitters[0])
    for i in range(90):
        child.warning("Attempted to load weight layers.%d.mlp.down_proj.weight with dtype torch.float32 "
                      "into parameter with dtype torch.bfloat16", i)
    child.warning("Attempted to load weight norm.weight with dtype torch.float16 into parameter with dtype "
                  "torch.bfloat16")
    child.warning("libtcmalloc is not found in LD_PRELOAD")
    assert stream.getvalue().splitlines() == ["libtcmalloc is not found in LD_PRELOAD"]
    assert flt.summary() == ["vLLM loaded 1 weights stored as torch.float16 into torch.bfloat16 parameters",
                             "vLLM loaded 90 weights stored as torch.float32 into torch.bfloat16 parameters"]
    assert flt.summary() == []  # reported once


def test_warning_is_the_default_level_and_the_users_wins(monkeypatch):
    monkeypatch.delenv(vllm_logging.LEVEL_ENV, raising=False)
    vllm_logging.default_level()
    assert os.environ[vllm_logging.LEVEL_ENV] == "WARNING"
    monkeypatch.setenv(vllm_logging.LEVEL_ENV, "DEBUG")
    vllm_logging.default_level()
    assert os.environ[vllm_logging.LEVEL_ENV] == "DEBUG"
