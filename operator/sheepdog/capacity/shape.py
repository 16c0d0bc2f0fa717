"""A model's shape from its config.json alone (no weights): what the capacity plan needs.

Decoder-only transformers of the LLaMA / Qwen2 / Mistral family (the ones I-SHEEP trains):
token embedding, L layers of attention (grouped-query: num_key_value_heads) and a gated
(SwiGLU) MLP, a final norm and an LM head (tied to the embedding or not).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "bf16": 2, "fp16": 2, "fp32": 4}
# Architectures whose q, k and v projections carry a bias without the config saying so.
QKV_BIAS = {"qwen2"}
# Families whose vLLM model class declares LoRA on the input embedding and the LM head
# (`embedding_modules`, vLLM 0.32): serving an adapter, vLLM allocates slots for those too
# (capacity/lora_serving.py). Qwen2 (the paper's Qwen1.5) does not.
VLLM_LORA_EMBEDDINGS = {"llama", "mistral", "mixtral", "qwen3", "qwen3_moe", "granite", "granitemoe", "minicpm",
                        "exaone", "exaone4", "nemotron", "phimoe", "jamba", "cohere"}


class ModelConfigError(ValueError):
    """config.json missing, unreadable, or not a decoder shape the plan understands."""


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim: int
    tied_embeddings: bool
    max_position: int
    dtype_bytes: int
    qkv_bias: bool = False
    source: str = ""
    vllm_lora_embeddings: bool = False  # VLLM_LORA_EMBEDDINGS

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    # --- parameter counts (exact for this family, up to norms' and biases' rounding) --------
    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear of one layer: q, k, v, o, gate, up, down."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def layer_params(self) -> int:
        biases = (self.heads * self.head_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return sum(a * b for a, b in self.linears()) + biases + 2 * self.hidden  # + two norms

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def params(self) -> int:
        head = 0 if self.tied_embeddings else self.embedding_params()
        return self.embedding_params() + head + self.layers * self.layer_params() + self.hidden

    def largest_module_params(self) -> int:
        """The biggest single weight ZeRO-3 gathers whole: the embedding or the LM head (V x h)
        for every model of this family, else one MLP projection."""
        return max(self.embedding_params(), max(a * b for a, b in self.linears()))

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear of every layer (targetModules all-linear, the LM head excluded
        as PEFT excludes it): r x (in + out) per linear."""
        return self.layers * sum(rank * (a + b) for a, b in self.linears())

    def weight_bytes(self) -> int:
        return self.params() * self.dtype_bytes


def shape_from_config(config: dict, source: str = "") -> ModelShape:
    """ModelShape of a Hugging Face config.json (already parsed). Multimodal configs keep the
    language model under text_config."""
    if isinstance(config.get("text_config"), dict) and "hidden_size" not in config:
        config = {**config["text_config"], "model_type": config["text_config"].get("model_type", "")}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "vocab_size") if not isinstance(config.get(k), int) or config[k] <= 0]
    if missing:
        raise ModelConfigError(f"{source or 'config.json'}: not a decoder config the plan understands "
                               f"(missing or not a positive integer: {', '.join(missing)})")
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
    return ModelShape(
        hidden=hidden, layers=config["num_hidden_layers"], heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        intermediate=config["intermediate_size"], vocab=config["vocab_size"],
        head_dim=int(config.get("head_dim") or hidden // heads),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_position=int(config.get("max_position_embeddings") or 4096),
        dtype_bytes=DTYPE_BYTES.get(dtype, 2),
        qkv_bias=bool(config.get("attention_bias")) or config.get("model_type") in QKV_BIAS,
        vllm_lora_embeddings=config.get("model_type") in VLLM_LORA_EMBEDDINGS,
        source=source,
    )


def read_shape(path: str | os.PathLike) -> ModelShape:
    """The shape of a config.json file, or of a model directory that holds one."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelConfigError(f"{p}: cannot read: {err}") from None
    if not isinstance(config, dict):
        raise ModelConfigError(f"{p}: not a JSON object")
    return shape_from_config(config, str(p))


def hub_cache_dirs(model_id: str) -> list[Path]:
    """Snapshots of a hub model in the local Hugging Face cache (read only; nothing is fetched)."""
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache"
                                                                         / "huggingface")) / "hub")
    snapshots = home / ("models--" + model_id.replace("/", "--")) / "snapshots"
    return sorted(snapshots.glob("*")) if snapshots.is_dir() else []


def locate_config(base: str, search: Iterable[Path] = ()) -> Optional[Path]:
    """config.json of model.base if this machine can read it: the path as given (absolute, or
    relative to each of `search`), else a hub id's snapshot in the local cache. None otherwise:
    a hub id not cached, or a path on a volume this machine does not mount."""
    candidates = [Path(base)] if Path(base).is_absolute() else [Path(d) / base for d in search]
    candidates += hub_cache_dirs(base) if "/" in base and not base.startswith(("/", ".")) else []
    for c in candidates:
        if (c / "config.json").is_file():
            return c / "config.json"
    return None


def shape_for(base: str, model_config: Optional[str] = None, search: Iterable[Path] = ()) -> ModelShape:
    """The shape of a run's model: `model_config` (a config.json or a directory with one) when
    given, else model.base's own config.json if this machine can read it (locate_config).
    ModelConfigError says how to give one when neither works."""
    if model_config:
        return read_shape(model_config)
    found = locate_config(base, search)
    if found is None:
        raise ModelConfigError(
            f"model.base {base!r} is a hub id or a path this machine cannot read (it is read on the "
            "cluster's volume): give the model's config.json with --model-config FILE")
    return read_shape(found)
