"""training/options.py: the attention kernel, the DeepSpeed config, packing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sheepdog_jobs.training.options import (IGNORE, OptionError, PackedCollator, attention_implementation,
                                            deepspeed_config, pack)


def test_attention_implementation():
    assert attention_implementation("sdpa", cuda=False) == "sdpa"
    assert attention_implementation("eager", cuda=True) == "eager"
    assert attention_implementation("flash_attention_2", cuda=True, flash_installed=True) == "flash_attention_2"
    with pytest.raises(OptionError, match="needs a CUDA GPU, which this machine lacks: use sdpa"):
        attention_implementation("flash_attention_2", cuda=False, flash_installed=True)
    with pytest.raises(OptionError, match="needs a CUDA GPU and the flash-attn package"):
        attention_implementation("flash_attention_2", cuda=False, flash_installed=False)
    # this machine: no GPU, so never silently flash
    with pytest.raises(OptionError):
        attention_implementation("flash_attention_2", cuda=False)


def test_zero3_buckets_are_sized_to_the_model():
    """transformers fills the "auto" bucket and prefetch sizes from the model's hidden size."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    try:
        hf = HfTrainerDeepSpeedConfig(deepspeed_config(3))
        hf.trainer_config_finalize(SimpleNamespace(get_warmup_steps=lambda n: 1),
                                   SimpleNamespace(config=SimpleNamespace(hidden_size=8192)), 10)
    finally:
        unset_hf_deepspeed_config()  # the config registers itself globally (zero.Init for later loads)
    zero = hf.config["zero_optimization"]
    assert zero["reduce_bucket_size"] == 8192 ** 2
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 8192 ** 2)
    assert zero["stage3_param_persistence_threshold"] == 81920
    assert zero["stage3_max_live_parameters"] == 10**9
    assert deepspeed_config(2)["zero_optimization"] == {"stage": 2}


def ex(prompt: int, answer: int, start: int) -> dict:
    ids = list(range(start, start + prompt + answer))
    return {"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]}


def test_pack_fills_rows_in_order_and_restarts_positions():
    examples = [ex(2, 2, 10), ex(1, 2, 20), ex(3, 3, 30), ex(1, 1, 40)]
    rows = pack(examples, cutoff=8)
    assert [len(r["input_ids"]) for r in rows] == [7, 8]  # 4+3 | 6+2: the third does not fit in row one
    assert rows[0]["position_ids"] == [0, 1, 2, 3, 0, 1, 2]
    assert rows[0]["input_ids"] == examples[0]["input_ids"] + examples[1]["input_ids"]
    assert rows[1]["labels"] == examples[2]["labels"] + examples[3]["labels"]
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(e["input_ids"]) for e in examples)


def test_packed_examples_do_not_see_each_other():
    """A packed row gives each example the logits it gets alone: transformers builds the
    block-causal mask from the restarting positions (the padding is a block of its own)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=100, max_position_embeddings=64)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).eval()
    model.config.use_cache = False  # as the train stage sets it (with a cache transformers ignores packing)
    examples = [ex(2, 3, 1), ex(1, 4, 20), ex(3, 2, 40)]
    rows = pack(examples, cutoff=12)
    batch = PackedCollator(pad_id=0)(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 10)
    assert batch["labels"][1, 5:].eq(IGNORE).all()  # padding out of the loss
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone = [model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples]
    torch.testing.assert_close(packed[0, :5], alone[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed[0, 5:10], alone[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed[1, :5], alone[2], rtol=1e-4, atol=1e-5)
    # without the restarting positions the second example would attend to the first
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"][:1]).logits
    assert not torch.allclose(leaky[0, 5:10], alone[1], atol=1e-3)
