"""Stage train: LoRA through DeepSpeed ZeRO-2 and ZeRO-3 on CPU, on a handful of samples."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from sheepdog_jobs import storage

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

SAMPLES = [
    ("Name three primary colors.", "", "Red, blue and yellow."),
    ("Translate the sentence into French.", "Good morning, my friend.", "Bonjour, mon ami."),
    ("Give the opposite of the word.", "happy", "sad"),
    ("Add the two numbers.", "12 and 30", "42"),
    ("Write a short greeting for a birthday card.", "", "Happy birthday! Wishing you a wonderful year."),
    ("Classify the sentiment of the review.", "The food was cold and bland.", "Negative"),
]


def write_curated(workdir: Path) -> str:
    """A curate output: kept.jsonl plus its _SUCCESS (train refuses data without one)."""
    out = workdir / "i1" / "curate"
    storage.write_jsonl(out / "kept.jsonl", [
        {"id": f"s{i}", "instruction": a, "input": b, "output": c, "scores": {"quality": 9}}
        for i, (a, b, c) in enumerate(SAMPLES)])
    storage.write_manifest(out, ["kept.jsonl"], "test")
    return str(out / "kept.jsonl")


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("zero,precision", [(2, "fp32"), (3, "bf16")])
def test_lora_through_deepspeed_merges_into_a_new_model(zero, precision, tmp_path, make_config, run_cli, tiny_model):
    data = write_curated(tmp_path)
    spec = {"training": {"zeroStage": zero, "precision": precision, "epochs": 2, "learningRate": 2e-3,
                         "validationFraction": 0.34, "gradientAccumulation": 2}}
    cfg = make_config(tmp_path, "train", spec=spec, model=tiny_model, train_data=[data])
    started = time.monotonic()
    proc, summary = run_cli(cfg, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\n[ZeRO-{zero} {precision}] train {time.monotonic() - started:.0f}s: {summary}")
    assert summary["ok"] and summary["zeroStage"] == zero
    assert math.isfinite(summary["trainLoss"]) and summary["trainLoss"] > 0
    assert math.isfinite(summary["evalLoss"]) and summary["evalLoss"] > 0
    assert summary["samples"] == 4 and summary["validationSamples"] == 2
    import torch

    if precision == "bf16":
        # bf16 where the CPU can (this one has AVX512-BF16), else fp32 and a logged warning.
        expected = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
        assert summary["precision"] == expected
        if expected == "fp32":
            assert "training in fp32" in proc.stderr
    # 4 samples, batch 1, accumulation 2, 2 epochs -> 4 optimizer steps, each logged.
    log = [row for row in storage.read_jsonl(tmp_path / "i1" / "train" / "trainer_log.jsonl") if "loss" in row]
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert all(math.isfinite(row["loss"]) and math.isfinite(row["gradNorm"]) for row in log)
    assert summary["step"] == summary["totalSteps"] == 4 and summary["worldSize"] == 1
    assert summary["effectiveBatchSize"] == 2 and summary["samplesPerSecond"] > 0
    # rates of the 3 steps after the first (start-up excluded), MFU (none without a peak FLOP/s
    # figure on a CPU) and this rank's resident peak (training/throughput.py)
    assert summary["timedSteps"] == 3 and summary["tokensPerSecond"] > 0 and summary["stepSeconds"] > 0
    assert summary["mfu"] is None and summary["peakFlopsPerDevice"] is None and summary["flopsPerToken"] > 0
    assert summary["peakMemorySource"] == "maxrss" and len(summary["peakMemoryGiBPerRank"]) == 1
    assert summary["peakMemoryGiBPerRank"][0] > 0.3  # torch, the model and DeepSpeed are resident
    # Validation loss at each epoch's end; step lines on stdout.
    evals = [row for row in storage.read_jsonl(tmp_path / "i1" / "train" / "trainer_log.jsonl") if "evalLoss" in row]
    assert [row["step"] for row in evals] == [2, 4]
    assert "train: step 4/4 epoch 2.00 loss " in proc.stdout

    model_dir = tmp_path / "i1" / "model"
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(model_dir)  # a plain model: no PEFT needed
    assert not any("lora" in name for name, _ in merged.named_parameters())
    new, base = tensors(model_dir), tensors(Path(tiny_model))
    assert set(new) == set(base)
    changed = [k for k in base if not torch.equal(new[k], base[k])]
    # LoRA on all linear layers moves the projections; embeddings and norms stay untouched.
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
    assert not any("embed_tokens" in k or "norm" in k for k in changed)
    lineage = json.loads((model_dir / "sheepdog_model.json").read_text())
    assert lineage == {"iteration": 1, "base": tiny_model, "merged": True, "trainData": [data], "run": "t"}
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".model.tmp")]

    if zero == 2:
        # Finished and intact: skipped. Model damaged behind the manifest's back: trained again.
        proc, again = run_cli(cfg, timeout=120)
        assert proc.returncode == 0 and again["skipped"] is True
        with open(model_dir / "model.safetensors", "r+b") as fh:
            fh.truncate(1000)
        proc, third = run_cli(cfg, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert third["skipped"] is False
        assert storage.verify_manifest(tmp_path / "i1" / "train", None) is not None


def test_unmerged_adapter_records_its_base(tmp_path, make_config, run_cli, tiny_model):
    """Also trains on two iterations' curate outputs at once, as total_base's train does, and
    compiles no DeepSpeed op on the CPU (its shared-memory all-reduce: a compile killed midway
    once left a lock that hung every later train)."""
    data = write_curated(tmp_path)
    second = tmp_path / "i2" / "curate"
    storage.write_jsonl(second / "kept.jsonl", [
        {"id": f"t{i}", "instruction": f"{a} Keep it short.", "input": b, "output": c, "scores": {"quality": 9}}
        for i, (a, b, c) in enumerate(SAMPLES[:3])])
    storage.write_manifest(second, ["kept.jsonl"], "test")
    spec = {"training": {"zeroStage": 2, "merge": False, "epochs": 1, "validationFraction": 0}}
    cfg = make_config(tmp_path, "train", spec=spec, model=tiny_model, train_data=[data, str(second / "kept.jsonl")])
    extensions = tmp_path / "torch_extensions"
    proc, summary = run_cli(cfg, timeout=900, TORCH_EXTENSIONS_DIR=str(extensions))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not extensions.exists() or not any(extensions.iterdir()), list(extensions.rglob("*"))
    assert summary["evalLoss"] is None and summary["samples"] == len(SAMPLES) + 3
    model_dir = tmp_path / "i1" / "model"
    adapter = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == tiny_model
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16
    assert not (model_dir / "model.safetensors").exists()
    assert json.loads((model_dir / "sheepdog_model.json").read_text())["merged"] is False


def test_train_refuses_data_without_success_manifest(tmp_path, make_config, run_cli, tiny_model):
    data = write_curated(tmp_path)
    (Path(data).parent / storage.MANIFEST).unlink()
    proc, summary = run_cli(make_config(tmp_path, "train", model=tiny_model, train_data=[data]), timeout=120)
    assert proc.returncode != 0 and "not a complete curate output" in summary["error"]
    assert not (tmp_path / "i1" / "model").exists()


# Two ranks under torchrun with ZeRO-3 and a validation split: the operator's own Job command in
# tests/operator/test_multirank_train.py::test_two_ranks_in_one_pod (one multi-rank training in make test).
