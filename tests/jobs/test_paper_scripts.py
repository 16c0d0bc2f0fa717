"""examples/paper.yaml reproduces the authors' scripts (issue 23): the rendered prompt of every
phase, the authors' rule set and instruction parser, the per-call dedup window and the training
template, each checked against text written here from the scripts' documented formats
(ISHEEP.md stage facts 1-4), not produced by the code under test. The synthesize runs use a
fake engine that records what it is asked; prompts.sample.jsonl must hold the same text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from sheepdog.api.spec import AssessmentSpec, FilterSpec, SynthesisSpec
from sheepdog_jobs import storage
from sheepdog_jobs.engines.base import Completion, Engine
from sheepdog_jobs.engines.prompting import PromptFormat
from sheepdog_jobs.parsing import parse_generated_instructions, parse_instructions_authors
from sheepdog_jobs.prompts import (CHATML_RESPONSE_PROMPT, build_assessment_prompt, response_template,
                                   training_template)
from sheepdog_jobs.rules import authors_rule_reason, rule_filter_reason, strip_answer_prefix
from sheepdog_jobs.samples import SAMPLE_FILE
from sheepdog_jobs.stages import synthesize as syn
from sheepdog_jobs.stages.common import settings_dump
from sheepdog_jobs.stages.train import IGNORE, encode

from .conftest import REPO
from .test_synthesize_paper_rules import CharTokenizer, model_dir
from .test_synthesize_shards import SEEDS, WORDS

PAPER = yaml.safe_load((REPO / "examples" / "paper.yaml").read_text())["spec"]
# The scripts' formats, written out by hand (generate_output.py, generate_output_iter2.py).
CHATML = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
          "{i}{x}<|im_end|>\n<|im_start|>assistant\n")
QUALITY = ("Here are the instruction and the response. Instruction: {full} Response: {out}.\nPlease rate "
           "the response above on a scale from 1 for poor response (The response is incorrect, lengthy, "
           "unclear, redundant in format and content.) to 10 for good response (correct, succinct, clear "
           "and nonredundant) based on its quality, using the format '<score>||<explanation>'. As a "
           "strict scoring expert, your score is: ")
FOLLOWING = ("Here are the instruction and the response. Instruction: {full} Response: {out}.\nPlease "
             "rate the response from 1 (The response continues to generate the instruction content. the "
             "response does not meet the format required by the instruction. the instruction is unclear "
             "and ambiguous.) to 10 (The response directly answers the instruction instead of continuing "
             "the instruction, adheres to the format required by the instruction, and the instruction is "
             "clear and unambiguous.) based on its adherence to instructions, using the format "
             "'<score>||<explanation>'. As a strict scoring expert, your score is: ")
STOPS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


# ---- rendered text ---------------------------------------------------------------------------
def test_paper_response_prompt_is_raw_in_iteration_1_and_chatml_from_iteration_2():
    s = SynthesisSpec.model_validate(PAPER["synthesis"])
    assert response_template(s, 1).format(instruction="Add 2 and 3.", input="") == "Add 2 and 3.\n"
    assert response_template(s, 1).format(instruction="Sum:", input="2, 3") == "Sum:2, 3\n"
    for it in (2, 3):
        assert response_template(s, it).format(instruction="Sum:", input="2, 3") == CHATML.format(i="Sum:", x="2, 3")
    assert CHATML_RESPONSE_PROMPT == CHATML.format(i="{instruction}", x="{input}")
    # sheepdog's default: one template in every iteration
    assert response_template(SynthesisSpec(), 1) is None and response_template(SynthesisSpec(), 2) is None


def test_authors_judge_prompt_tail_is_the_scripts_text():
    # input joined with a space; the response as generated, "." always; a space after the cue
    got = build_assessment_prompt("combined", "quality", "Name the color.", "The sky", " Blue.\n", tail="authors")
    assert got == QUALITY.format(full="Name the color. The sky", out=" Blue.\n")
    got = build_assessment_prompt("combined", "following", "Name a color.", "", "Red", tail="authors")
    assert got == FOLLOWING.format(full="Name a color.", out="Red")
    # sheepdog's tail: stripped response, no doubled ".", no trailing space
    ours = build_assessment_prompt("combined", "quality", "Name the color.", "The sky", " Blue.\n")
    assert ours.endswith("Response: Blue.\nPlease rate the response above") is False
    assert "Response: Blue.\n" in ours and ours.endswith("your score is:")


def test_paper_training_examples_are_chatml_closed_by_im_end():
    from sheepdog.api.spec import RunSpec

    spec = RunSpec.model_validate({**PAPER, "model": {"base": "/m"}})
    fmt, tok = PromptFormat(CharTokenizer(), "none"), CharTokenizer()
    rec = {"instruction": "Sum:", "input": "2, 3", "output": "5"}
    (ex,), _ = encode(fmt, tok, [rec], 100_000, training_template(spec, 1), spec.training.output_suffix)
    prompt = "".join(chr(t) for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == IGNORE)
    answer = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]
    assert prompt == CHATML.format(i="Sum:", x="2, 3")
    assert answer == [ord(c) for c in "5<|im_end|>"] + [CharTokenizer.eos_token_id]


# ---- the authors' rule set -------------------------------------------------------------------
@pytest.mark.parametrize("instruction,input,output,reason", [
    ("Explain photosynthesis in plants.", "", "Plants use light, e.g. sunlight.", "lettered_options"),
    ("Pick the right option.", "", "The answer is (b) here", "lettered_options"),
    ("Explain photosynthesis in plants.", "", "It uses light.\n\nWould you like more?", "question"),
    ("Explain photosynthesis in plants.", "", "Sure, do you know chlorophyll", "question"),
    ("Explain photosynthesis in plants.", "", "Answer Choices: light", "answer_choices"),
    ("Explain photosynthesis in plants.", "", "Light.\nUser: thanks", "role_marker"),
    ("Explain photosynthesis in plants.", "", "Light.\nassistant\nmore", "role_marker"),
    ("Explain photosynthesis in plants.", "", "光合作用", "cjk_text"),
    ("Explain photosynthesis in plants.", "", "There is no input here", "noinput_marker"),
    ("Describe <name> in one line.", "", "A person.", "placeholder"),
    ("Nonetheless, describe it.", "", "It is fine", "placeholder"),
    ("Describe the animal.", "None", "It is fine", "placeholder"),
    ("Describe the cat in one line.", "cat", "It purrs", "input_in_instruction"),
    ("Describe the cat in one line.", "", "", "empty_output"),
    ("Write a haiku about autumn leaves", "", "Leaves fall softly down", None),
])
def test_authors_rules_decide_as_the_scripts(instruction, input, output, reason):
    assert authors_rule_reason(instruction, input, output) == reason


def test_sheepdog_rules_keep_what_the_authors_rules_drop():
    for case in [("Explain photosynthesis in plants.", "", "Plants use light, e.g. sunlight."),
                 ("Nonetheless, describe it.", "", "It is fine"),
                 ("Explain photosynthesis in plants.", "", "It uses light.\n\nWould you like more?")]:
        assert authors_rule_reason(*case) is not None and rule_filter_reason(*case) is None


def test_authors_strip_a_leading_answer_prefix():
    assert strip_answer_prefix("答案: 42") == "42"
    assert strip_answer_prefix("答案：答案:42 答案: x") == "42 答案: x"
    assert strip_answer_prefix("The 答案: stays") == "The 答案: stays"


# ---- the authors' instruction parser ---------------------------------------------------------
GENERATED = (" Write a short poem about the ocean waves.\n6. Input:\n<noinput>\n###\n"
             "7. Instruction: Translate the sentence into French please.\n7. Input:\nI like cheese.\n###\n"
             "9. Instruction: A misnumbered item with enough words.\n9. Input:\nsome text\n###\n"
             "9. Instruction: An item without its input section here.\n###\n"
             "10. Instruction: Give the capital city of this country.\n10. Input:\nNo input.\n###\n"
             "11. Instruction: List three colors of the rainbow now.\n11. Input:\nRed, green\n"
             "11. Output:\nblue\n###\n"
             "12. Instruction: The last item is always dropped here.\n12. Input:\n<noinput>")


def test_authors_parser_is_strict_where_the_scripts_are():
    batch = parse_instructions_authors(GENERATED, first_index=6, drop_last=True)
    assert [(t.instruction, t.input) for t in batch.tasks] == [
        ("Write a short poem about the ocean waves.", ""),
        ("Translate the sentence into French please.", "I like cheese."),
    ]
    assert dict(batch.dropped) == {"unparsable": 2, "noinput_marker": 1, "format_leak": 1, "last_item": 1}
    # the tolerant parser keeps the misnumbered item, the one without Input: and "No input."
    tolerant = {t.instruction for t in parse_generated_instructions(GENERATED, first_index=6, drop_last=True).tasks}
    assert {"A misnumbered item with enough words.", "An item without its input section here.",
            "Give the capital city of this country."} <= tolerant


# ---- the dedup window ------------------------------------------------------------------------
def _lines(*requests):
    return [{"r": r, "dropped": {}, "candidates": [{"j": j, "instruction": t, "input": ""} for j, t in enumerate(c)]}
            for r, c in enumerate(requests)]


def test_window_dedup_forgets_earlier_windows_and_global_does_not():
    a, b = "Write a poem about the quiet harbor at night", "Summarize the history of violins in Italy"
    blocks = [_lines([a, b], [a])]
    window = syn.merge_blocks(["List prime numbers below twenty"], blocks, 0.7, 10, "i1-", window=2)
    assert [k["instruction"] for k in window.kept] == [a, b, a]
    glob = syn.merge_blocks(["List prime numbers below twenty"], blocks, 0.7, 10, "i1-")
    assert [k["instruction"] for k in glob.kept] == [a, b] and glob.dropped["rouge_similar"] == 1
    same = syn.merge_blocks([], [_lines([a, a])], 0.7, 10, "i1-", window=2)
    assert len(same.kept) == 1 and same.dropped["rouge_similar"] == 1  # within a window: compared


def test_added_settings_leave_fingerprints_alone_at_their_defaults():
    before = set(SynthesisSpec.model_fields) - set(syn.ADDED_SYNTHESIS)
    assert set(settings_dump(SynthesisSpec(), syn.ADDED_SYNTHESIS)) == before
    assert "dedup_scope" in settings_dump(SynthesisSpec(dedup_scope="window"), syn.ADDED_SYNTHESIS)
    assert "prompt_tail" not in settings_dump(AssessmentSpec(), syn.ADDED_ASSESSMENT)
    assert "rule_set" not in settings_dump(FilterSpec(), ("rule_set",))


# ---- two iterations of synthesize under the paper file ---------------------------------------
class ScriptsEngine(Engine):
    """Task lists in the scripts' format (no Output sections), "answer N" to a response prompt
    and "9||good" to a judge prompt; records (prompt, stop)."""

    name = "transformers"

    def __init__(self, model):
        super().__init__()
        self.model, self.asked, self.loads = model, [], 1

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        self.asked += [(p, tuple(stop)) for p in prompts]
        outs = []
        for p, s in zip(prompts, seed):
            rng = random.Random(s)
            if p.endswith("Instruction:"):
                n = int(p.rsplit("###\n", 1)[1].split(".")[0])
                items = ["Write about the " + " ".join(rng.sample(WORDS, 6)) + "." for _ in range(3)]
                body = "".join(f"{' ' if i == 0 else f'{n + i}. Instruction: '}{t}\n{n + i}. Input:\n<noinput>\n###\n"
                               for i, t in enumerate(items)) + f"{n + 3}. Instruction: cut short"
                outs.append(Completion(body, "stop", 40))
            elif "your score is:" in p[-20:]:
                outs.append(Completion("9||good", "stop", 3))
            else:
                outs.append(Completion(f"answer {rng.randrange(1000)}", "stop", 3))
        return outs

    def _digit_logprobs(self, jobs):
        raise AssertionError("the paper file scores as text")

    def perplexity(self, texts):
        raise AssertionError

    def embed(self, texts):
        raise AssertionError


@pytest.fixture
def scripts_engines(monkeypatch):
    monkeypatch.setenv(syn.POLL_ENV, "0.01")
    made = []

    def create(name, model, template, **kw):
        made.append(ScriptsEngine(model))
        return made[-1]

    monkeypatch.setattr(syn, "create_engine", create)
    return made


def paper_config(make_config, tmp_path, iteration, generator, base):
    spec = {k: PAPER[k] for k in ("synthesis", "assessment", "filter", "training")}
    spec = json.loads(json.dumps(spec))
    spec["synthesis"].update({"dataSize": 4, "maxRequests": 12})
    spec.update({"engine": "transformers", "seed": {"examplesPerRequest": 2}})
    return make_config(tmp_path / "run", "synthesize", spec=spec, model=generator, seed_file=SEEDS,
                       iteration=iteration, generator_model=generator, base_model=base, judge_model=base)


def test_paper_file_two_iterations_prompt_samples(tmp_path, make_config, scripts_engines):
    base, m1 = model_dir(tmp_path / "base"), model_dir(tmp_path / "i1model")
    for it, generator in ((1, base), (2, m1)):
        scripts_engines.clear()
        cfg = paper_config(make_config, tmp_path, it, generator, base)
        summary = syn.run(cfg)
        out = Path(cfg.out_dir)
        assert summary["instructionParser"] == "authors" and summary["ruleSet"] == "authors"
        assert summary["dedupScope"] == "window:100"
        assert summary["parserDropped"].get("last_item", 0) >= 1 and summary["ruleDropped"] == {}
        lines = [json.loads(x) for x in (out / SAMPLE_FILE).read_text().splitlines()]
        assert all(set(x) == {"phase", "iteration", "model", "prompt", "output"} for x in lines)
        assert all(x["iteration"] == it for x in lines)
        by = {}
        for x in lines:
            by.setdefault(x["phase"], []).append(x)
        assert list(by) == ["instructions", "responses", "assessment:quality", "assessment:following"]
        # the meta prompt stays raw in every iteration, asked of the generator
        for x in by["instructions"]:
            assert x["prompt"].startswith("You are asked to come up with a set of 20 diverse task instructions.")
            assert x["prompt"].endswith("Instruction:") and x["model"] == generator
        # responses: raw "{instruction}{input}\n" in iteration 1, ChatML from iteration 2
        pairs = storage.read_jsonl(out / "responses.jsonl")
        first = pairs[0]
        want = (f"{first['instruction']}{first['input']}\n" if it == 1
                else CHATML.format(i=first["instruction"], x=first["input"]))
        assert by["responses"][0]["prompt"] == want and by["responses"][0]["model"] == generator
        assert by["responses"][0]["output"] == first["output"]
        # the judge is the base model in both iterations, with the scripts' raw prompt
        for crit, template in (("quality", QUALITY), ("following", FOLLOWING)):
            x = by[f"assessment:{crit}"][0]
            assert x["model"] == base and x["output"] == "9||good"
            assert x["prompt"] == template.format(full=first["instruction"], out=first["output"])
        # what the engines were asked is what the samples show; responses stop as the scripts'
        asked = {p: stop for e in scripts_engines for p, stop in e.asked}
        assert want in asked and asked[want] == STOPS
        assert [e.model for e in scripts_engines] == ([base] if it == 1 else [m1, base])


# ---- evaluate: the model of iteration N is asked in iteration N+1's template ----------------
@pytest.mark.parametrize("iteration,chatml", [(0, False), (1, True)])
def test_evaluate_asks_in_the_evaluated_models_template_and_samples_it(tmp_path, monkeypatch, iteration, chatml):
    from dataclasses import replace

    from .test_evaluate_stage import ScriptedEngine, make_config as eval_config
    from sheepdog_jobs.stages import evaluate as evaluate_stage
    from sheepdog_jobs.stages.evaluate import run as evaluate

    # Reporting the metrics to MLflow imports transformers' trainer (a minute on a busy
    # machine) and is not what this test checks.
    monkeypatch.setattr(evaluate_stage, "_report_evaluation", lambda cfg, finite: None)

    # heldout (the shipped set) rather than an IFEval suite: its checkers cost a minute to load
    cfg = eval_config(tmp_path, {"suites": ["heldout"], "limit": 4},
                      synthesis={"laterResponsePrompt": PAPER["synthesis"]["laterResponsePrompt"]})
    cfg = cfg.model_copy(update={"iteration": iteration, "out_dir": str(tmp_path / f"i{iteration}" / "evaluate")}) \
        if hasattr(cfg, "model_copy") else replace(cfg, iteration=iteration)
    evaluate(cfg, engine=ScriptedEngine(lambda p: "ok"))
    lines = [json.loads(x) for x in (Path(cfg.out_dir) / SAMPLE_FILE).read_text().splitlines()]
    assert len(lines) == 3 and {x["phase"] for x in lines} == {"evaluate:heldout"}
    assert all(x["model"] == cfg.model_out and x["iteration"] == iteration and x["output"] == "ok" for x in lines)
    prompt = lines[0]["prompt"]
    if chatml:
        assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
        assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    else:
        assert "<|im_start|>" not in prompt and prompt.endswith("\n")


# ---- curate: the rule set in effect and what it dropped --------------------------------------
@pytest.mark.parametrize("rule_set,kept,dropped", [
    ("authors", ["42", "Leaves fall softly down"], {"lettered_options": 1, "placeholder": 1}),
    # sheepdog's rules keep "e.g." and "Nonetheless" but drop the untouched Chinese prefix
    ("sheepdog", ["Leaves fall softly down", "Plants use light, e.g. sunlight.", "It is fine"], {"cjk_text": 1}),
])
def test_curate_applies_and_reports_the_rule_set(tmp_path, make_config, rule_set, kept, dropped):
    from sheepdog_jobs.stages import curate

    cfg = make_config(tmp_path / "run", "curate", spec={"filter": {"ruleSet": rule_set, "threshold": 8,
                                                                     "keepFraction": None},
                                                          "assessment": {"scoring": "text"}})
    src = tmp_path / "run" / "i1" / "synthesize"
    pairs = [("What is six times seven?", "", "答案: 42"), ("Write a haiku about autumn", "", "Leaves fall softly down"),
             ("Explain photosynthesis in plants.", "", "Plants use light, e.g. sunlight."),
             ("Nonetheless, describe the weather.", "", "It is fine")]
    storage.write_jsonl(src / "assessments.jsonl", [
        {"id": f"i1-{n:06d}", "instruction": i, "input": x, "output": o, "ruleReason": None,
         "scores": {"quality": 9, "following": 9}} for n, (i, x, o) in enumerate(pairs)])
    storage.write_manifest(src, ["assessments.jsonl"], "fp")
    summary = curate.run(cfg)
    assert summary["ruleSet"] == rule_set and summary["ruleDropped"] == dropped
    assert [r["output"] for r in storage.read_jsonl(Path(cfg.out_dir) / "kept.jsonl")] == kept
