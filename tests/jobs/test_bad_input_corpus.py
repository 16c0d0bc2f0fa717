"""The "bad input" corpus of the data plane (issue 6): tests/jobs/corpus/ (see its README).

* Seed files: each broken file gives a SeedError naming the file and the line of every
  problem (exactly the problems listed here); the few harmless oddities (a UTF-8 BOM, CRLF
  line ends) load.  Files that cannot be kept as text (other encodings, NUL bytes, a line
  over 1 MB, deep nesting) are generated here, at test time.
* Model outputs (corpus/model_outputs/outputs.json): every output goes through every consumer
  (instruction parsing, with and without truncation; the rule filter, as the response and as
  instruction/input; both score extractors; de-duplication of what parsing kept) and none
  crashes; nothing vanishes (a generation yields tasks or counted drop reasons), and the
  expectations of the case hold.
* Growth: parsing 100k-character endless outputs and 1k-item generations does work linear
  in the input, measured by counting operations (Python lines executed in the parsing and
  rule modules plus the characters handed to their regular expressions), never by timing.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from sheepdog_jobs import parsing, rules
from sheepdog_jobs.parsing import (
    DROP_REASONS, extract_score, extract_score_strict, instruction_drop_reason,
    parse_generated_instructions, parse_instructions_authors,
)
from sheepdog_jobs.rouge import FastDedup
from sheepdog_jobs.rules import AUTHORS_RULE_REASONS, RULE_REASONS, authors_rule_reason, rule_filter_reason
from sheepdog_jobs.seeds import MAX_LINE_BYTES, SeedError, load_seed_tasks

CORPUS = Path(__file__).parent / "corpus"
SEEDS = CORPUS / "seeds"
OUTPUTS = CORPUS / "model_outputs" / "outputs.json"


def _si(i: int, instruction: str) -> str:
    return json.dumps({"id": f"seed_task_{i}", "name": f"task_{i}", "instruction": instruction,
                       "instances": [{"input": "", "output": "ok"}], "is_classification": False})


_GOOD = _si(0, "Suggest a name for a bakery.") + "\n" + _si(1, "Name a fruit.") + "\n"
_CAFE = '{"instruction": "Order a café au lait in French.", "output": "Un café au lait."}\n'

# Seed files that are not text, or too big to keep: generated into tmp_path.
GENERATED = {
    "latin1.jsonl": lambda: _GOOD.encode() + _CAFE.encode("latin-1"),
    "utf16_bom.jsonl": lambda: (_GOOD + _CAFE).encode("utf-16"),  # BOM + UTF-16 LE
    "utf16le_no_bom.jsonl": lambda: (_GOOD + _CAFE).encode("utf-16-le"),
    "utf32_bom.jsonl": lambda: (_GOOD + _CAFE).encode("utf-32"),
    "nul_bytes.jsonl": lambda: (_GOOD.encode() + b'{"instruction": "Name\x00 a colour."}\n'
                                + b"\x00" * 4096),  # the NUL tail a crash can leave behind
    "huge_line.jsonl": lambda: (_GOOD + json.dumps({"instruction": "x " * MAX_LINE_BYTES})
                                + "\n" + _si(2, "Name a colour.") + "\n").encode(),
    "deep_nesting.jsonl": lambda: (_GOOD + "[" * 100_000 + "]" * 100_000 + "\n").encode(),
    "crlf.jsonl": lambda: _GOOD.replace("\n", "\r\n").encode(),
}

# name -> number of tasks it loads, or the exact problems: (line or None, text in the message)
SEED_EXPECTATIONS: dict[str, int | list[tuple[int | None, str]]] = {
    "bad_json.jsonl": [(2, "invalid JSON (Expecting property name enclosed in double quotes "
                           "at column 52)"),
                       (4, "invalid JSON (Expecting property name")],
    "empty.jsonl": [(None, "no seed tasks (the file is empty or only blank lines)")],
    "blank_lines.jsonl": [(None, "no seed tasks (the file is empty or only blank lines)")],
    "list_line.jsonl": [(2, "expected a JSON object, got list")],
    "pretty_printed.jsonl": [(1, "a pretty-printed JSON file? A seed file holds one JSON "
                                 "object per line")]
                            + [(n, "invalid JSON") for n in (2, 3, 4, 5)],
    "missing_instruction.jsonl": [(2, 'missing or empty "instruction"'),
                                  (3, 'missing or empty "instruction"')],
    "instruction_not_string.jsonl": [(1, '"instruction" (it must be a string, got int)'),
                                     (2, '"instruction" (it must be a string, got list)'),
                                     (3, '"instruction" (it must be a string, got dict)'),
                                     (4, 'missing or empty "instruction"')],
    "wrong_field_types.jsonl": [(1, '"input" must be a string, got int'),
                                (2, '"instances" must be a non-empty list of objects'),
                                (3, 'instances[0]: "output" must be a string, got list'),
                                (4, '"id" must be a string or an integer')],
    "truncated_last_line.jsonl": [(3, "invalid JSON (Unterminated string starting at column "
                                      "38); the last line has no newline: is the file "
                                      "truncated?")],
    "duplicate_ids.jsonl": [(3, "duplicate id 'seed_task_0' (first on line 1)"),
                            (5, "duplicate id '7' (first on line 4)")],
    "bom_utf8.jsonl": 2,
    "bom_mid_file.jsonl": [(2, "invalid JSON (Unexpected UTF-8 BOM")],
    "lone_surrogate.jsonl": [(2, '"instruction" contains an unpaired surrogate (\\ud83d)')],
    "huge_number.jsonl": [(2, "invalid JSON (an integer with too many digits)")],
    # generated
    "latin1.jsonl": [(3, "not valid UTF-8 (bad byte at offset 28)")],
    "utf16_bom.jsonl": [(1, "the file is UTF-16 or UTF-32 text")],
    "utf32_bom.jsonl": [(1, "the file is UTF-16 or UTF-32 text")],
    # UTF-16 LE "\n" is b"\n\x00": the NUL after the last newline is a 4th line.
    "utf16le_no_bom.jsonl": [(n, "contains NUL bytes") for n in (1, 2, 3, 4)],
    "nul_bytes.jsonl": [(3, "contains NUL bytes"), (4, "contains NUL bytes")],
    "huge_line.jsonl": [(3, f"line longer than {MAX_LINE_BYTES} bytes")],
    "deep_nesting.jsonl": [(3, "invalid JSON (nested too deeply)")],
    "crlf.jsonl": 2,
}


def seed_path(name: str, tmp_path: Path) -> Path:
    if name in GENERATED:
        path = tmp_path / name
        path.write_bytes(GENERATED[name]())
        return path
    return SEEDS / name


def test_every_corpus_file_has_an_expectation_and_is_in_the_readme():
    stored = {p.name for p in SEEDS.iterdir() if p.suffix == ".jsonl"}
    assert stored.isdisjoint(GENERATED)
    assert stored | set(GENERATED) == set(SEED_EXPECTATIONS)
    readme = (CORPUS / "README.md").read_text()
    for name in SEED_EXPECTATIONS:
        assert f"`{name}`" in readme, name
    for case in json.loads(OUTPUTS.read_text(encoding="utf-8")):
        assert f"`{case['name']}`" in readme, case["name"]


def test_stored_seed_files_are_intact():
    # Guards against an editor or a tool "fixing" the corpus.
    assert (SEEDS / "empty.jsonl").read_bytes() == b""
    assert not (SEEDS / "blank_lines.jsonl").read_bytes().strip()
    assert not (SEEDS / "truncated_last_line.jsonl").read_bytes().endswith(b"\n")
    assert (SEEDS / "bom_utf8.jsonl").read_bytes().startswith(b"\xef\xbb\xbf")
    assert b"\n\xef\xbb\xbf{" in (SEEDS / "bom_mid_file.jsonl").read_bytes()


@pytest.mark.parametrize("name", sorted(SEED_EXPECTATIONS))
def test_seed_corpus(name, tmp_path):
    path = seed_path(name, tmp_path)
    expected = SEED_EXPECTATIONS[name]
    if isinstance(expected, int):
        tasks = load_seed_tasks(path)
        assert len(tasks) == expected
        assert all(t.instruction and "\ufeff" not in t.instruction for t in tasks)
        return
    with pytest.raises(SeedError) as err:
        load_seed_tasks(path)
    problems = err.value.problems
    assert err.value.path == str(path)
    assert str(path) in str(err.value)
    assert len(problems) == len(expected), problems
    for problem, (line, text) in zip(problems, expected):
        where = f"{path}: line {line}: " if line else f"{path}: "
        assert problem.startswith(where), (problem, where)
        assert text in problem, (problem, text)
    assert len(str(err.value)) < 4000  # fits a summary / termination message


# ---- model outputs ------------------------------------------------------------------------

INSTRUCTION = "Write a short poem about the sea at night."


def load_output_cases() -> list[dict]:
    cases = json.loads(OUTPUTS.read_text(encoding="utf-8"))
    for case in cases:
        if "repeat" in case:
            prefix, unit, chars = case.get("text_prefix", ""), case["repeat"], case["chars"]
            body = unit * math.ceil((chars - len(prefix)) / len(unit))
            case["text"] = (prefix + body)[:chars]
    return cases


OUTPUT_CASES = load_output_cases()


def test_output_cases_are_well_formed():
    names = [c["name"] for c in OUTPUT_CASES]
    assert len(names) == len(set(names))
    allowed = {"generation", "generation_truncated", "rule", "score", "score_strict"}
    for case in OUTPUT_CASES:
        assert isinstance(case["text"], str) and case["about"]
        assert set(case["expect"]) <= allowed, case["name"]
    endless = [c for c in OUTPUT_CASES if c["name"].startswith("endless")]
    assert len(endless) >= 5 and all(len(c["text"]) == 100_000 for c in endless)


def _check_batch(batch, expected: dict | None, name: str):
    assert set(batch.dropped) <= set(DROP_REASONS), name
    assert all(isinstance(n, int) and n > 0 for n in batch.dropped.values()), name
    # Nothing vanishes: every generation yields tasks or counted drops.
    assert batch.tasks or sum(batch.dropped.values()) >= 1, name
    for task in batch.tasks:
        assert instruction_drop_reason(task.instruction, task.input) is None
    if expected is not None:
        assert len(batch.tasks) == expected["tasks"], (name, len(batch.tasks))
        assert +batch.dropped == Counter(expected["dropped"]), (name, dict(batch.dropped))


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=[c["name"] for c in OUTPUT_CASES])
def test_model_output_corpus(case):
    text, expect, name = case["text"], case["expect"], case["name"]

    batch = parse_generated_instructions(text)
    _check_batch(batch, expect.get("generation"), name)
    _check_batch(parse_generated_instructions(text, truncated=True),
                 expect.get("generation_truncated"), name)
    dedup = FastDedup([INSTRUCTION])
    for task in batch.tasks:
        dedup.add_if_novel(task.instruction)

    reason = rule_filter_reason(INSTRUCTION, "", text)
    assert reason is None or reason in RULE_REASONS
    if "rule" in expect:
        assert reason == expect["rule"], (name, reason)
    for as_instruction, as_input in ((text, ""), (INSTRUCTION, text)):
        other = rule_filter_reason(as_instruction, as_input, "A calm answer.")
        assert other is None or other in RULE_REASONS
    # the authors' rule set and parser (examples/paper.yaml) take the same inputs
    for args in ((INSTRUCTION, "", text), (text, "", "A calm answer."), (INSTRUCTION, text, "A calm answer.")):
        assert authors_rule_reason(*args) in (None, *AUTHORS_RULE_REASONS)
    strict = parse_instructions_authors(text, drop_last=True)
    assert all(t.instruction.split() and len(t.instruction.split()) > 3 for t in strict.tasks), name

    for extract, key in ((extract_score, "score"), (extract_score_strict, "score_strict")):
        score = extract(text)
        assert score is None or (isinstance(score, int) and 1 <= score <= 10), (name, score)
        if key in expect:
            assert score == expect[key], (name, key, score)


def test_drop_reasons_of_the_corpus_are_reported_by_name():
    # Across the corpus the parse drops are spread over several documented reasons, so a
    # stage summary built from them tells the user why the yield was low.
    seen: Counter = Counter()
    for case in OUTPUT_CASES:
        seen.update(parse_generated_instructions(case["text"]).dropped)
    assert {"too_short", "too_long", "unparsable", "non_english", "no_letters",
            "format_leak", "non_ascii_start"} <= set(seen)


# ---- growth: count operations, never time -------------------------------------------------

class _CountingPattern:
    """Wraps a compiled pattern; adds the length of every string it is given to a counter."""

    _STRING_FIRST = {"search", "match", "fullmatch", "finditer", "findall", "split"}

    def __init__(self, pattern: re.Pattern, counter: Counter):
        self._pattern, self._counter = pattern, counter

    def __getattr__(self, name):
        attr = getattr(self._pattern, name)
        if name in self._STRING_FIRST:
            def counted(string, *args, **kwargs):
                self._counter["regex_chars"] += len(string)
                return attr(string, *args, **kwargs)
            return counted
        if name in ("sub", "subn"):
            def counted_sub(repl, string, *args, **kwargs):
                self._counter["regex_chars"] += len(string)
                return attr(repl, string, *args, **kwargs)
            return counted_sub
        return attr


_MODULES = (parsing, rules)
_FILES = {m.__file__ for m in _MODULES}


def operations(monkeypatch, fn, *args) -> Counter:
    """Python lines executed in the parsing and rules modules ("lines"), and the characters
    handed to their regular expressions ("regex_chars"), while ``fn(*args)`` runs.
    (Python's re has no step counter; the regexes themselves are written without nested or
    overlapping quantifiers, so each scans its input a bounded number of times.)"""
    counter: Counter = Counter()
    with monkeypatch.context() as m:
        for module in _MODULES:
            for attr, value in vars(module).items():
                if isinstance(value, re.Pattern):
                    m.setattr(module, attr, _CountingPattern(value, counter))

        def local(frame, event, arg):
            if event == "line":
                counter["lines"] += 1
            return local

        def tracer(frame, event, arg):
            return local if frame.f_code.co_filename in _FILES else None

        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            fn(*args)
        finally:
            sys.settrace(previous)
    return counter


def assert_linear(small: Counter, big: Counter, factor: int) -> None:
    """``big`` measured on ``factor`` times the input of ``small``: at most 25% more than
    proportional (plus a small constant), line counts and regex characters each."""
    assert small["lines"] > 0 and big["lines"] > 0  # the tracer really saw the code
    for key in ("lines", "regex_chars"):
        assert big[key] <= factor * 1.25 * small[key] + 1000, (key, small, big)


def _all_consumers(text: str) -> None:
    parse_generated_instructions(text)
    parse_generated_instructions(text, truncated=True)
    rule_filter_reason(INSTRUCTION, "", text)
    rule_filter_reason(text, text, "A calm answer.")
    parse_instructions_authors(text)
    authors_rule_reason(INSTRUCTION, "", text)
    authors_rule_reason(text, text, "A calm answer.")
    extract_score(text)
    extract_score_strict(text)


ENDLESS = [c for c in OUTPUT_CASES if "repeat" in c]


@pytest.mark.parametrize("case", ENDLESS, ids=[c["name"] for c in ENDLESS])
def test_endless_outputs_cost_linear_operations(case, monkeypatch):
    small, big = (case["text"][:25_000], case["text"])  # 4x the characters
    assert_linear(operations(monkeypatch, _all_consumers, small),
                  operations(monkeypatch, _all_consumers, big), 4)


def _generation(items: int, separators: bool = True) -> str:
    animals = ["cat", "fox", "owl", "bee", "eel", "yak"]
    parts = []
    for i in range(items):
        n = i + 6
        parts.append(f"{n}. Instruction: Write a short story about a {animals[i % 6]} who "
                     f"learns skill number {i}.\n{n}. Input: <noinput>\n"
                     f"{n}. Output: Once upon a time there was a {animals[i % 6]}.\n")
    text = ("###\n" if separators else "").join(parts)
    return text.split("Instruction:", 1)[1]


@pytest.mark.parametrize("separators", [True, False], ids=["with_separators", "run_together"])
def test_big_generations_cost_linear_operations(separators, monkeypatch):
    small, big = _generation(250, separators), _generation(1000, separators)
    assert len(parse_generated_instructions(big).tasks) == 1000
    assert_linear(operations(monkeypatch, parse_generated_instructions, small),
                  operations(monkeypatch, parse_generated_instructions, big), 4)


def test_operation_count_detects_quadratic_work(monkeypatch):
    # Control: the measure does see superlinear work when there is some.
    def quadratic(text):
        for i in range(0, len(text), 100):
            parsing._SECTION_RE.search(text[i:])
    small = operations(monkeypatch, quadratic, "x" * 10_000)
    big = operations(monkeypatch, quadratic, "x" * 40_000)
    assert big["regex_chars"] > 4 * 1.25 * small["regex_chars"] + 1000
    with pytest.raises(AssertionError):
        assert_linear(Counter(lines=1, regex_chars=small["regex_chars"]),
                      Counter(lines=1, regex_chars=big["regex_chars"]), 4)


# ---- the parsing rules the corpus added ---------------------------------------------------

@pytest.mark.parametrize("instruction,input,reason", [
    ("11 22 33 44 55", "", "no_letters"),
    ("1. 2. 3. 4. 5.", "", "no_letters"),
    ("7. 指令： 写一首 关于大海的诗， 要求押韵。", "", "non_english"),
    ("1. Напишите короткое стихотворение о море.", "", "non_english"),
    ("Translate \"Привет, как дела?\" into English.", "", None),  # quoting is fine
    ("Translate the sentence into English.", "Привет, как дела? Я очень рад.", None),
    ("Write a reply.\nUser: where is my order?", "", "format_leak"),
    ("Summarize the conversation in one sentence.", "User: my order is late.\nAgent: sorry!",
     None),  # a dialogue as the input is a task
    ("Write a limerick about a cat.<|im_end|>", "", "format_leak"),
    ("Summarize the text below in two sentences.", "[INST] hi [/INST]", "format_leak"),
])
def test_corpus_parsing_rules(instruction, input, reason):
    assert instruction_drop_reason(instruction, input) == reason
    if reason == "non_english":  # only for an English target
        assert instruction_drop_reason(instruction, input, language="zh") is None


@pytest.mark.parametrize("text", ["9" * 309 + "||", "9" * 400, "1" * 5000 + ".5", "-" + "9" * 400])
def test_scores_of_overflowing_numbers_are_parse_failures(text):
    assert extract_score(text) is None
    assert extract_score_strict(text) is None
