"""sheepdog.capacity: the plan of a run from its model's config.json (pure arithmetic), the
fit check of `sheepdog validate`, and `sheepdog plan`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from sheepdog.api.load import load_run
from sheepdog.capacity import ModelConfigError, fit_problems, format_plan, plan_run, read_shape, shape_for, shape_from_config
from sheepdog.capacity.memory import GiB, kv_bytes_per_token
from sheepdog.cli import main
from tests.capacity.shapes import QWEN72B, SMOLLM2, write_config

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "examples" / "paper.yaml"
QWEN = shape_from_config(QWEN72B)


def paper_spec(**overrides):
    run = load_run(PAPER, [f"{k}={v}" for k, v in overrides.items()])
    return run.spec


def test_shapes():
    assert QWEN.params() == 72_287_920_128 and QWEN.weight_bytes() == 2 * QWEN.params()
    smol = shape_from_config(SMOLLM2)
    assert smol.params() == 134_515_008 and smol.kv_dim == 192 and smol.tied_embeddings
    # K and V of 80 layers, 8 of the 64 heads on each of 8 ranks, 128 wide, 16 bits
    assert kv_bytes_per_token(QWEN, 8) == 2 * 80 * 8 * 128 * 2
    # 3 KV heads over 8 ranks: vLLM replicates, each rank keeps one
    assert kv_bytes_per_token(smol, 8) == 2 * 30 * 1 * 64 * 2
    with pytest.raises(ModelConfigError, match="hidden_size"):
        shape_from_config({"num_hidden_layers": 2})


def test_paper_setting_on_8x80gb():
    plan = plan_run(paper_spec(), QWEN)
    assert set(plan["stages"]) - {"evaluate"} == {"synthesize", "curate", "train"}
    syn, train = plan["stages"]["synthesize"], plan["stages"]["train"]
    assert syn["gpus"] == 8 and syn["fits"]
    assert syn["memory"]["weightsGiB"] == pytest.approx(72.29e9 * 2 / 8 / GiB, rel=1e-3)
    # what the KV cache holds: at least a whole max_model_len sequence, fewer than 10
    assert 1 <= syn["kvCache"]["sequencesAtMaxModelLen"] < 10
    assert train["memoryGiBPerRankWithCheckpointing"] < train["memoryGiBPerRankWithoutCheckpointing"] / 2
    assert plan["stages"]["curate"]["gpus"] == 0 and plan["stages"]["curate"]["fits"]
    assert plan["fits"] and fit_problems(plan) == []
    # assessment.decode score (default): 16 tokens a judgement, 10 % decoded again to 1000
    assert syn["phases"]["assessments"]["decodeTokens"] == 10000 * 2 * (16 + 100)
    # the KV cache holds fewer judgement sequences (rubric + response + judgement) than responses
    running = {k: p["runningSequences"] for k, p in syn["phases"].items()}
    assert 1 <= running["assessments"] < running["responses"] <= 256
    # judging 20k pairs at 1000 tokens each (decode full) is most of synthesize's time (issue 22)
    full = plan_run(paper_spec(**{"assessment.decode": "full"}), QWEN)["stages"]["synthesize"]
    phases = full["phases"]
    assert phases["assessments"]["decodeTokens"] == 10000 * 2 * 1000
    assert phases["assessments"]["seconds"] > phases["responses"]["seconds"]
    assert full["gpuHoursPerIteration"] > 2 * syn["gpuHoursPerIteration"]


def test_a_stage_that_cannot_fit_is_refused_with_its_numbers():
    plan = plan_run(paper_spec(**{"training.cutoffLength": 4096, "training.gradientCheckpointing": "false"}), QWEN)
    train = plan["stages"]["train"]
    assert not train["fits"] and train["fitsWithCheckpointing"]
    (problem,) = fit_problems(plan)
    assert problem.startswith("stages.train cannot fit in spec.resources.gpuMemoryGiB 80 GiB per GPU")
    assert f"{train['memoryGiBPerRank']} GiB per rank" in problem and "cutoff 4096" in problem
    assert f"gradientCheckpointing: true it needs {train['memoryGiBPerRankWithCheckpointing']} GiB" in problem

    # a 72B model on one GPU: the weights alone do not fit
    one = plan_run(paper_spec(**{"stages.synthesize.gpus": 1, "stages.synthesize.tensorParallel": 1}), QWEN)
    assert not one["stages"]["synthesize"]["fits"]
    assert "weights 134.65" in fit_problems(one)[0]
    # the transformers engine puts the whole model on one device, however many GPUs the pod has
    hf = plan_run(paper_spec(engine="transformers"), QWEN)["stages"]["synthesize"]
    assert hf["fits"] is False and hf["ranks"] == 1 and "on one GPU" in hf["why"]
    # evaluate on one GPU cannot hold it either; its default, synthesize's tensor parallel, can
    ev = plan_run(paper_spec(**{"evaluation.enabled": "true", "stages.evaluate.gpus": "1"}), QWEN)
    assert ev["stages"]["evaluate"]["fits"] is False
    ev = plan_run(paper_spec(**{"evaluation.enabled": "true"}), QWEN)["stages"]["evaluate"]
    assert ev["fits"] and ev["tensorParallel"] == 8


def test_shards_and_nodes():
    """Two synthesize shards of 4 GPUs: each engine holds twice the weights a rank and its
    shard's half of the work; two train nodes: a ZeRO-3 shard over 16 ranks."""
    one = plan_run(paper_spec(), QWEN)["stages"]
    two = plan_run(paper_spec(**{"stages.synthesize.gpus": 4, "stages.synthesize.tensorParallel": 4,
                                 "stages.synthesize.shards": 2, "stages.train.nodes": 2}), QWEN)["stages"]
    syn1, syn2 = one["synthesize"], two["synthesize"]
    assert syn2["fits"] and syn2["memory"]["weightsGiB"] == pytest.approx(2 * syn1["memory"]["weightsGiB"], rel=1e-3)
    assert syn2["kvCache"]["bytesPerTokenPerRank"] == 2 * syn1["kvCache"]["bytesPerTokenPerRank"]
    # wall time: the GPU-hours spread over 2 pods of 4 GPUs
    assert syn2["wallHoursPerIteration"] == pytest.approx(syn2["gpuHoursPerIteration"] / 8, abs=0.01)
    # a 72B at tensor parallel 4 leaves less KV cache per weight byte read: fewer sequences
    # decode at once, so the same work costs more GPU-hours than one engine over 8 GPUs
    assert syn2["phases"]["responses"]["runningSequences"] < syn1["phases"]["responses"]["runningSequences"]
    assert syn2["gpuHoursPerIteration"] > syn1["gpuHoursPerIteration"]
    assert two["train"]["ranks"] == 16
    assert two["train"]["memory"]["weightsGiB"] == pytest.approx(one["train"]["memory"]["weightsGiB"] / 2, rel=1e-3)


def test_bigger_gpus_fit_more():
    off = "training.gradientCheckpointing"
    spec = paper_spec(**{"training.cutoffLength": 4096, "resources.gpuMemoryGiB": 141, off: "false"})
    assert plan_run(spec, QWEN)["stages"]["train"]["fits"] is False  # 202 GiB
    spec = paper_spec(**{"training.cutoffLength": 2048, "resources.gpuMemoryGiB": 141, off: "false"})
    assert plan_run(spec, QWEN)["stages"]["train"]["fits"] is True


def test_storage_against_the_claim():
    plan = plan_run(paper_spec(), QWEN, claim_gib=500)
    st = plan["storage"]
    # base + 3 merged 72B models do not fit the chart's 500Gi claim (issue 22)
    assert st["totalGiB"] > 4 * 134 and st["fits"] is False and plan["storageGiB"] == st["totalGiB"]
    assert fit_problems(plan)[-1].startswith("storage: the run needs about")
    adapters = plan_run(paper_spec(**{"training.merge": "false"}), QWEN, claim_gib=500)["storage"]
    assert adapters["fits"] and adapters["modelsGiBPerIteration"] < 1


def test_checkpointing_costs_a_third_more_compute():
    plain = plan_run(paper_spec(**{"training.gradientCheckpointing": "false"}), QWEN)["stages"]["train"]
    assert plain["tokensPerIteration"] == 2700 * 2 * 1024
    ckpt = plan_run(paper_spec(), QWEN)["stages"]["train"]  # on by default
    assert ckpt["gradientCheckpointing"] and not plain["gradientCheckpointing"]
    assert ckpt["gpuHoursPerIteration"] == pytest.approx(1.5 * plain["gpuHoursPerIteration"], rel=0.02)
    assert ckpt["memoryGiBPerRank"] == plain["memoryGiBPerRankWithCheckpointing"]


def test_tiny_model_fits_anywhere_and_cpu_stages_have_no_gpu():
    smol = shape_from_config(SMOLLM2)
    plan = plan_run(paper_spec(**{"stages.train.gpus": 0}), smol)
    assert plan["fits"] and plan["stages"]["train"]["fits"] is None
    assert plan["stages"]["synthesize"]["kvCache"]["sequencesAtMaxModelLen"] > 100
    assert "train: 0 GPU(s) x 1 pod(s), 0.0 GiB per rank: no GPU" in format_plan(plan)


def test_documented_keys_are_in_the_plan():
    """docs/gpu-plan.md lists the JSON keys of `sheepdog plan --output json`: each is in the plan."""
    doc = (REPO / "docs" / "gpu-plan.md").read_text()
    section = doc.split("## `sheepdog plan`", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
    assert len(keys) >= 15
    # docs/spec.md (generated: sheepdog.api.reference.PLAN_KEYS) names the main ones
    reference = (REPO / "docs" / "spec.md").read_text().split("## `sheepdog plan RUN.yaml --output json`", 1)[1]
    spec_keys = re.findall(r"^\| `([^`]+)` \|", reference, flags=re.M)
    assert {"stages.<stage>.memoryGiBPerRank", "stages.train.memoryGiBPerRankWithoutCheckpointing",
            "storageGiB"} <= set(spec_keys)
    keys += spec_keys
    plan = plan_run(paper_spec(**{"evaluation.enabled": "true"}), QWEN, claim_gib=500)
    for key in keys:
        node = plan
        for part in key.split("."):
            part = "train" if part == "<stage>" else part  # per-stage keys: the train stage has them all
            assert isinstance(node, dict) and part in node, key
            node = node[part]


def test_the_clis_gpu_choices_are_the_planners():
    from sheepdog.capacity import GPUS
    from sheepdog.cli import GPU_KINDS

    assert sorted(GPU_KINDS) == sorted(GPUS)


def test_model_config_resolution(tmp_path):
    write_config(tmp_path / "models" / "smol", SMOLLM2)
    assert shape_for("models/smol", search=[tmp_path]).hidden == 576
    assert shape_for("ignored", str(tmp_path / "models" / "smol" / "config.json")).layers == 30
    with pytest.raises(ModelConfigError, match="--model-config FILE"):
        shape_for("Qwen/Qwen1.5-72B", search=[tmp_path])
    with pytest.raises(ModelConfigError, match="no such file"):
        read_shape(tmp_path / "nothing")


def test_cli_plan_and_validate(tmp_path, capsys):
    write_config(tmp_path / "q72", QWEN72B)
    # examples/paper.yaml carries Qwen1.5-72B's config as spec.model.shape: planned anywhere
    assert main(["plan", str(PAPER)]) == 0
    text = capsys.readouterr().out
    assert "model: spec.model.shape: 72.29 B params" in text and "every stage fits: yes" in text
    # without it, model.base is on the cluster's volume: plan says how to give the config
    doc = yaml.safe_load(PAPER.read_text())
    del doc["spec"]["model"]["shape"]
    no_shape = tmp_path / "paper-no-shape.yaml"
    no_shape.write_text(yaml.safe_dump(doc))
    assert main(["plan", str(no_shape)]) == 2
    assert "--model-config FILE" in capsys.readouterr().err
    assert main(["plan", str(PAPER), "--model-config", str(tmp_path / "q72"), "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] and plan["stages"]["train"]["memoryGiBPerRankWithoutCheckpointing"] > 0
    assert main(["plan", str(PAPER), "--model-config", str(tmp_path / "q72")]) == 0
    text = capsys.readouterr().out
    assert "train: 8 GPU(s)" in text and "with gradient checkpointing" in text

    # validate: without a readable config or a shape it validates and says the fit was not checked
    assert main(["validate", str(no_shape)]) == 0
    assert "note: GPU memory not checked" in capsys.readouterr().out
    assert main(["validate", str(PAPER)]) == 0
    assert "note: GPU memory not checked" not in capsys.readouterr().out
    bad = ["validate", str(PAPER), "--model-config", str(tmp_path / "q72"), "--set", "training.cutoffLength=4096",
           "--set", "training.gradientCheckpointing=false"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "stages.train cannot fit" in err and "cutoff 4096" in err
    assert main(["validate", str(PAPER), "--model-config", str(tmp_path / "q72"), "--claim-gib", "500"]) == 2
    assert "storage: the run needs about" in capsys.readouterr().err


def test_keep_models_shrinks_the_storage():
    """storage.keepModels last: at most M_{t-1} and M_t at once, so the paper's run fits 500Gi."""
    every = plan_run(paper_spec(), QWEN, claim_gib=500)["storage"]
    last = plan_run(paper_spec(**{"storage.keepModels": "last"}), QWEN, claim_gib=500)["storage"]
    best = plan_run(paper_spec(**{"storage.keepModels": "best"}), QWEN, claim_gib=500)["storage"]
    assert (every["modelsStored"], last["modelsStored"], best["modelsStored"]) == (3, 2, 3)
    model = every["modelsGiBPerIteration"] - 104.9e6 * 4 / GiB  # less the adapter, which stays
    assert last["totalGiB"] == pytest.approx(every["totalGiB"] - model, abs=0.02)
    assert last["fits"] and not every["fits"] and best["totalGiB"] == every["totalGiB"]
