"""ROUGE-L similarity and the instruction de-duplication of I-SHEEP stage 1.

The reference (Self-Instruct / Alpaca / I-SHEEP) drops a new instruction whose ROUGE-L F1
against ANY instruction already in the pool (seeds + kept) is > 0.7, computed with
``rouge_score.RougeScorer(["rougeL"], use_stemmer=False)``.  This module reproduces that
without depending on rouge_score:

* ``tokenize`` follows rouge_score's default tokenizer: lowercase, every run of characters
  outside ``[a-z0-9]`` becomes a separator, no stemming.  (So "don't" -> ["don", "t"], and
  non-ASCII letters are separators: "café" -> ["caf"].)
* the F1 is computed exactly as rouge_score does, ``p = lcs/len(b)``, ``r = lcs/len(a)``,
  ``f = 2*p*r/(p+r)`` in floating point.  Mathematically that is ``2*lcs/(len(a)+len(b))``,
  but at exact ties the float result can land one ulp above the threshold (e.g. lcs=28,
  lengths 43 and 37 give 0.7000000000000001 > 0.7), and we want the reference's decisions.

Two de-duplicators make identical decisions:

* ``ExactDedup``: the reference algorithm, a full DP LCS against every pool item.
* ``FastDedup``: never compares most pairs.  For a candidate of n tokens, F1 > t needs an
  LCS of at least ``L_min = t*n/(2-t)`` (because F1 = 2L/(n+m) and L <= m), and any pool item
  with LCS >= L_min shares a token with every set of ``n - L_min + 1`` candidate positions.
  So only the posting lists (inverted index token -> pool items) of the candidate's rarest
  ``n - L_min + 1`` tokens are read ("prefix filtering").  Each item found is then bounded by
  lengths, F1 <= 2*min(n,m)/(n+m), and by multiset token overlap, LCS <= sum(min(counts)),
  before a bit-parallel LCS on integer token ids (Allison-Dix / Hyyrö: one big-int update per
  token of the pool item).  Bounds are exact; a pair is skipped only when its bound is below
  the threshold by a margin (1e-9) far larger than float error, so skipping never changes a
  decision.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

__all__ = ["tokenize", "lcs_length", "rouge_l_f1", "ExactDedup", "FastDedup"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# A bound must be below the threshold by this much before a pair is skipped: float error of
# the F1 formula is ~1e-16, so skipping can never hide a pair that the exact path would flag.
_MARGIN = 1e-9


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokenization (no stemming)."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, classic O(len(a)*len(b)) DP (two rows)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _f1(lcs: int, len_a: int, len_b: int) -> float:
    # Same float operations as rouge_score._score_lcs + scoring.fmeasure.
    if lcs == 0 or len_a == 0 or len_b == 0:
        return 0.0
    precision = lcs / len_b
    recall = lcs / len_a
    return 2 * precision * recall / (precision + recall)


def rouge_l_f1(a_tokens: Sequence[str], b_tokens: Sequence[str]) -> float:
    """ROUGE-L F1 between two token lists (0.0 when either is empty), as rouge_score."""
    return _f1(lcs_length(a_tokens, b_tokens), len(a_tokens), len(b_tokens))


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"ROUGE-L threshold must be within 0..1, got {threshold}")
    return threshold


class ExactDedup:
    """Reference de-duplicator: compares a candidate with every pool item (quadratic)."""

    def __init__(self, pool_texts: Iterable[str] = (), threshold: float = 0.7):
        self.threshold = _check_threshold(threshold)
        self._pool: list[list[str]] = [tokenize(t) for t in pool_texts]

    def __len__(self) -> int:
        return len(self._pool)

    def max_similarity(self, text: str) -> float:
        tokens = tokenize(text)
        return max((rouge_l_f1(tokens, p) for p in self._pool), default=0.0)

    def is_novel(self, text: str) -> bool:
        tokens = tokenize(text)
        return not any(rouge_l_f1(tokens, p) > self.threshold for p in self._pool)

    def add_if_novel(self, text: str) -> bool:
        """Add ``text`` to the pool unless it is too similar to an item; True if added."""
        if not self.is_novel(text):
            return False
        self._pool.append(tokenize(text))
        return True


class FastDedup:
    """Same decisions as ExactDedup, without comparing most pairs (see module docstring)."""

    def __init__(self, pool_texts: Iterable[str] = (), threshold: float = 0.7):
        self.threshold = _check_threshold(threshold)
        self._vocab: dict[str, int] = {}
        self._items: list[tuple[list[int], dict[int, int]]] = []  # (token ids, id counts)
        self._postings: dict[int, list[int]] = {}  # token id -> pool items containing it
        for text in pool_texts:
            self._add(self._encode(text))

    def __len__(self) -> int:
        return len(self._items)

    def _encode(self, text: str) -> list[int]:
        vocab = self._vocab
        return [vocab.setdefault(t, len(vocab)) for t in tokenize(text)]

    def _add(self, ids: list[int]) -> None:
        index = len(self._items)
        counts = Counter(ids)
        self._items.append((ids, dict(counts)))
        for tok in counts:
            self._postings.setdefault(tok, []).append(index)

    @staticmethod
    def _masks(ids: list[int]) -> dict[int, int]:
        # Bit i of masks[t] is set when ids[i] == t (for the bit-parallel LCS).
        masks: dict[int, int] = {}
        for i, tok in enumerate(ids):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        return masks

    @staticmethod
    def _lcs(masks: dict[int, int], n: int, other: list[int]) -> int:
        # Bit-parallel LCS: zero bits of v (within n bits) count the LCS.
        full = (1 << n) - 1
        v = full
        for tok in other:
            m = masks.get(tok)
            if m:
                u = v & m
                v = ((v + u) | (v - u)) & full
        return n - v.bit_count()

    def _candidates(self, ids: list[int], counts: Counter, min_lcs: int) -> set[int]:
        # Items sharing a token with the (n - min_lcs + 1) rarest positions of the candidate.
        postings = self._postings
        by_rarity = sorted(counts, key=lambda t: len(postings.get(t, ())))
        need = len(ids) - min_lcs + 1
        found: set[int] = set()
        for tok in by_rarity:
            found.update(postings.get(tok, ()))
            need -= counts[tok]
            if need <= 0:
                break
        return found

    def _similar(self, ids: list[int], min_f1_exclusive: float, stop_at_first: bool) -> float:
        """Largest F1 above ``min_f1_exclusive`` among pool items (or -1.0 if none).

        With ``stop_at_first`` it returns as soon as one item exceeds the bound."""
        n = len(ids)
        if n == 0 or not self._items:
            return -1.0
        t = min_f1_exclusive
        counts = Counter(ids)
        if t >= 0:
            min_lcs = max(1, math.ceil(t * n / (2 - t) - _MARGIN))
            if min_lcs > n:
                return -1.0
            cand = self._candidates(ids, counts, min_lcs)
        else:
            cand = set()
            for tok in counts:
                cand.update(self._postings.get(tok, ()))
        masks = self._masks(ids)
        best = -1.0
        scored = []
        for j in cand:
            other, other_counts = self._items[j]
            m = len(other)
            if 2 * min(n, m) / (n + m) + _MARGIN <= max(t, best):
                continue
            overlap = 0
            for tok, c in counts.items():
                oc = other_counts.get(tok)
                if oc:
                    overlap += c if c < oc else oc
            bound = 2 * overlap / (n + m)
            if bound + _MARGIN > max(t, best):
                scored.append((bound, j))
        # Best bound first: finds a duplicate (or the maximum) early and prunes the rest.
        scored.sort(reverse=True)
        for bound, j in scored:
            if bound + _MARGIN <= max(t, best):
                break
            other = self._items[j][0]
            f1 = _f1(self._lcs(masks, n, other), n, len(other))
            if f1 > t and f1 > best:
                best = f1
                if stop_at_first:
                    return best
        return best

    def max_similarity(self, text: str) -> float:
        best = self._similar(self._encode(text), -1.0, stop_at_first=False)
        return max(best, 0.0)

    def is_novel(self, text: str) -> bool:
        return self._similar(self._encode(text), self.threshold, stop_at_first=True) < 0

    def add_if_novel(self, text: str) -> bool:
        """Add ``text`` to the pool unless it is too similar to an item; True if added."""
        ids = self._encode(text)
        if self._similar(ids, self.threshold, stop_at_first=True) >= 0:
            return False
        self._add(ids)
        return True
