"""config.json of the two models the capacity tests plan for, written out here (no download).

Qwen1.5-72B (Qwen/Qwen1.5-72B config.json): hidden 8192, 80 layers, 64 attention heads (no
grouped-query attention), intermediate 24576, vocabulary 152064, untied embeddings, 32768
positions, bf16; qkv biases (qwen2). SmolLM2-135M (HuggingFaceTB/SmolLM2-135M): hidden 576, 30
layers, 9 heads, 3 KV heads, intermediate 1536, vocabulary 49152, tied embeddings, 8192
positions (the tiny model the tests run is its Instruct version, same shape).
"""

import json
from pathlib import Path

QWEN72B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 8192,
           "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 64,
           "intermediate_size": 24576, "vocab_size": 152064, "max_position_embeddings": 32768,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192,
           "tie_word_embeddings": True, "attention_bias": False, "torch_dtype": "bfloat16"}


def write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory
