"""training.merge: false end to end: a REAL 2-iteration run of the tiny model through the local
executor on vLLM's CPU build, where every iteration's model is a LoRA adapter and synthesize and
evaluate serve it as the base + the adapter (jobs/sheepdog_jobs/engines/adapters.py): no merged
model is written anywhere, and iteration 2's generator is the adapter of iteration 1, applied
by vLLM's LoRA support (the engine reports the adapter it served in the stage summaries).
That the adapter changes the generated text is proven per engine by
tests/jobs/test_adapter_serving.py."""

from __future__ import annotations

import io
import json

import pytest

from sheepdog.local import run_local
from tests.jobs.conftest import tiny_model  # noqa: F401  (session fixture: the converted SmolLM2)
from tests.local.conftest import TINY_BASE, real_tiny_workdir

# Five vLLM starts (the baseline evaluate, two synthesize, two evaluate): 16 to 26 minutes measured
# on a 2-core machine shared with other test runs (load average about 20); not timed idle.
pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(2700)]

BASE = TINY_BASE

RUN_YAML = f"""apiVersion: sheepdog.dev/v1alpha1
kind: SelfAlignmentRun
metadata:
  name: unmerged
spec:
  model:
    base: {BASE}
  seed:
    path: seeds/quickstart.jsonl
    examplesPerRequest: 3
  iterations: 2
  synthesis:
    dataSize: 2
    maxTokens: 48
    maxRequests: 4
    dropLastItem: truncated
  assessment:
    scoring: logprobs
  filter:
    keepFraction: 0.5
  training:
    strategy: one_base
    merge: false
    epochs: 1
    cutoffLength: 256
    warmupSteps: 0
    zeroStage: 2
    precision: fp32
  evaluation:
    enabled: true
    suites: [ifeval-smoke]
    limit: 2
    maxTokens: 24
  engine: vllm
  stages:
    synthesize: {{gpus: 0, tensorParallel: 1}}
    train: {{gpus: 0}}
  retries: 0
"""


def test_two_iterations_serve_the_adapter_and_write_no_merged_model(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    work, run_file = real_tiny_workdir(tmp_path, tiny_model, RUN_YAML, monkeypatch)

    result = run_local(run_file, work, out=io.StringIO(), plot=False)
    report = json.loads((work / "report.json").read_text())
    assert result.status.phase == "Succeeded", report
    its = {r["iteration"]: r for r in report["iterations"]}
    assert sorted(its) == [0, 1, 2]  # 0: the base's evaluation (the baseline)
    assert "servedAdapter" not in its[0]["stages"]["evaluate"]["summary"]
    root = work.resolve()
    base = str(root / BASE)

    for n in (1, 2):
        model = root / f"i{n}" / "model"
        adapter = json.loads((model / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == base  # one_base: every adapter is over the base
        assert json.loads((model / "sheepdog_model.json").read_text())["merged"] is False
        # no merged model: no config.json beside the adapter, no weights but the adapter's
        assert not (model / "config.json").exists()
        weights = [p.name for p in model.rglob("*.safetensors")]
        assert weights == ["adapter_model.safetensors"], weights
        evaluate = its[n]["stages"]["evaluate"]
        assert evaluate["phase"] == "Succeeded", evaluate
        # evaluate generated with the adapter of its iteration applied over the base
        assert evaluate["summary"]["servedAdapter"] == str(model), evaluate["summary"]
    # nowhere in the run a merged model's weights (the base is a symlink outside the run)
    merged = [p for p in root.rglob("model*.safetensors") if "models" not in p.relative_to(root).parts[:1]
              and p.name != "adapter_model.safetensors"]
    assert merged == [], merged

    # iteration 1 generates with the base, iteration 2 with iteration 1's adapter over the base
    s1 = its[1]["stages"]["synthesize"]["summary"]
    s2 = its[2]["stages"]["synthesize"]["summary"]
    assert "servedAdapters" not in s1, s1
    assert s2["servedAdapters"] == [str(root / "i1" / "model")], s2
    assert s2["engine"] == "vllm" and its[2]["generated"] > 0
    # train's figures reach the report's iterations (training/throughput.py)
    assert its[2]["trainTokensPerSecond"] > 0 and its[2]["trainPeakMemoryGib"] > 0
