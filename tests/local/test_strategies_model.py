"""Every training.strategy end to end: a REAL 2-iteration run on the tiny model through the
local executor, with the lineage in report.json checked against docs/design.md's table:

| strategy   | generator of t | baseModel of t | train data                         |
| one_base   | model of t-1   | base           | curated data of t                  |
| one_last   | model of t-1   | model of t-1   | curated data of t                  |
| total_base | model of t-1   | base           | curated data of 1..t               |
| direct     | base           | base           | one iteration of iterations x dataSize |
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import sheepdog.local.executor as executor
from sheepdog.local import run_local
from tests.jobs.conftest import tiny_model  # noqa: F401  (session fixture: the converted SmolLM2)
from tests.local.conftest import TINY_BASE, real_tiny_workdir

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

BASE = TINY_BASE
ITERATIONS, DATA_SIZE = 2, 2

RUN_YAML = f"""apiVersion: sheepdog.dev/v1alpha1
kind: SelfAlignmentRun
metadata:
  name: strat-{{name}}
spec:
  model:
    base: {BASE}
  seed:
    path: seeds/quickstart.jsonl
    examplesPerRequest: 3
  iterations: {ITERATIONS}
  synthesis:
    dataSize: {DATA_SIZE}
    maxTokens: 48
    maxRequests: 4
    dropLastItem: truncated  # as the quickstart: a trained tiny model may write one item and stop
  assessment:
    scoring: logprobs
  filter:
    keepFraction: 0.5
  training:
    strategy: {{strategy}}
    epochs: 1
    cutoffLength: 256
    warmupSteps: 0
    zeroStage: 2
    precision: fp32
  engine: transformers
  stages:
    synthesize: {{{{gpus: 0, tensorParallel: 1}}}}
    train: {{{{gpus: 0}}}}
  retries: 0
"""


# Bulk repetitions (make test-all): in make test, every strategy's lineage is proven by
# tests/planner/test_lineage_policy.py and the fake-stage executor tests
# (tests/local/test_executor.py::test_lineage_reaches_the_stage_programs), one_base's on the real
# model by the quickstart run (tests/test_front_door.py), and the real train stage reading several
# iterations' data (total_base's case) by tests/jobs/test_train_deepspeed.py::test_unmerged_adapter_records_its_base.
@pytest.mark.parametrize("strategy", [pytest.param("one_base", marks=pytest.mark.bulk),
                                      pytest.param("one_last", marks=pytest.mark.bulk),
                                      pytest.param("total_base", marks=pytest.mark.bulk),
                                      pytest.param("direct", marks=pytest.mark.bulk)])
def test_strategy_lineage_real_run(strategy, tiny_model, tmp_path, monkeypatch):  # noqa: F811
    work, run_file = real_tiny_workdir(tmp_path, tiny_model, RUN_YAML.format(name=strategy.replace("_", "-"),
                                                                             strategy=strategy), monkeypatch)

    # Spy on the StageConfig each stage is started with (the stage reads nothing else).
    started: list = []
    real_run_stage = executor.run_stage

    def spy(action, *args, **kwargs):
        started.append(action.config)
        return real_run_stage(action, *args, **kwargs)

    monkeypatch.setattr(executor, "run_stage", spy)

    result = run_local(run_file, work, out=io.StringIO(), plot=False)
    report = json.loads((work / "report.json").read_text())
    assert result.status.phase == "Succeeded", report
    assert report["phase"] == "Succeeded", report
    its = {r["iteration"]: r for r in report["iterations"]}
    root = str(work.resolve())
    configs = {(c.iteration, c.stage): c for c in started}

    for n, rec in its.items():
        assert rec["model"] == f"i{n}/model"
        assert (work / f"i{n}" / "model" / "config.json").is_file()
        for stage in ("synthesize", "curate", "train"):
            assert rec["stages"][stage]["phase"] == "Succeeded", rec["stages"][stage]

    if strategy == "direct":
        assert list(its) == [1], "direct runs exactly one iteration"
        i1 = its[1]
        assert i1["generatorModel"] == BASE and i1["baseModel"] == BASE
        synth = configs[(1, "synthesize")]
        assert synth.data_size == ITERATIONS * DATA_SIZE
        assert 0 < i1["generated"] <= ITERATIONS * DATA_SIZE
        assert configs[(1, "train")].train_data == [f"{root}/i1/curate/kept.jsonl"]
        assert report["bestModel"] == "i1/model"
        return

    assert sorted(its) == [1, 2]
    i1, i2 = its[1], its[2]
    assert i1["generatorModel"] == BASE and i1["baseModel"] == BASE
    # every non-direct strategy: the generator of iteration 2 is the model of iteration 1
    assert i2["generatorModel"] == i1["model"] == "i1/model"
    for n in (1, 2):
        assert configs[(n, "synthesize")].data_size == DATA_SIZE
    kept = {n: its[n]["kept"] for n in (1, 2)}
    train2 = i2["stages"]["train"]["summary"]
    lineage2 = json.loads((work / "i2" / "model" / "sheepdog_model.json").read_text())
    val2 = train2.get("validationSamples") or 0

    if strategy == "one_base":
        assert i2["baseModel"] == BASE
        assert lineage2["trainData"] == [f"{root}/i2/curate/kept.jsonl"]
        assert train2["samples"] + val2 <= kept[2]
    elif strategy == "one_last":
        assert i2["baseModel"] == i1["model"] == "i1/model"
        assert Path(lineage2["base"]).resolve() == (work / "i1" / "model").resolve()
        assert lineage2["trainData"] == [f"{root}/i2/curate/kept.jsonl"]
    elif strategy == "total_base":
        assert i2["baseModel"] == BASE
        want = [f"{root}/i1/curate/kept.jsonl", f"{root}/i2/curate/kept.jsonl"]
        assert configs[(2, "train")].train_data == want
        assert lineage2["trainData"] == want  # recorded by the train stage in the model it wrote
        # ...and it really trained on both (maxSamples 3000 caps nothing here): i2's data
        # alone would give at most kept[2] examples.
        assert kept[1] > 0
        assert kept[2] < train2["samples"] + val2 <= kept[1] + kept[2]
        # samplesFrom says where the samples (training and validation) came from: both iterations
        assert set(train2["samplesFrom"]) == {"1", "2"}, train2
        assert sum(train2["samplesFrom"].values()) >= train2["samples"] + val2  # minus any over the cutoff
