"""assessment.decode: score: judgements decoded to '||' or a small budget give the scores of
the full-length decode (jobs/sheepdog_jobs/judgement_decode.py)."""

from __future__ import annotations

import random

import pytest

from sheepdog_jobs.judgement_decode import SCORE_STOP, generate_judgements, score_is_final
from sheepdog_jobs.parsing import extract_score_strict
from sheepdog_jobs.prompts import build_assessment_prompt


@pytest.mark.parametrize("text,reason,final", [
    ("8", "stop", True),          # stopped at '||' (or the end): "8||..." reads 8 whatever follows
    ("8", "length", False),       # "8" may become "85"
    ("10", "length", False),
    ("8 ", "length", True),
    ("**9**", "length", True),
    ("9.", "length", False),      # may become "9.5" (rounds to 10)
    ("8.5", "length", False),     # may become "8.51" (9)
    ("9.x", "length", True),
    ("8.5 ", "length", True),
    ("", "stop", False),          # "||8..." still reads 8: decode in full
    ("  **", "length", False),
    ("-", "length", False),       # "-3" (a sign) or "- 8"
    ("- ", "length", False),
    ("Score: 8", "length", True),  # strict: a word first, never a score
    ("_8", "length", True),
])
def test_score_is_final(text, reason, final):
    assert score_is_final(text, reason) is final


def test_a_final_prefix_always_has_the_full_texts_score():
    """Every cut of many judgement-like texts: where the prefix is final, its strict score is
    the whole text's; a cut before '||' is a stop there."""
    rng = random.Random(0)
    pieces = ["8", "9", "1", "0", ".", "5", " ", "**", "||", "-", "\n", "Score", ":", "/10", "x", "<", ">", "10"]
    checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        whole = extract_score_strict(text)
        for k in range(len(text) + 1):
            prefix = text[:k]
            if score_is_final(prefix, "length"):
                assert extract_score_strict(prefix) == whole, (prefix, text)
                checked += 1
            if text[k:].startswith(SCORE_STOP) and score_is_final(prefix, "stop"):
                assert extract_score_strict(prefix) == whole, (prefix, text)
    assert checked > 5000


@pytest.mark.model
def test_same_scores_as_the_full_decode(tiny_model):
    """The tiny model judges pairs with both decodes, the same seeds: the same strict scores.
    A 3-token first budget leaves some judgements undecided, which are decoded again in full."""
    from sheepdog_jobs.engines.hf import TransformersEngine

    pairs = [("Name a primary colour.", "", "Red."), ("Add 2 and 3.", "", "5"),
             ("Translate 'cat' to French.", "", "chat"), ("Give a synonym of 'big'.", "", "large")]
    prompts = [build_assessment_prompt("combined", c, i, x, o) for i, x, o in pairs for c in ("quality", "following")]
    seeds = list(range(100, 100 + len(prompts)))
    engine = TransformersEngine(tiny_model, "none", batch_size=4)
    try:
        kw = dict(temperature=1.0, top_p=0.95, max_tokens=24, seeds=seeds, score_max_tokens=3)
        full, full_cost = generate_judgements(engine, prompts, decode="full", **kw)
        short, cost = generate_judgements(engine, prompts, decode="score", **kw)
    finally:
        engine.close()
    assert [extract_score_strict(o.text) for o in short] == [extract_score_strict(o.text) for o in full]
    assert cost["shortDecodes"] == len(prompts) and full_cost["fullDecodes"] == len(prompts)
    print(f"\nscore decode {cost}, full decode {full_cost}")
    # a judgement decided by the short decode is a prefix of the full one
    for s, f in zip(short, full):
        assert f.text.startswith(s.text)
