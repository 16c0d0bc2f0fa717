"""Parsing model output: generated instruction lists (stage fact 1) and judge scores (fact 4).

Every dropped item is counted under a stable snake_case reason, so a stage can report why
its yield was low (the reference drops silently).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "GeneratedTask", "ParsedBatch", "BLACKLIST", "DROP_REASONS",
    "parse_generated_instructions", "instruction_drop_reason", "parse_instructions_authors",
    "INSTRUCTION_PARSERS",
    "extract_score", "extract_score_strict", "SCORE_PARSERS",
]

# Words an LLM cannot act on (Alpaca's list, ISHEEP.md stage fact 1); whole words, any case.
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
             "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart",
             "diagram")
_BLACKLIST_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in BLACKLIST) + r")\b",
    re.IGNORECASE)
_URL_RE = re.compile(r"\bhttps?:|\bwww\.", re.IGNORECASE)
# An input that is only the "no input" marker, however spelled: "<noinput>", "No input.", ...
_NOINPUT_ONLY_RE = re.compile(r"^[\s<(\[\"']*no[\s_-]?input[\s>)\]\"'.]*$", re.IGNORECASE)
_NOINPUT_ANY_RE = re.compile(r"no[_-]?input|<\s*no\s+input\s*>", re.IGNORECASE)
# Section headers "k. Instruction:", tolerant of a wrong/missing number, "k)" and spacing.
_SECTION_RE = re.compile(
    r"^[ \t]*(?:\d+[ \t]*[.)][ \t]*)?(instruction|input|output)[ \t]*:", re.IGNORECASE | re.M)
# A header left inside a field means two items ran together or the format leaked.
_LEAK_RE = re.compile(r"\b(?:Instruction|Input|Output)\s*:")
# Chat special tokens (never part of a task, in the instruction or the input), and a chat
# turn header at the start of a line of the INSTRUCTION (the model went on to write a
# conversation).  Inputs may hold a dialogue to work on ("User: my order is late"), so only
# the special tokens count there.
_CHAT_TOKEN_RE = re.compile(
    r"<\|(?:im_start|im_end|endoftext|user|assistant|system|eot_id)\|>|\[/?INST\]")
_TURN_RE = re.compile(r"^[ \t]*(?:assistant|user|human|system)[ \t]*:", re.IGNORECASE | re.M)

DROP_REASONS = ("truncated_last", "last_item", "unparsable", "too_short", "too_long", "no_letters",
                "blacklisted_word", "starts_with_punctuation", "non_ascii_start", "non_english",
                "contains_url", "noinput_marker", "format_leak")


def _mostly_non_ascii_letters(text: str) -> bool:
    ascii_letters = other_letters = 0
    for ch in text:
        if ch.isalpha():
            if ch.isascii():
                ascii_letters += 1
            else:
                other_letters += 1
    return other_letters > ascii_letters


@dataclass(frozen=True)
class GeneratedTask:
    instruction: str
    input: str
    output: str = ""  # the meta prompt's own output; I-SHEEP regenerates responses zero-shot


@dataclass
class ParsedBatch:
    tasks: list[GeneratedTask] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def instruction_drop_reason(instruction: str, input: str = "", language: str = "en"
                            ) -> str | None:
    """The stage-1 filters for one parsed item (None = keep).  ``input`` must be normalised.

    Besides the reference's filters: an instruction without a single letter ("11 0 -3 100")
    is "no_letters"; with ``language == "en"``, an instruction with more non-ASCII letters
    than ASCII ones ("7. 指令：写一首诗", Cyrillic after a number) is "non_english" (an
    English instruction quoting a few foreign words is kept; inputs are not checked, since
    "Translate into English" needs a foreign input); chat special tokens, or a chat turn
    header at the start of a line of the instruction, are "format_leak"."""
    words = len(instruction.split())
    if words <= 3:
        return "too_short"
    if words > 150:
        return "too_long"
    if not any(ch.isalpha() for ch in instruction):
        return "no_letters"
    if _BLACKLIST_RE.search(instruction) or _BLACKLIST_RE.search(input):
        return "blacklisted_word"  # the I-SHEEP scripts check the input too
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "non_ascii_start"
    if language == "en" and _mostly_non_ascii_letters(instruction):
        return "non_english"
    if _URL_RE.search(instruction) or _URL_RE.search(input):
        return "contains_url"
    if _NOINPUT_ANY_RE.search(instruction) or _NOINPUT_ANY_RE.search(input):
        return "noinput_marker"
    if (_LEAK_RE.search(instruction) or _LEAK_RE.search(input) or _TURN_RE.search(instruction)
            or _CHAT_TOKEN_RE.search(instruction) or _CHAT_TOKEN_RE.search(input)):
        return "format_leak"
    return None


def _split_sections(piece: str) -> list[dict[str, str]] | None:
    """Split one "###" piece into items {instruction, input, output}; None if unparsable.

    Several "Instruction:" headers in one piece (the model forgot a "###") give several
    items.  Text before the first header is ignored (chatter like "Here are more tasks:")."""
    marks = list(_SECTION_RE.finditer(piece))
    items: list[dict[str, str]] = []
    for k, mark in enumerate(marks):
        name = mark.group(1).lower()
        end = marks[k + 1].start() if k + 1 < len(marks) else len(piece)
        value = piece[mark.end():end].strip()
        if name == "instruction":
            items.append({"instruction": value})
        elif not items or name in items[-1] or (name == "input" and "output" in items[-1]):
            return None  # Input/Output before any Instruction, repeated, or out of order
        else:
            items[-1][name] = value
    return items or None


def parse_generated_instructions(text: str, first_index: int = 6,
                                 truncated: bool = False, language: str = "en",
                                 drop_last: bool = False) -> ParsedBatch:
    """Parse a continuation of build_instruction_request's prompt into kept tasks.

    ``text`` starts right after "{first_index}. Instruction:".  ``truncated`` is True when the
    engine stopped for length (finish_reason == "length"): the last "###" piece is then
    dropped as "truncated_last" (Alpaca does this).  ``drop_last`` drops the last piece
    whatever the finish reason, as the I-SHEEP scripts do ("last_item" when not truncated;
    a blank last piece, after a final "###", is no item and is not counted).
    Inputs that are only a "no input" marker ("<noinput>", "No input.") become "" as in
    Alpaca; a marker inside a longer field drops the item ("noinput_marker"), as the I-SHEEP
    scripts do.  Blank pieces (e.g. after a final "###") are not items and are not counted.
    ``language`` is the target language of the run (see instruction_drop_reason).
    """
    batch = ParsedBatch()
    pieces = _split_items(text, first_index, truncated, drop_last, batch)
    for piece in pieces:
        if not piece.strip():
            continue
        items = _split_sections(piece)
        if items is None:
            batch.dropped["unparsable"] += 1
            continue
        for item in items:
            instruction = item["instruction"]
            input_text = item.get("input", "")
            if _NOINPUT_ONLY_RE.match(input_text):
                input_text = ""
            reason = instruction_drop_reason(instruction, input_text, language)
            if reason:
                batch.dropped[reason] += 1
            else:
                batch.tasks.append(GeneratedTask(instruction, input_text, item.get("output", "")))
    return batch


# ---- the authors' strict parser (synthesis.instructionParser: authors) ----------------------
# Written from the documented behaviour of the scripts' post-processing (ISHEEP.md stage fact 1):
# piece n of the "###" split (counting every piece, blank or not) must hold exactly two headers
# "{first_index + n}. Instruction:" / "{first_index + n}. Input:" (a number, ".", whitespace); the
# text after the first is the instruction, after the second the input ("<noinput>" -> "").
# Anything else (a misnumbered item, no Input:, a third header) is "unparsable".  The item
# filters then run in the scripts' order: word count, blacklist (whole words, case-insensitive,
# instruction then input), first character, "noinput"/"no input" anywhere in the input or
# "noinput" in the instruction, a header left inside a field ("Output:" in the input too), and
# "http:"/"https:".  No language or format checks of sheepdog's own.
_A_BLACKLIST_RE = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)
_A_LEAK_INSTRUCTION_RE = re.compile(r".\s+(?:Instruction|Input):")
_A_LEAK_INPUT_RE = re.compile(r".\s+(?:Instruction|Input|Output):")
_A_URL_RE = re.compile(r"https?:")


def _authors_item_reason(instruction: str, input: str) -> str | None:
    words = len(instruction.split())
    if words <= 3:
        return "too_short"
    if words > 150:
        return "too_long"
    if _A_BLACKLIST_RE.search(instruction) or _A_BLACKLIST_RE.search(input):
        return "blacklisted_word"
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "non_ascii_start"
    low = input.lower()
    if "noinput" in low or "no input" in low or "noinput" in instruction:
        return "noinput_marker"
    if _A_LEAK_INSTRUCTION_RE.search(instruction) or _A_LEAK_INPUT_RE.search(input):
        return "format_leak"
    if _A_URL_RE.search(instruction) or _A_URL_RE.search(input):
        return "contains_url"
    return None


def _split_items(text: str, first_index: int, truncated: bool, drop_last: bool, batch: ParsedBatch) -> list[str]:
    """The completion (continuing "<first_index>. Instruction:") split on "###"; a last item that
    may be cut off (truncated, or drop_last as the scripts do) is dropped and counted."""
    pieces = f"{first_index}. Instruction:{text}".split("###")
    if (truncated or drop_last) and pieces:
        last = pieces.pop()
        if last.strip():
            batch.dropped["truncated_last" if truncated else "last_item"] += 1
    return pieces


def parse_instructions_authors(text: str, first_index: int = 6, truncated: bool = False,
                               language: str = "en", drop_last: bool = False) -> ParsedBatch:
    """parse_generated_instructions' signature and drop counting, with the authors' strict rules
    (see above; ``language`` is accepted and unused: the scripts check none)."""
    batch = ParsedBatch()
    pieces = _split_items(text, first_index, truncated, drop_last, batch)
    for n, piece in enumerate(pieces):
        headers = list(re.finditer(rf"{first_index + n}\.\s+(?:Instruction|Input):", piece))
        if len(headers) != 2:
            if piece.strip():
                batch.dropped["unparsable"] += 1
            continue
        instruction = piece[headers[0].end():headers[1].start()].strip()
        input_text = piece[headers[1].end():].strip()
        if input_text.lower() == "<noinput>":
            input_text = ""
        reason = _authors_item_reason(instruction, input_text)
        if reason:
            batch.dropped[reason] += 1
        else:
            batch.tasks.append(GeneratedTask(instruction, input_text))
    return batch


# synthesis.instructionParser -> the parser of a task list (spec.SynthesisSpec.instructionParser).
INSTRUCTION_PARSERS = {"tolerant": parse_generated_instructions, "authors": parse_instructions_authors}


# ---- scores ---------------------------------------------------------------------------------
# A number: ASCII digits with an optional decimal part, not glued to a preceding letter, digit,
# "_", "." or "-" (so "v2", "GPT-4" and the "0" of "1.0" are not separate numbers).  A "-"
# directly before the digits, itself not glued to a word, is a sign: "-3" is -3, "7-8" is 7.
_FIRST_NUMBER_RE = re.compile(r"(?<![A-Za-z0-9_.\-])(-?)([0-9]+(?:\.[0-9]+)?)")
# Leading whitespace/punctuation, then the number (a "-" right before a digit is a sign).
_LEADING_NUMBER_RE = re.compile(r"(?:[^\w-]|-(?![0-9]))*(-?)([0-9]+(?:\.[0-9]+)?)")


def _to_score(sign: str, digits: str) -> int | None:
    # round() is Python's round-half-to-even, as the reference's: 8.5 -> 8, 9.5 -> 10.
    number = float(digits)
    if not math.isfinite(number):  # 309+ digits read as inf, which round() cannot take
        return None
    value = round(number) * (-1 if sign else 1)
    return value if 1 <= value <= 10 else None


def extract_score(text: str) -> int | None:
    """The first number in the judgement, rounded; None when there is no number or when it
    falls outside 1..10 after rounding (those are the parse failures).

    "8||good" -> 8, " 8.5 || ok" -> 8, "Score: 7/10" -> 7, "8/10" -> 8, "10" -> 10,
    "-3" -> None, "11" -> None, "" -> None, "no idea" -> None.  Being the FIRST number
    (ISHEEP.md fact 4), "On a scale of 1 to 10: 8" gives 1; extract_score_strict is the
    stricter rule of the authors' scripts."""
    m = _FIRST_NUMBER_RE.search(text)
    return _to_score(m.group(1), m.group(2)) if m else None


def extract_score_strict(text: str) -> int | None:
    """The I-SHEEP scripts' rule (evaluate_prompt.py): leading whitespace and punctuation are
    skipped, then the text must START with a number ("8||...", "**9**", "<7>||...", "- 8");
    a number later in the text ("Score: 7/10") is a parse failure (None), as is a number
    outside 1..10 after rounding.  One deliberate difference: a "-" directly before the
    digits is a sign here ("-3" -> None), where the scripts skip it ("-3" -> 3)."""
    m = _LEADING_NUMBER_RE.match(text)
    return _to_score(m.group(1), m.group(2)) if m else None


# assessment.parse -> the rule that reads a text judgement (spec.AssessmentSpec.parse).
SCORE_PARSERS = {"strict": extract_score_strict, "firstNumber": extract_score}
