"""The engine interface the stages program against (vLLM or transformers behind it)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional, Sequence

from sheepdog_jobs.engines.prompting import PromptFormat, combine_digit_logprobs


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (end of sequence) | "length" (max_tokens reached)
    num_tokens: int  # generated tokens, the end-of-sequence token included


class EngineError(RuntimeError):
    pass


class Engine(abc.ABC):
    """One loaded model. Prompts are plain strings; the engine applies the chat template
    setting (PromptFormat) and feeds token ids, identically in every implementation."""

    name: str = "?"

    def __init__(self) -> None:
        self.loads = 0  # model loads so far (the summary's modelLoads)
        self.load_seconds = 0.0
        self.generated_tokens = 0
        # Prompt tokens the engine processed (prefill): generate's prompts, score_digits' and
        # perplexity's inputs; with generated_tokens, what a phase costs (synthesize's manifests).
        self.prompt_tokens = 0
        self.generate_seconds = 0.0
        self.format: Optional[PromptFormat] = None
        self.adapter: Optional[str] = None  # a LoRA adapter served over the base (adapters.py)

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], *, temperature: float, top_p: float,
                 max_tokens: int, seed: Sequence[int] | int, stop: Sequence[str] = ()) -> list[Completion]:
        """One completion per prompt; seed is one int per prompt (or a base: seed + index),
        so a prompt's sample does not depend on what else is in the batch. ``stop``: strings
        that end a completion as soon as one is generated; the text before it is returned
        (the stop string itself is not) with finish_reason "stop", as vLLM does."""

    # Keeping the engine fed (engine_feed.py): submit() queues a unit's prompts, collect()
    # returns their completions. An engine that batches continuously (vLLM) runs the requests of
    # every submitted unit together, so the next unit's requests fill the slots the draining one
    # frees; this default runs the call at collect(), one unit after the other.
    request_seeds: bool = True  # False: one global sampling seed (synthesis.seedScope: global)

    def submit(self, prompts: Sequence[str], **sampling):
        return (list(prompts), sampling)

    def collect(self, handle) -> list[Completion]:
        prompts, sampling = handle
        return self.generate(prompts, **sampling)

    def cancel(self, handle) -> None:
        """Drop a submitted unit no one will collect (nothing ran for it here)."""

    def score_digits(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        """log P(score = k) for k = "1".."10" as the next thing after each prompt.

        Tokenizers that write "10" as "1" + "0" need P("0" | prompt + "1") too; both engines
        get it from one extra position (transformers) or one prefix-cached request (vLLM)."""
        fmt = self.format
        jobs = []
        for p in prompts:
            rendered = fmt.render(p)
            plan = fmt.digit_plan(rendered)
            ids = fmt.encode_rendered(rendered) + list(plan.sep)
            jobs.append((ids, plan))
        self.prompt_tokens += sum(len(ids) for ids, _ in jobs)
        raw = self._digit_logprobs(jobs)
        return [combine_digit_logprobs(first, plan.ten[0], ten_lp)
                for (ids, plan), (first, ten_lp) in zip(jobs, raw)]

    @abc.abstractmethod
    def _digit_logprobs(self, jobs) -> list[tuple[dict[str, float], float]]:
        """For each (ids, plan): first-token log-probs of "1".."9" after ids, and the log-prob
        of plan.ten's token: after ids ("single") or after ids + "1" ("split")."""

    @abc.abstractmethod
    def perplexity(self, texts: Sequence[str]) -> list[float]:
        """exp(mean token NLL) of each untemplated text under the model."""

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]):
        """numpy array [n, hidden]: mean of the last layer's hidden states over the tokens."""

    def close(self) -> None:
        pass

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.generate_seconds if self.generate_seconds else 0.0


def seeds_for(seed: Sequence[int] | int, n: int) -> list[int]:
    if isinstance(seed, int):
        return [seed + i for i in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} prompts")
    return seeds


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """(text before the first stop string, whether one occurred)."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)
