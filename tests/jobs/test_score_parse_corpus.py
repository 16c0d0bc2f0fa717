"""assessment.parse on real judgements of the tiny model (corpus/judgements, made once by
generate.py there): strict (the authors' rule, the default) reads a score only when the
judgement starts with it; firstNumber reads the first number anywhere. Both are checked
against the expectations stored with each text, and against each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sheepdog.api.spec import RunSpec
from sheepdog_jobs.parsing import SCORE_PARSERS, extract_score, extract_score_strict

CORPUS = json.loads((Path(__file__).parent / "corpus" / "judgements" / "tiny_model_judgements.json").read_text())
JUDGEMENTS = CORPUS["judgements"]


def test_strict_is_the_default_rule():
    assert RunSpec.model_validate({"model": {"base": "m"}}).assessment.parse == "strict"
    assert SCORE_PARSERS == {"strict": extract_score_strict, "firstNumber": extract_score}


@pytest.mark.parametrize("rule", sorted(SCORE_PARSERS))
def test_each_rule_reads_the_stored_scores(rule):
    assert [SCORE_PARSERS[rule](j["text"]) for j in JUDGEMENTS] == [j[rule] for j in JUDGEMENTS]


def test_the_corpus_tells_the_rules_apart():
    # Real judgements where the rules differ: the model talked before it scored.
    differ = [j for j in JUDGEMENTS if j["strict"] != j["firstNumber"]]
    assert differ, "the corpus no longer shows the difference the setting is about"
    assert all(j["strict"] is None for j in differ)
    # strict never reads a score that is not at the start of the judgement
    for j in JUDGEMENTS:
        if j["strict"] is not None:
            assert re.match(r"^[\W_]*\d", j["text"]), j["text"][:40]
    assert sum(j["strict"] is None for j in JUDGEMENTS) > sum(j["firstNumber"] is None for j in JUDGEMENTS)
