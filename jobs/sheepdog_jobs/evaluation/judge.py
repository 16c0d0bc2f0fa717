"""Judges for the held-out set: the model itself (as in self-assessment) or an HTTP endpoint.

Both ask the very prompt that synthesize's self-assessment asks (prompts.build_assessment_prompt
with the run's ``assessment.prompt`` kind, ``rubricFirst`` and ``promptTail``), one prompt per criterion, and
read a score 1..10 from the answer:

* ``SelfJudge``: the model under evaluation, scored like synthesize scores
  (``assessment.scoring``): ``text`` decodes a judgement at ``assessment.temperature`` within
  ``assessment.maxTokens`` and reads it with the run's ``assessment.parse`` rule; ``logprobs``
  reads the expected score from the next-token distribution (scores.logprob_score);
* ``HttpJudge``: any OpenAI-compatible server (``POST {url}/chat/completions``) through the
  openai client, the prompt as one user message, greedy, a few tokens; its first number is the
  score. Timeout, retries and concurrency are evaluation.judge's. The API key comes
  from the environment variable ``SHEEPDOG_JUDGE_API_KEY`` (the operator fills it from
  ``evaluation.judge.apiKeySecretRef`` by reference; it is never in the stage config).

A judgement without a usable score counts as unscored (never silently dropped).
"""

from __future__ import annotations

import json
import os
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


def _prompts(pairs: Sequence[Pair], kind: str, criteria: Sequence[str], rubric_first: bool, tail: str):
    return [build_assessment_prompt(kind, c, p.instruction, p.input, p.response, rubric_first=rubric_first,
                                    tail=tail)
            for p in pairs for c in criteria]


def _regroup(flat: list[Judgement], n_pairs: int, criteria: Sequence[str]) -> list[dict[str, Judgement]]:
    k = len(criteria)
    return [{c: flat[i * k + j] for j, c in enumerate(criteria)} for i in range(n_pairs)]


class SelfJudge:
    """The current model judges its own held-out answers (assessment settings of the run)."""

    def __init__(self, engine, *, kind: str, scoring: str, temperature: float, top_p: float,
                 max_tokens: int, seed: int, rubric_first: bool = False, parse: str = "strict",
                 tail: str = "sheepdog"):
        self.engine, self.kind, self.scoring = engine, kind, scoring
        self.parse = SCORE_PARSERS[parse]
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.seed, self.rubric_first, self.tail = seed, rubric_first, tail

    @classmethod
    def from_spec(cls, engine, spec) -> "SelfJudge":
        a = spec.assessment
        return cls(engine, kind=a.prompt, scoring=a.scoring, temperature=a.temperature,
                   top_p=spec.synthesis.top_p, max_tokens=a.max_tokens,
                   seed=spec.synthesis.random_seed, rubric_first=a.rubric_first, parse=a.parse,
                   tail=a.prompt_tail)

    def judge(self, pairs: Sequence[Pair], criteria: Sequence[str]) -> list[dict[str, Judgement]]:
        prompts = _prompts(pairs, self.kind, criteria, self.rubric_first, self.tail)
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
    """An OpenAI-compatible chat-completions endpoint as the judge, through the openai client.

    ``timeout`` bounds one request (seconds), ``max_retries`` is how many times the client
    tries again after a timeout, a dropped connection, 408, 409, 429 or a 5xx (with its
    exponential backoff and the server's Retry-After), ``concurrency`` how many requests are in
    flight at once (evaluation.judge.timeoutSeconds, maxRetries, concurrency)."""

    def __init__(self, url: str, model: str, *, api_key: Optional[str] = None, max_tokens: int = 16,
                 kind: str = "combined", rubric_first: bool = False, timeout: float = 300.0,
                 max_retries: int = 2, concurrency: int = 4, tail: str = "sheepdog"):
        from openai import OpenAI

        url = url.rstrip("/")
        # The client appends /chat/completions itself; a URL that names it is accepted too.
        base = url[: -len("/chat/completions")] if url.endswith("/chat/completions") else url
        self.kind, self.rubric_first, self.tail = kind, rubric_first, tail
        self.endpoint = base + "/chat/completions"
        self.model, self.max_tokens = model, max_tokens
        self.timeout, self.max_retries, self.concurrency = timeout, max(0, max_retries), max(1, concurrency)
        # Without a key no Authorization header is sent (a local vLLM server wants none): the
        # client insists on a key, so it gets a placeholder and each request omits the header.
        from openai import Omit

        self.client = OpenAI(base_url=base, api_key=api_key or "none", timeout=timeout,
                             max_retries=self.max_retries)
        self._headers = None if api_key else {"Authorization": Omit()}

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
                   kind=spec.assessment.prompt, rubric_first=spec.assessment.rubric_first,
                   timeout=judge_spec.timeout_seconds, max_retries=judge_spec.max_retries,
                   concurrency=judge_spec.concurrency, tail=spec.assessment.prompt_tail)

    def _post(self, prompt: str) -> str:
        return self.chat([{"role": "user", "content": prompt}], self.max_tokens)

    def _map(self, fn, items: Sequence) -> list:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def chat_many(self, conversations: Sequence[Sequence[dict]], max_tokens: int) -> list[str]:
        """One greedy completion per conversation (chat messages), ``concurrency`` at a time."""
        if not conversations:
            return []
        return self._map(lambda messages: self.chat(messages, max_tokens), conversations)

    def chat(self, messages: Sequence[dict], max_tokens: int) -> str:
        """The text of one greedy chat completion (MT-Bench sends a system and a user message)."""
        import openai

        try:
            completion = self.client.chat.completions.create(
                model=self.model, messages=list(messages), temperature=0, max_tokens=max_tokens,
                extra_headers=self._headers)
        except openai.APIStatusError as exc:
            detail = exc.response.text[:300] if exc.response is not None else str(exc)
            retried = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            raise JudgeError(
                f"judge endpoint {self.endpoint}: HTTP {exc.status_code}: {detail}"
                + (f" (after {self.max_retries + 1} attempts)" if retried else "")) from exc
        except openai.APITimeoutError as exc:
            raise JudgeError(f"judge endpoint {self.endpoint}: no answer within {self.timeout:g} s, "
                             f"{self.max_retries + 1} attempts (evaluation.judge.timeoutSeconds, "
                             "maxRetries)") from exc
        except openai.APIConnectionError as exc:
            raise JudgeError(f"judge endpoint {self.endpoint}: {exc.__cause__ or exc} "
                             f"(after {self.max_retries + 1} attempts)") from exc
        except openai.OpenAIError as exc:  # an answer that is no chat completion
            raise JudgeError(f"judge endpoint {self.endpoint}: {exc}") from exc
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as exc:
            raise JudgeError(f"judge endpoint {self.endpoint}: no choices[0].message.content in "
                             f"the answer {str(completion)[:200]!r}") from exc
        return content if isinstance(content, str) else ""

    def judge(self, pairs: Sequence[Pair], criteria: Sequence[str]) -> list[dict[str, Judgement]]:
        prompts = _prompts(pairs, self.kind, criteria, self.rubric_first, self.tail)
        if not prompts:
            return []
        texts = self._map(self._post, prompts)
        flat = []
        for text in texts:
            score = extract_score(text)
            flat.append(Judgement(None if score is None else float(score), text))
        return _regroup(flat, len(pairs), criteria)
