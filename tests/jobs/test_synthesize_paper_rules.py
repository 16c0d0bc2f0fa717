"""Synthesize follows the authors' scripts where a reproduction would check (issue 13), with a
fake engine that records what it is asked: the run's response prompt (the Dromedary preset's)
reaches the engine and the training examples; instruction requests stop at item 17; the judge
is the model assessment.judge names; text judgements are read with assessment.parse and the
drops of both rules are counted."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sheepdog.api.load import load_run
from sheepdog_jobs import storage
from sheepdog_jobs.engines.base import Completion
from sheepdog_jobs.engines.prompting import PromptFormat
from sheepdog_jobs.prompts import SCORE_CUE, build_response_prompt
from sheepdog_jobs.stages import synthesize as syn
from sheepdog_jobs.stages.train import IGNORE, encode

from .conftest import REPO
from .test_synthesize_shards import SEEDS, FakeEngine

DROMEDARY = load_run(REPO / "examples" / "presets" / "dromedary.yaml").spec.synthesis.response_prompt
CORPUS = json.loads((Path(__file__).parent / "corpus" / "judgements" / "tiny_model_judgements.json").read_text())


class RecordingEngine(FakeEngine):
    """FakeEngine's instruction lists; "answer N" to a response prompt; corpus judgements."""

    def __init__(self, model):
        super().__init__()
        self.model, self.asked = model, []

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        self.asked += [(p, tuple(stop)) for p in prompts]
        outs = []
        for p, s in zip(prompts, seed):
            if p.rstrip().endswith("Instruction:"):  # an instruction request
                outs += super().generate([p], temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=[s])
            elif p.endswith(SCORE_CUE):
                outs.append(Completion(CORPUS["judgements"][s % len(CORPUS["judgements"])]["text"], "stop", 9))
            else:
                outs.append(Completion(f"answer {random.Random(s).randrange(1000)}", "stop", 3))
        return outs


@pytest.fixture
def engines(monkeypatch, tmp_path):
    monkeypatch.setenv(syn.POLL_ENV, "0.01")
    made = []

    def create(name, model, template, **kw):
        made.append(RecordingEngine(model))
        return made[-1]

    monkeypatch.setattr(syn, "create_engine", create)
    return made


def model_dir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return str(path)


def config(make_config, tmp_path, spec=None, **fields):
    base = {"engine": "transformers", "seed": {"examplesPerRequest": 2},
            "synthesis": {"dataSize": 6, "maxRequests": 20}, "assessment": {"criteria": ["quality"]}}
    for k, v in (spec or {}).items():
        base[k] = {**base.get(k, {}), **v}
    return make_config(tmp_path / "run", "synthesize", spec=base, model=model_dir(tmp_path / "gen"),
                       seed_file=SEEDS, **fields)


class CharTokenizer:
    """One token per character, so a token sequence reads back as the exact text."""

    eos_token_id = 0
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


def test_dromedary_prompt_reaches_the_engine_and_the_training_data(tmp_path, make_config, engines):
    assert "Answer:" in DROMEDARY
    cfg = config(make_config, tmp_path, {"synthesis": {"responsePrompt": DROMEDARY}})
    syn.run(cfg)
    out = Path(cfg.out_dir)
    pairs = storage.read_jsonl(out / "responses.jsonl")
    expected = [build_response_prompt(r["instruction"], r["input"], DROMEDARY) for r in pairs]
    asked = [p for p, _ in engines[0].asked if p in set(expected)]
    assert sorted(asked) == sorted(expected) and len(expected) == 6
    assert all(p.startswith(DROMEDARY.split("{")[0]) for p in expected)
    # the train stage encodes the very same prompt in front of each response
    examples, _ = encode(PromptFormat(CharTokenizer(), "none"), CharTokenizer(), pairs, 100_000,
                         cfg.spec.synthesis.response_prompt)
    prompts = ["".join(chr(t) for t, label in zip(e["input_ids"], e["labels"]) if label == IGNORE)
               for e in examples]
    assert prompts == expected


def test_instruction_requests_stop_at_the_17th_item(tmp_path, make_config, engines):
    syn.run(config(make_config, tmp_path))
    requests = [stop for p, stop in engines[0].asked if p.rstrip().endswith("Instruction:")]
    others = [stop for p, stop in engines[0].asked if not p.rstrip().endswith("Instruction:")]
    assert requests and set(requests) == {("17",)}
    assert others and set(others) == {()}


def test_judge_base_assesses_with_the_base_model(tmp_path, make_config, engines):
    base = model_dir(tmp_path / "base")
    cfg = config(make_config, tmp_path, {"assessment": {"judge": "base", "scoring": "text"}}, judge_model=base)
    summary = syn.run(cfg)
    assert [e.model for e in engines] == [cfg.generator_model, base]
    assert summary["modelLoads"] == 2
    generator, judge = engines
    assert not any(p.endswith(SCORE_CUE) for p, _ in generator.asked)
    assert sum(p.endswith(SCORE_CUE) for p, _ in judge.asked) == summary["assessed"] == 6
    # the judge is part of what the assessments depend on: another judge redoes only them
    again = syn.run(config(make_config, tmp_path, {"assessment": {"scoring": "text"}}))
    assert again["resumedPhases"] == ["instructions", "responses"]


def test_current_judge_is_the_generator(tmp_path, make_config, engines):
    cfg = config(make_config, tmp_path, {"assessment": {"scoring": "text"}})
    summary = syn.run(cfg)
    assert [e.model for e in engines] == [cfg.generator_model] and summary["modelLoads"] == 1


@pytest.mark.parametrize("rule", ["strict", "firstNumber"])
def test_text_judgements_use_the_parse_rule_and_count_both(tmp_path, make_config, engines, rule):
    spec = {"assessment": {"scoring": "text", **({} if rule == "strict" else {"parse": rule})}}
    cfg = config(make_config, tmp_path, spec)
    assert cfg.spec.assessment.parse == rule  # strict is the default
    summary = syn.run(cfg)
    by_text = {j["text"]: j for j in CORPUS["judgements"]}
    records = storage.read_jsonl(Path(cfg.out_dir) / "assessments.jsonl")
    texts = [r["judgements"]["quality"] for r in records]
    assert [r["scores"]["quality"] for r in records] == [by_text[t][rule] for t in texts]
    assert summary["parseFailuresBy"] == {
        "strict": sum(by_text[t]["strict"] is None for t in texts),
        "firstNumber": sum(by_text[t]["firstNumber"] is None for t in texts)}
    assert summary["parseFailures"] == summary["parseFailuresBy"][rule]


class OneItemEngine(RecordingEngine):
    """Each instruction request answers one complete item and stops, as the tiny model's
    iteration-2 generator did in the quickstart."""

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        outs = super().generate(prompts, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                seed=seed, stop=stop)
        for i, (p, s) in enumerate(zip(prompts, seed)):
            if p.rstrip().endswith("Instruction:"):
                words = " ".join(random.Random(s).sample(["river", "stone", "winter", "lamp", "orbit",
                                                          "garden", "signal", "copper", "meadow"], 4))
                outs[i] = Completion(f" Describe a {words} in one sentence.\n3. Input:\n<noinput>\n", "stop", 20)
        return outs


@pytest.mark.parametrize("rule", ["always", "truncated"])
def test_drop_last_item_always_as_the_scripts_or_only_when_truncated(tmp_path, make_config, monkeypatch, rule):
    monkeypatch.setenv(syn.POLL_ENV, "0.01")
    monkeypatch.setattr(syn, "create_engine", lambda name, model, template, **kw: OneItemEngine(model))
    spec = {"synthesis": {"dataSize": 2, "maxRequests": 4}}
    if rule == "truncated":
        spec["synthesis"]["dropLastItem"] = "truncated"
    cfg = config(make_config, tmp_path, spec)
    if rule == "always":  # the authors' rule drops each request's only (complete) item
        with pytest.raises(syn.StageError, match="last_item"):
            syn.run(cfg)
    else:
        assert syn.run(cfg)["generated"] == 2
