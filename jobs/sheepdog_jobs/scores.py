"""Scoring a judgement from the next-token distribution instead of sampled text.

The reference decodes up to 1000 tokens at temperature 1 to read one number (ISHEEP.md,
"known weaknesses").  Instead, one forward pass on the assessment prompt gives the
log-probabilities of the first answer token; those of the score tokens "1".."10" give a
distribution over scores.

Math.  Let p_k = exp(logprob_k) for each score k in 1..10 that is given (missing scores have
p_k = 0).  The covered mass is M = sum_k p_k (the share of the model's belief that answers
with a bare score at all; the rest went to other tokens).  Renormalised over the scores,
q_k = p_k / M, and

    expected = sum_k k * q_k        (a real number in [1, 10])
    argmax   = the k with the largest p_k (ties: the smallest k, the stricter reading)

When M == 0 (nothing given, or every probability underflowed) the result is (None, None, 0.0).

"10".  Many tokenizers have no "10" token: the model writes "1" then "0".  The first-token
probability of "1" then covers both scores 1 and 10 (and "1.", "1|", ...).  Callers that can
afford a second step pass logprob("10") = logprob("1") + logprob("0" | "1") and
``ten_shares_one_prefix=True``: p_10 is then subtracted from p_1 (clamped at 0).  Callers
with a real "10" token pass it with the default False.  Without a "10" key, 10 is never
predicted (the measured tiny-model case: digits 1..9 only).

Keys are stripped of whitespace and of the word-start markers of raw token strings ("\u2581"
in SentencePiece, "\u0120" in byte-level BPE) before matching, so "8", " 8", "\u25818" all
count for 8, and their probabilities add (they are different tokens).  Keys that are not a
score after stripping are ignored; a NaN log-probability is an error.
"""

from __future__ import annotations

import math
from typing import Mapping

__all__ = ["logprob_score"]

_SCORES = {str(k): k for k in range(1, 11)}


def logprob_score(digit_logprobs: Mapping[str, float], ten_shares_one_prefix: bool = False
                  ) -> tuple[float | None, int | None, float]:
    """(expected score renormalised over 1..10, argmax score, probability mass covered)."""
    probs = [0.0] * 11  # index = score
    for key, logprob in digit_logprobs.items():
        score = _SCORES.get(str(key).strip().lstrip("\u2581\u0120"))
        if score is None:
            continue
        logprob = float(logprob)
        if math.isnan(logprob):
            raise ValueError(f"log-probability of {key!r} is NaN")
        probs[score] += math.exp(min(logprob, 0.0))
    if ten_shares_one_prefix:
        probs[1] = max(0.0, probs[1] - probs[10])
    mass = sum(probs)
    if mass <= 0.0:
        return None, None, 0.0
    expected = sum(k * p for k, p in enumerate(probs)) / mass
    argmax = max(range(1, 11), key=lambda k: (probs[k], -k))
    return expected, argmax, mass
