"""training.merge: false: a model reference that is a LoRA adapter is served as its base + the
adapter (jobs/sheepdog_jobs/engines/adapters.py): vLLM with enable_lora and a LoRARequest on
every request (its CPU build serves LoRA too), transformers through peft."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sheepdog_jobs.engines import adapters

from .conftest import REPO, stage_env

SCRIPT = REPO / "tests" / "jobs" / "scripts" / "adapter_serving.py"


def _adapter_dir(path, base: str, r: int = 8):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": r}))
    return path


# ---- resolve: pure, no model ----------------------------------------------------------------
def test_a_whole_model_or_a_hub_id_is_served_as_itself(tmp_path):
    whole = tmp_path / "m"
    whole.mkdir()
    (whole / "config.json").write_text("{}")
    (whole / "adapter_config.json").write_text("{}")  # a merged model that kept its adapter config
    assert adapters.resolve(str(whole)) == adapters.Served(base=str(whole))
    assert adapters.resolve("org/name") == adapters.Served(base="org/name")


def test_an_adapter_is_served_over_the_base_its_config_names(tmp_path):
    a = _adapter_dir(tmp_path / "i1" / "model", "/data/models/base", r=16)
    assert adapters.resolve(str(a)) == adapters.Served(base="/data/models/base", adapter=str(a), rank=16)


def test_stacked_adapters_and_a_missing_base_name_are_refused(tmp_path):
    first = _adapter_dir(tmp_path / "a1", "/data/models/base")
    second = _adapter_dir(tmp_path / "a2", str(first))
    with pytest.raises(adapters.AdapterError, match="adapter over another adapter"):
        adapters.resolve(str(second))
    nameless = tmp_path / "a3"
    nameless.mkdir()
    (nameless / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(adapters.AdapterError, match="names no base model"):
        adapters.resolve(str(nameless))


@pytest.mark.parametrize("rank,slot", [(None, 8), (1, 1), (8, 8), (9, 16), (64, 64), (300, 320), (512, 512)])
def test_vllm_lora_slot_is_the_smallest_that_holds_the_rank(rank, slot):
    assert adapters.vllm_max_lora_rank(rank) == slot


def test_a_rank_above_vllms_largest_slot_is_refused():
    with pytest.raises(adapters.AdapterError, match="above the largest"):
        adapters.vllm_max_lora_rank(1024)


# ---- both engines on the tiny model ---------------------------------------------------------
@pytest.fixture(scope="module")
def random_adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter of the tiny model with random, non-zero B matrices (a fresh adapter's B is
    zero and would change nothing): its greedy text differs from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter") / "i1-model"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(out)
    return str(out)


@pytest.mark.model
@pytest.mark.timeout(600)
@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_the_engine_serves_the_adapter_over_its_base(engine, random_adapter, tiny_model):
    proc = subprocess.run([sys.executable, str(SCRIPT), engine, random_adapter], capture_output=True, text=True,
                          timeout=550, env=stage_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["engine"] == engine and result["adapter"] == random_adapter
    assert result["base"] == tiny_model  # loaded from the base the adapter names
    if engine == "vllm":
        assert result["loraRequest"] == random_adapter
    # the adapter changed what the model generates
    assert result["withAdapter"] != result["bare"], result
    assert all(isinstance(t, str) for t in result["withAdapter"] + result["bare"])
