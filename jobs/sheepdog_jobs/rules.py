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

__all__ = ["RULE_REASONS", "rule_filter_reason"]

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
