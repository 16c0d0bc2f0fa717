"""The pass-through knobs inside the stages: training.trainerArgs reach transformers' Trainer,
engineArgs reach vLLM's engine, training.quantization 4bit (QLoRA) is refused on CPU before
any model loads. (Their names are checked at validate time: tests/api/test_passthrough.py.)

Not exercised here: QLoRA training itself, which needs a CUDA GPU (docs/training.md)."""

from __future__ import annotations

import pytest

from sheepdog_jobs import storage
from sheepdog_jobs.training import LOG_FILE, quantization

from .test_train_deepspeed import write_curated
from .test_train_trainer import EQUIVALENCE, HAND_LOOP


# ---- QLoRA's pieces -----------------------------------------------------------------------------

def test_4bit_is_refused_without_a_cuda_gpu_and_names_both_ways_out():
    quantization.check("none", cuda=False)  # plain LoRA runs anywhere
    with pytest.raises(quantization.QuantizationError,
                       match=r"needs a CUDA GPU, which this train stage lacks.*quantization: none"):
        quantization.check("4bit", cuda=False, installed=True)
    with pytest.raises(quantization.QuantizationError, match="needs a CUDA GPU and the bitsandbytes package"):
        quantization.check("4bit", cuda=False, installed=False)
    with pytest.raises(quantization.QuantizationError, match="needs the bitsandbytes package"):
        quantization.check("4bit", cuda=True, installed=False)
    quantization.check("4bit", cuda=True, installed=True)


def test_4bit_loads_nf4_with_double_quantization_in_the_runs_precision():
    import torch

    assert quantization.load_kwargs("none", torch.bfloat16, 3, 0) == {}
    kwargs = quantization.load_kwargs("4bit", torch.bfloat16, 2, 0)
    config = kwargs["quantization_config"]
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    # ZeRO-3 partitions the packed weights like any parameter: stored in the run's dtype
    assert config.bnb_4bit_quant_storage == torch.bfloat16
    assert kwargs["device_map"] == {"": 0}  # below ZeRO-3 each rank holds the model on its GPU
    assert "device_map" not in quantization.load_kwargs("4bit", torch.bfloat16, 3, 0)


def test_no_quantization_leaves_the_model_as_it_is():
    model = object()
    assert quantization.prepare(model, "none", True) is model


# ---- in the stages (the tiny model) -------------------------------------------------------------

@pytest.mark.model
def test_train_refuses_4bit_on_cpu_in_one_line_before_loading(tmp_path, make_config, run_cli, tiny_model):
    data = write_curated(tmp_path)
    # gpus: 1 passes validation (a GPU stage on a cluster); this machine has none
    cfg = make_config(tmp_path, "train", model=tiny_model, train_data=[data],
                      spec={"training": {"quantization": "4bit"}, "stages": {"train": {"gpus": 1}}})
    proc, summary = run_cli(cfg, timeout=600)
    assert proc.returncode != 0
    assert summary is not None and summary["ok"] is False
    assert "training.quantization 4bit (QLoRA) needs a CUDA GPU" in summary["error"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "i1" / "model").exists()


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trainer_args_reach_the_trainer(tmp_path, make_config, run_cli, tiny_model):
    """The hand-loop equivalence run (tests/jobs/test_train_trainer.py) with optim: sgd instead
    of AdamW: the loss before any update is the same, the loss after the first real update is
    not (plain SGD at this learning rate barely moves it; AdamW drops it to 1.78)."""
    data = write_curated(tmp_path)
    spec = {"training": {**EQUIVALENCE["training"], "trainerArgs": {"optim": "sgd"}}}
    cfg = make_config(tmp_path, "train", spec=spec, model=tiny_model, train_data=[data])
    proc, summary = run_cli(cfg, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "trainerArgs {'optim': 'sgd'}" in proc.stderr
    losses = [r["loss"] for r in storage.read_jsonl(tmp_path / "i1" / "train" / LOG_FILE) if "loss" in r]
    assert len(losses) == 3
    assert losses[0] == pytest.approx(HAND_LOOP["stepLosses"][0], rel=1e-3)
    assert losses[2] > HAND_LOOP["stepLosses"][2] + 1.0, losses


@pytest.mark.model
@pytest.mark.timeout(900)
def test_engine_args_reach_vllm_and_win_over_sheepdogs_choices(tiny_model, capfd, caplog):
    import logging

    from sheepdog_jobs.engines import create_engine

    caplog.set_level(logging.INFO, logger="sheepdog_jobs")

    # sheepdog would leave max_model_len to the model (8192) and vLLM's max_num_seqs default
    engine = create_engine("vllm", tiny_model, seed=0,
                           engine_args={"max_model_len": 384, "max_num_seqs": 3})
    try:
        config = engine.llm.llm_engine.vllm_config
        assert config.model_config.max_model_len == 384
        assert config.scheduler_config.max_num_seqs == 3
        outs = engine.generate(["Hello"] * 5, temperature=0, top_p=1.0, max_tokens=4, seed=0)
        assert len(outs) == 5  # more prompts than max_num_seqs still all answered
        # the float32 checkpoint loads into bfloat16 on CPU: one line for it, not one per weight
        # (engines/vllm_logging.py; vLLM reconfigures its handlers when it builds the engine)
        assert "Attempted to load weight" not in capfd.readouterr().err
        assert any(r.getMessage().startswith("vLLM loaded ") and "weights stored as torch.float32" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
    finally:
        engine.close()
