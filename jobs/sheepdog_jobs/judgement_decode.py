"""Text judgements decoded only as far as their score (assessment.decode: score).

With assessment.parse strict a judgement's score is the number it starts with
('<score>||<explanation>'): the 1000 tokens of explanation after it change nothing. So the
judgement is decoded first with a stop at '||' and a budget of scoreMaxTokens; only a request
whose text cannot decide its score yet (no number, or one that more characters could still
extend: "9." before "5", "1" before "0") is decoded again to the full maxTokens. Each request
samples from its own seed, and a stop or a budget only ends the sampling, so the short decode
is a prefix of the full one and the score read from it is the full decode's score (up to the
engine's own batch-dependent numerics, which any rerun has).
"""

from __future__ import annotations

import re
from typing import Sequence

from sheepdog_jobs.engines.base import Completion, Engine
from sheepdog_jobs.parsing import _LEADING_NUMBER_RE  # the strict rule's own pattern, not a copy

SCORE_STOP = "||"
# The strict prefix (whitespace, punctuation, a "-" not before a digit) then a letter or "_":
# no number can follow any more, whatever comes next.
_NO_NUMBER_RE = re.compile(r"(?:[^\w-]|-(?=[^0-9]))*[^\W\d]")


def score_is_final(text: str, finish_reason: str) -> bool:
    """Whether extract_score_strict(text) is the score of every continuation of `text`. A
    completion ended by a stop (finish_reason "stop": the stop string, or the end of the
    sequence) goes on with '||' at least, which cannot be part of a number."""
    probe = text + SCORE_STOP if finish_reason == "stop" else text
    m = _LEADING_NUMBER_RE.match(probe)
    if m is None:
        return _NO_NUMBER_RE.match(probe) is not None
    rest = probe[m.end():]
    if not rest:
        return False  # more digits may follow
    if rest[0] == "." and "." not in m.group(2):
        return len(rest) > 1 and not rest[1].isdigit()  # "9." may still become "9.5"
    return True


def generate_judgements(engine: Engine, prompts: Sequence[str], *, temperature: float, top_p: float,
                        max_tokens: int, seeds: Sequence[int], decode: str, score_max_tokens: int,
                        ) -> tuple[list[Completion], dict]:
    """The judgements of `prompts` and what decoding them cost: {"shortDecodes", "fullDecodes",
    "judgementTokens"}. decode "full" (or a short budget no smaller than the full one): one
    decode to max_tokens, as the authors' scripts."""
    seeds = list(seeds)
    if decode == "full" or score_max_tokens >= max_tokens:
        outs = engine.generate(prompts, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seeds)
        return outs, {"shortDecodes": 0, "fullDecodes": len(outs), "judgementTokens": _tokens(outs)}
    outs = engine.generate(prompts, temperature=temperature, top_p=top_p, max_tokens=score_max_tokens,
                           seed=seeds, stop=[SCORE_STOP])
    again = [i for i, o in enumerate(outs) if not score_is_final(o.text, o.finish_reason)]
    tokens = _tokens(outs)
    if again:
        full = engine.generate([prompts[i] for i in again], temperature=temperature, top_p=top_p,
                               max_tokens=max_tokens, seed=[seeds[i] for i in again])
        tokens += _tokens(full)
        for i, o in zip(again, full):
            outs[i] = o
    return outs, {"shortDecodes": len(outs), "fullDecodes": len(again), "judgementTokens": tokens}


def _tokens(outs: Sequence[Completion]) -> int:
    return sum(o.num_tokens for o in outs)
