"""Judges for the held-out set: the model itself (as in self-assessment) or an HTTP endpoint.

Both ask the very prompt that synthesize's self-assessment asks (prompts.build_assessment_prompt
with the run's ``assessment.prompt`` kind and ``rubricFirst``), one prompt per criterion, and
read a score 1..10 from the answer:

* ``SelfJudge``: the model under evaluation, scored like synthesize scores
  (``assessment.scoring``): ``text`` decodes a judgement at ``assessment.temperature`` within
  ``assessment.maxTokens`` and reads it with the run's ``assessment.parse`` rule; ``logprobs``
  reads the expected score from the next-token distribution (scores.logprob_score);
* ``HttpJudge``: any OpenAI-compatible server (``POST {url}/chat/completions``), the prompt as
  one user message, greedy, a few tokens; its first number is the score. The API key comes
  from the environment variable ``SHEEPDOG_JUDGE_API_KEY`` (the operator fills it from
  ``evaluation.judge.apiKeySecretRef`` by reference; it is never in the stage config).

A judgement without a usable score counts as unscored (never silently dropped).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

from sheepdog_jobs.constants import JUDGE_API_KEY_ENV
from sheepdog_jobs.parsing import SCORE_PARSERS, extract_score
from sheepdog_jobs.prompts import build_assessment_prompt
from sheepdog_jobs.scores import logprob_score

__all__ = ["Judgement", "Pair", "SelfJudge", "HttpJudge", "JudgeError", "JUDGE_API_KEY_ENV",
           "judge_criteria"]



class JudgeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Pair:
    instruction: str
    input: str
    response: str


@dataclass(frozen=True)
class Judgement:
    score: Optional[float]  # None: no usable score
    raw: str  # the judge's text, or the digit distribution's summary for logprobs


def judge_criteria(criteria: Sequence[str]) -> list[str]:
    """The run's assessment criteria; with [] (the Self-Instruct baseline, no self-assessment)
    the held-out set is still judged, on both criteria."""
    return list(criteria) or ["quality", "following"]


def _prompts(pairs: Sequence[Pair], kind: str, criteria: Sequence[str], rubric_first: bool):
    return [build_assessment_prompt(kind, c, p.instruction, p.input, p.response, rubric_first=rubric_first)
            for p in pairs for c in criteria]


def _regroup(flat: list[Judgement], n_pairs: int, criteria: Sequence[str]) -> list[dict[str, Judgement]]:
    k = len(criteria)
    return [{c: flat[i * k + j] for j, c in enumerate(criteria)} for i in range(n_pairs)]


class SelfJudge:
    """The current model judges its own held-out answers (assessment settings of the run)."""

    def __init__(self, engine, *, kind: str, scoring: str, temperature: float, top_p: float,
                 max_tokens: int, seed: int, rubric_first: bool = False, parse: str = "strict"):
        self.engine, self.kind, self.scoring = engine, kind, scoring
        self.parse = SCORE_PARSERS[parse]
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.seed, self.rubric_first = seed, rubric_first

    @classmethod
    def from_spec(cls, engine, spec) -> "SelfJudge":
        a = spec.assessment
        return cls(engine, kind=a.prompt, scoring=a.scoring, temperature=a.temperature,
                   top_p=spec.synthesis.top_p, max_tokens=a.max_tokens,
                   seed=spec.synthesis.random_seed, rubric_first=a.rubric_first, parse=a.parse)

    def judge(self, pairs: Sequence[Pair], criteria: Sequence[str]) -> list[dict[str, Judgement]]:
        prompts = _prompts(pairs, self.kind, criteria, self.rubric_first)
        if not prompts:
            return []
        if self.scoring == "logprobs":
            flat = []
            for dist in self.engine.score_digits(prompts):
                expected, argmax, mass = logprob_score(dist)
                flat.append(Judgement(expected, json.dumps({"argmax": argmax, "mass": round(mass, 6)})))
        else:
            outs = self.engine.generate(prompts, temperature=self.temperature, top_p=self.top_p,
                                        max_tokens=self.max_tokens, seed=self.seed)
            flat = []
            for out in outs:
                score = self.parse(out.text)
                flat.append(Judgement(None if score is None else float(score), out.text))
        return _regroup(flat, len(pairs), criteria)


class HttpJudge:
    """An OpenAI-compatible chat-completions endpoint as the judge."""

    def __init__(self, url: str, model: str, *, api_key: Optional[str] = None, max_tokens: int = 16,
                 kind: str = "combined", rubric_first: bool = False, timeout: float = 60.0,
                 retries: int = 3, workers: int = 4):
        url = url.rstrip("/")
        self.kind, self.rubric_first = kind, rubric_first
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.api_key, self.max_tokens = model, api_key, max_tokens
        self.timeout, self.retries, self.workers = timeout, max(1, retries), max(1, workers)

    @classmethod
    def from_spec(cls, spec, environ=None) -> "HttpJudge":
        """From a RunSpec with evaluation.judge set."""
        environ = os.environ if environ is None else environ
        judge_spec = spec.evaluation.judge
        key = None
        if judge_spec.api_key_secret_ref is not None:
            key = environ.get(JUDGE_API_KEY_ENV)
            if not key:
                ref = judge_spec.api_key_secret_ref
                raise JudgeError(
                    f"evaluation.judge.apiKeySecretRef is set (Secret {ref.name}, key {ref.key}) but "
                    f"the environment variable {JUDGE_API_KEY_ENV} is empty; the operator sets it "
                    "from the Secret (locally: export it before `sheepdog run`)")
        return cls(judge_spec.url, judge_spec.model, api_key=key, max_tokens=judge_spec.max_tokens,
                   kind=spec.assessment.prompt, rubric_first=spec.assessment.rubric_first)

    def _post(self, prompt: str) -> str:
        return self.chat([{"role": "user", "content": prompt}], self.max_tokens)

    def chat_many(self, conversations: Sequence[Sequence[dict]], max_tokens: int) -> list[str]:
        """One greedy completion per conversation (chat messages), a few requests at a time."""
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(conversations))) as pool:
            return list(pool.map(lambda messages: self.chat(messages, max_tokens), conversations))

    def chat(self, messages: Sequence[dict], max_tokens: int) -> str:
        """The text of one greedy chat completion (MT-Bench sends a system and a user message)."""
        body = json.dumps({
            "model": self.model,
            "messages": list(messages),
            "temperature": 0,
            "max_tokens": max_tokens,
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries):
            req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                last = f"HTTP {exc.code} from {self.endpoint}: {detail}"
                if exc.code not in (408, 409, 429) and exc.code < 500:
                    raise JudgeError(f"judge endpoint refused the request: {last}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{self.endpoint}: {getattr(exc, 'reason', exc)}"
            except ValueError as exc:
                raise JudgeError(f"judge endpoint {self.endpoint} did not answer JSON: {exc}") from exc
            if attempt + 1 < self.retries:
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
        else:
            raise JudgeError(f"judge endpoint failed after {self.retries} attempts: {last}")
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"judge endpoint {self.endpoint}: no choices[0].message.content in "
                             f"the answer {str(payload)[:200]!r}") from exc
        return content if isinstance(content, str) else ""

    def judge(self, pairs: Sequence[Pair], criteria: Sequence[str]) -> list[dict[str, Judgement]]:
        prompts = _prompts(pairs, self.kind, criteria, self.rubric_first)
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(prompts))) as pool:
            texts = list(pool.map(self._post, prompts))
        flat = []
        for text in texts:
            score = extract_score(text)
            flat.append(Judgement(None if score is None else float(score), text))
        return _regroup(flat, len(pairs), criteria)
