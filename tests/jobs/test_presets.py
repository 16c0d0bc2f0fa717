"""examples/presets: each validates, and differs from the tiny main setting exactly where its
paper row says (so a preset cannot silently stop setting what it is named after)."""

from __future__ import annotations

import pathlib
import string
from typing import Any

import pytest

from sheepdog.api.load import load_run
from sheepdog.api.spec import RunSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRESETS = ROOT / "examples" / "presets"

# The tiny main setting the presets start from: examples/quickstart.yaml plus evaluation.
EVALUATION = {"enabled": True, "suites": ["heldout", "ifeval-smoke"], "limit": 8, "maxTokens": 128}

# preset -> {dotted camelCase path: value} that must differ from the main setting (and nothing else)
EXPECTED: dict[str, dict[str, Any]] = {
    "self-instruct": {"iterations": 1, "assessment.criteria": [], "filter.threshold": 0.0,
                      "filter.keepFraction": None},
    "dromedary": {"iterations": 1, "synthesis.responsePrompt": "<template>"},
    "direct": {"iterations": 3, "training.strategy": "direct"},
    "one-last": {"iterations": 3, "training.strategy": "one_last", "stopping.metric": "ifeval-smoke.promptStrict",
                 "stopping.minDelta": 0.0, "stopping.patience": 1},
    "total-base": {"iterations": 3, "training.strategy": "total_base", "stopping.metric": "ifeval-smoke.promptStrict",
                   "stopping.minDelta": 0.0, "stopping.patience": 1},
    "ppl-filter": {"assessment.criteria": [], "filter.method": "ppl", "filter.keepFraction": None},
    "density-filter": {"assessment.criteria": [], "filter.method": "density", "filter.keepFraction": None,
                       "filter.clusters": 4, "training.maxSamples": 8},
    "density-ppl-filter": {"assessment.criteria": [], "filter.method": "density-ppl",
                           "filter.keepFraction": None, "filter.clusters": 4, "training.maxSamples": 8},
    "simple-prompt": {"assessment.prompt": "simple"},
    "icl-prompt": {"assessment.prompt": "icl"},
    "quality-only": {"assessment.criteria": ["quality"]},
    "following-only": {"assessment.criteria": ["following"]},
    # Fig. 2a "threshold -1": the score filter off (every scored pair kept), the rules on.
    "threshold-minus-one": {"filter.threshold": -1.0, "filter.keepFraction": None},
}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        obj = sorted(obj, key=str) if all(isinstance(x, str) for x in obj) else obj
    return {prefix[:-1]: obj}


def main_setting() -> dict[str, Any]:
    spec = load_run(ROOT / "examples" / "quickstart.yaml").spec.to_wire()
    spec["evaluation"] = RunSpec.model_validate({"model": {"base": "m"}, "evaluation": EVALUATION}
                                                ).to_wire()["evaluation"]
    # the quickstart picks its best model by a stopping metric; a preset sets its own stopping
    # (or none) as one of its differences, compared with a main setting without it
    spec.pop("stopping", None)
    return flatten(spec)


def test_the_preset_set_is_complete():
    names = {p.stem for p in PRESETS.glob("*.yaml")}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_validates_and_sets_its_row(name):
    run = load_run(PRESETS / f"{name}.yaml")
    assert run.metadata.name == name
    got = flatten(run.spec.to_wire())
    base = main_setting()
    expected = dict(EXPECTED[name])
    if expected.get("synthesis.responsePrompt") == "<template>":
        expected["synthesis.responsePrompt"] = got.get("synthesis.responsePrompt")
    diff = {k: got.get(k) for k in set(got) | set(base) if got.get(k) != base.get(k)}
    assert diff == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_is_tiny_model_sized(name):
    spec = load_run(PRESETS / f"{name}.yaml").spec
    assert spec.model.base == "models/smollm2-135m-instruct"
    assert spec.seed.path is None  # the built-in 175 Self-Instruct seed tasks, as the quickstart
    assert spec.synthesis.data_size <= 16 and spec.synthesis.max_tokens <= 256
    assert spec.stages.synthesize.gpus == spec.stages.train.gpus == spec.stages.evaluate.gpus == 0
    assert spec.training.precision == "fp32"
    assert spec.evaluation.enabled and spec.evaluation.limit


def test_dromedary_prompt_is_a_principle_template():
    template = load_run(PRESETS / "dromedary.yaml").spec.synthesis.response_prompt
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    assert fields == {"instruction", "input"}
    filled = template.format(instruction="Name a prime number.", input="")
    assert "Name a prime number." in filled and "principles" in filled


def test_self_instruct_has_no_assessment_and_no_score_cut():
    spec = load_run(PRESETS / "self-instruct.yaml").spec
    assert spec.assessment.criteria == [] and spec.filter.threshold == 0
    assert spec.filter.keep_fraction is None and spec.iterations == 1 and spec.stopping is None


@pytest.mark.parametrize("name", ["ppl-filter", "density-ppl-filter"])
def test_ppl_presets_use_the_papers_cut(name):
    assert load_run(PRESETS / f"{name}.yaml").spec.filter.ppl_max == 50


def test_direct_cannot_stop_early():
    spec = load_run(PRESETS / "direct.yaml").spec
    assert spec.training.strategy == "direct" and spec.stopping is None
