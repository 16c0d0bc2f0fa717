"""The heuristic rule filter applied before self-assessment (ISHEEP.md stage fact 3).

``rule_filter_reason`` returns None to keep a pair, else a stable reason key (checked in the
order of RULE_REASONS; the first that applies is returned).  The authors' script
(step_2_1_filter_output_and_instruction_to_sft.py) expresses these rules as very broad regexes;
we keep their intent but make each rule precise, because the broad forms drop good data:
* lettered options: the script drops any "a." / "e." / "(b)" anywhere, so "e.g." or
  "vitamin (A)" dropped an answer.  Here it takes at least two option LINES with distinct
  letters A-E, each "A) text", "(B) text", "C. text" or "d: text";
* placeholders: the script drops any "<...>" of up to 20 characters and the substring "none"
  (so "nonetheless", "a < b > c" and HTML like "<b>" dropped a pair), and the phrase "no
  input" (so "a function that takes no input" dropped).  Here a placeholder is "noinput",
  an angle-bracket word phrase that is not an HTML tag ("<name>", "<no input>", "<insert
  text>"), or an input that is only "none", "null", "n/a", "no input" and the like;
* role markers are matched at the start of a line only (the script did the same, after "\\n");
  the script's question heuristics ("do you ...?", any "\\n\\n...?") are not reproduced.
"""

from __future__ import annotations

import re

__all__ = ["RULE_REASONS", "AUTHORS_RULE_REASONS", "RULE_SETS", "rule_filter_reason",
           "authors_rule_reason", "strip_answer_prefix", "rule_reason", "clean_output"]

# filter.ruleSet: "sheepdog" (the narrowed rules above) or "authors" (the scripts' broad ones).
RULE_SETS = ("sheepdog", "authors")

RULE_REASONS = ("empty_output", "role_marker", "answer_choices", "lettered_options",
                "cjk_text", "placeholder", "input_in_instruction")

# A turn header at the start of a line ("\nUser:", "Assistant\n", "### Response:") or a chat
# special token: the model went on to write another turn or echoed the prompt format.
_ROLE_RE = re.compile(
    r"^[ \t]*(?:#{1,4}[ \t]*)?(?:assistant|user|human|system|question|output|instruction|"
    r"response)[ \t]*(?::|$)|<\|(?:im_start|im_end|endoftext|user|assistant|system|eot_id)\|>|"
    r"\[/?INST\]", re.IGNORECASE | re.MULTILINE)
_ANSWER_CHOICES_RE = re.compile(r"answer\s+choices\s*:", re.IGNORECASE)
# One option line: "A) x", "(B) x", "C. x", "d: x" (letters A-E, then text).
_OPTION_LINE_RE = re.compile(r"^[ \t]*(?:\(([A-Ea-e])\)|([A-Ea-e])[.):])[ \t]+\S", re.MULTILINE)
# CJK ideographs, kana, Hangul and CJK punctuation / full-width forms.
_CJK_RE = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
                     "\uff00-\uffef]")
_NOINPUT_RE = re.compile(r"no[_-]?input", re.IGNORECASE)
# "<name>", "<insert text>", "</b>": not after a word ("List<String>") nor spaced ("a < b").
_ANGLE_RE = re.compile(r"(?<!\w)<(/?)([A-Za-z](?:[A-Za-z0-9 _'-]{0,40}[A-Za-z0-9_])?)>")
_HTML_TAGS = frozenset(
    "a abbr b body br code div em footer form h1 h2 h3 h4 h5 h6 head header hr html i img input "
    "label li link meta nav ol option p pre s script section select small span strong style "
    "sub sup table tbody td textarea th thead title tr u ul".split())
_EMPTY_WORDS = frozenset({"none", "null", "n/a", "nil", "empty", "no input"})


def _has_placeholder(text: str) -> bool:
    if _NOINPUT_RE.search(text):
        return True
    for m in _ANGLE_RE.finditer(text):
        words = m.group(2).split()
        if m.group(1) or (len(words) == 1 and words[0].lower() in _HTML_TAGS):
            continue  # a closing tag or a plain HTML tag: markup, not a placeholder
        return True
    return False


def _lettered_options(output: str) -> bool:
    letters = {(a or b).upper() for a, b in _OPTION_LINE_RE.findall(output)}
    return len(letters) >= 2


def rule_filter_reason(instruction: str, input: str, output: str,
                       language: str = "en") -> str | None:
    """None to keep the pair, else the reason it is dropped (one of RULE_REASONS)."""
    if not output.strip():
        return "empty_output"
    if _ROLE_RE.search(output):
        return "role_marker"
    if _ANSWER_CHOICES_RE.search(output):
        return "answer_choices"
    if _lettered_options(output):
        return "lettered_options"
    if language == "en" and _CJK_RE.search(output):
        return "cjk_text"
    if (_has_placeholder(instruction) or _has_placeholder(input)
            or _NOINPUT_RE.search(output)
            or input.strip().rstrip(".").lower() in _EMPTY_WORDS):
        return "placeholder"
    if input.strip() and input.strip() in instruction:
        return "input_in_instruction"
    return None


# ---- the authors' rule set (filter.ruleSet: authors) ----------------------------------------
# Written from the documented behaviour of the scripts' step_2_1 filter (ISHEEP.md stage fact 3):
# a leading "答案:" (Chinese "answer:") is removed from the output first; then, in this order,
# an output with a role line, "Answer Choices:", a no-input marker, a question-like phrase, a
# letter option anywhere or a CJK ideograph drops the pair; so does an instruction or input with
# a no-input marker, any "<...>" of up to 20 characters or the letters "none"; then an input
# that occurs in its instruction; then an empty output.  Each is as broad as the scripts' on
# purpose: "e.g." and "(a)" count as letter options, "nonetheless" holds "none".
AUTHORS_RULE_REASONS = ("role_marker", "answer_choices", "noinput_marker", "question",
                        "lettered_options", "cjk_text", "placeholder", "input_in_instruction",
                        "empty_output")

_ANSWER_PREFIX_RE = re.compile(r"^(?:答案[:：]\s?)+")
# A new line that starts with a role name and a ":" or a line break.
_A_ROLE_RE = re.compile(r"\n(?:assistant|system|human|question|output|user)[:\n]", re.IGNORECASE)
_A_CHOICES_RE = re.compile(r"answer\schoices:", re.IGNORECASE)
_A_NOINPUT_RE = re.compile(r"noinput|no input", re.IGNORECASE)
# "can you" after one or two line breaks, "do you " and anything, or a blank line followed
# within one line of at most 100 characters by a "?": the answer asks instead of answering.
_A_QUESTION_RE = re.compile(r"\n\n?can you|do you .|\n\n.{1,100}\?", re.IGNORECASE)
# A letter A-E (either case) with a "." after a word boundary, or in parentheses.
_A_LETTER_RE = re.compile(r"\b[A-Ea-e]\.|\([A-Ea-e]\)")
_A_CJK_RE = re.compile("[\u4e00-\u9fff]")
_A_PLACEHOLDER_RE = re.compile(r"noinput|no input|<.{1,20}>|none", re.IGNORECASE)


def strip_answer_prefix(output: str) -> str:
    """The scripts' first step: leading "答案:" / "答案：" (each with one optional space) removed."""
    return _ANSWER_PREFIX_RE.sub("", output, count=1)


def authors_rule_reason(instruction: str, input: str, output: str) -> str | None:
    """The authors' rules on a pair whose output went through strip_answer_prefix: None to
    keep it, else one of AUTHORS_RULE_REASONS (the first that applies, in the scripts' order)."""
    for reason, pattern in (("role_marker", _A_ROLE_RE), ("answer_choices", _A_CHOICES_RE),
                            ("noinput_marker", _A_NOINPUT_RE), ("question", _A_QUESTION_RE),
                            ("lettered_options", _A_LETTER_RE), ("cjk_text", _A_CJK_RE)):
        if pattern.search(output):
            return reason
    if _A_PLACEHOLDER_RE.search(input) or _A_PLACEHOLDER_RE.search(instruction):
        return "placeholder"
    if input.strip() != "" and input in instruction:
        return "input_in_instruction"
    if output == "":
        return "empty_output"
    return None


def clean_output(rule_set: str, output: str) -> str:
    """The output the rules (and the judge) see: the authors' set strips the answer prefix."""
    return strip_answer_prefix(output) if rule_set == "authors" else output


def rule_reason(rule_set: str, instruction: str, input: str, output: str) -> str | None:
    """filter.ruleSet's verdict on a pair (output already through clean_output)."""
    if rule_set == "authors":
        return authors_rule_reason(instruction, input, output)
    if rule_set == "sheepdog":
        return rule_filter_reason(instruction, input, output)
    raise ValueError(f"unknown rule set {rule_set!r}; expected one of {', '.join(RULE_SETS)}")
