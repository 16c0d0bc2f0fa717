"""The train stage's throughput figures (jobs/sheepdog_jobs/training/throughput.py): the
arithmetic of steady rates, FLOPs per token, MFU and peak FLOP/s, the parameter counts MFU
uses on a real (tiny, random) peft model, and the step timer."""

from __future__ import annotations

import pytest

from sheepdog_jobs.training import throughput


def test_rates_leave_out_the_first_step():
    # the first step (warm-up) took 10 s, the three after it 1, 2 and 3 s
    r = throughput.rates([10.0, 1.0, 2.0, 3.0], samples_per_step=4, tokens_per_step=1000)
    assert r == {"samplesPerSecond": 2.0, "tokensPerSecond": 500.0, "stepSeconds": 2.0, "timedSteps": 3}


def test_a_single_step_is_counted_rather_than_nothing():
    assert throughput.rates([4.0], 2, 100)["samplesPerSecond"] == 0.5
    assert throughput.rates([], 2, 100) == {"samplesPerSecond": None, "tokensPerSecond": None,
                                            "stepSeconds": None, "timedSteps": 0}


def test_flops_per_token_and_mfu():
    # 4 x 1e9 frozen + 6 x 1e6 LoRA + 12 x 2 layers x 512 x 100 tokens
    per_token = throughput.flops_per_token(10**9, 10**6, 2, 512, 100.0)
    assert per_token == 4e9 + 6e6 + 12 * 2 * 512 * 100
    # 1000 tokens/s over 2 devices of 1e12 FLOP/s
    assert throughput.mfu(1000.0, per_token, 2, 1e12) == pytest.approx(1000 * per_token / 2e12)
    assert throughput.mfu(1000.0, per_token, 2, None) is None  # a CPU: no peak figure
    assert throughput.mfu(0.0, per_token, 2, 1e12) is None


def test_peak_flops_from_the_device_name_or_the_override():
    assert throughput.peak_flops("NVIDIA H100 80GB HBM3", environ={}) == 989e12
    assert throughput.peak_flops("NVIDIA A800-SXM4-80GB", environ={}) == 312e12
    assert throughput.peak_flops(None, environ={}) is None
    assert throughput.peak_flops("Some New Accelerator", environ={}) is None
    assert throughput.peak_flops(None, environ={throughput.PEAK_ENV: "2.5"}) == 2.5e12
    with pytest.raises(ValueError, match="not a number"):
        throughput.peak_flops(None, environ={throughput.PEAK_ENV: "fast"})
    with pytest.raises(ValueError, match="positive"):
        throughput.peak_flops(None, environ={throughput.PEAK_ENV: "0"})


@pytest.mark.parametrize("tied", [True, False])
def test_matmul_params_of_a_peft_model(tied):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    h, layers, heads, kv_heads, inter, vocab, r = 32, 2, 4, 2, 64, 100, 4
    config = LlamaConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=inter, vocab_size=vocab,
                         tie_word_embeddings=tied)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=r, target_modules="all-linear"))
    kv = kv_heads * (h // heads)
    linears = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]
    frozen, lora = throughput.matmul_params(model)
    # every linear of every layer, and the LM head once (tied or not); no norm, no embedding lookup
    assert frozen == layers * sum(a * b for a, b in linears) + vocab * h
    assert lora == layers * sum(r * (a + b) for a, b in linears)
    assert throughput.attention_shape(model.config) == (layers, h)


def test_step_timer_times_each_step_alone():
    ticks = iter([0.0, 2.0, 5.0, 5.5])  # step 1: 0 -> 2, a pause (eval, save), step 2: 5 -> 5.5
    timer = throughput.StepTimer(clock=lambda: next(ticks))
    for _ in range(2):
        timer.on_step_begin(None, None, None)
        timer.on_step_end(None, None, None)
    timer.on_step_end(None, None, None)  # an end without a begin adds nothing
    assert timer.durations == [2.0, 0.5]


def test_peak_memory_on_cpu_is_the_resident_high_water_mark():
    import torch

    peak, source = throughput.peak_memory_bytes(torch)
    assert source == ("cuda.max_memory_allocated" if torch.cuda.is_available() else "maxrss")
    assert peak > 50 * 2**20  # torch alone is resident beyond 50 MiB
    assert throughput.gather_per_rank(1.5) == [1.5]  # no process group: this rank's alone
