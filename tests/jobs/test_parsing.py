import pytest

from sheepdog_jobs.parsing import (
    BLACKLIST, DROP_REASONS, GeneratedTask, extract_score, extract_score_strict,
    instruction_drop_reason, parse_generated_instructions,
)


def item(n: int, instruction: str, inp: str = "<noinput>", out: str = "fine") -> str:
    return f"{n}. Instruction: {instruction}\n{n}. Input:\n{inp}\n{n}. Output:\n{out}\n"


def continuation(*items: str) -> str:
    """Model output after "6. Instruction:" (the first item arrives without its header)."""
    text = "###\n".join(items)
    return text.split("Instruction:", 1)[1]


GOOD = [
    "Write a short poem about the sea at night.",
    "Summarize the following paragraph in one sentence.",
    "List three advantages of learning a second language.",
    "Explain why the sky appears blue during the day.",
]


def test_well_formed_batch():
    text = continuation(item(6, GOOD[0]), item(7, GOOD[1], "The council met to discuss taxes."),
                        item(8, GOOD[2]))
    batch = parse_generated_instructions(text)
    assert batch.tasks == [GeneratedTask(GOOD[0], "", "fine"),
                           GeneratedTask(GOOD[1], "The council met to discuss taxes.", "fine"),
                           GeneratedTask(GOOD[2], "", "fine")]
    assert sum(batch.dropped.values()) == 0


def test_truncated_last_item_is_dropped_only_when_truncated():
    text = continuation(item(6, GOOD[0]), item(7, GOOD[1])) + "###\n8. Instruction: Describe how"
    cut = parse_generated_instructions(text, truncated=True)
    assert [t.instruction for t in cut.tasks] == GOOD[:2]
    assert cut.dropped == {"truncated_last": 1}
    whole = parse_generated_instructions(text, truncated=False)
    assert whole.dropped == {"too_short": 1}  # "Describe how" parsed, then filtered


def test_drop_last_drops_the_last_item_whatever_the_finish_reason():
    # The authors' scripts drop the last parsed item always, not only after a length stop.
    text = continuation(item(6, GOOD[0]), item(7, GOOD[1])) + "###\n8. Instruction: " + GOOD[2] + "\n8. Input:\n"
    batch = parse_generated_instructions(text, drop_last=True)
    assert [t.instruction for t in batch.tasks] == GOOD[:2]
    assert batch.dropped == {"last_item": 1}
    assert parse_generated_instructions(text, truncated=True, drop_last=True).dropped == {"truncated_last": 1}
    # a blank last piece (after a final "###") is no item: nothing real is lost
    tail = parse_generated_instructions(continuation(item(6, GOOD[0])) + "###\n", drop_last=True)
    assert len(tail.tasks) == 1 and not tail.dropped


def test_truncated_with_blank_tail_counts_nothing():
    text = continuation(item(6, GOOD[0]), item(7, GOOD[1])) + "###\n"
    batch = parse_generated_instructions(text, truncated=True)
    assert len(batch.tasks) == 2 and not batch.dropped


def test_numbering_off_missing_input_and_whitespace():
    text = continuation(
        item(6, GOOD[0]),
        f"12. Instruction:   {GOOD[1]}  \n\n12.  Input:\n   Some text here.  \n12. Output:\nok\n",
        f"Instruction: {GOOD[2]}\nOutput:\nyes\n",          # no number, no Input section
        f"9) instruction: {GOOD[3]}\n9) input:\n<NoInput>\n",  # "9)" and lower case
    )
    batch = parse_generated_instructions(text)
    assert [(t.instruction, t.input, t.output) for t in batch.tasks] == [
        (GOOD[0], "", "fine"), (GOOD[1], "Some text here.", "ok"), (GOOD[2], "", "yes"),
        (GOOD[3], "", "")]


def test_missing_separator_gives_two_items_and_chatter_is_ignored():
    text = continuation(item(6, GOOD[0]) + item(7, GOOD[1]),
                        "Here are more tasks:\n" + item(8, GOOD[2]))
    batch = parse_generated_instructions(text)
    assert [t.instruction for t in batch.tasks] == GOOD[:3]


@pytest.mark.parametrize("piece", [
    "just some rambling text with no headers at all\n",
    "7. Input:\nfoo\n7. Instruction: Write a poem about the moon tonight.\n",
    f"7. Instruction: {GOOD[1]}\n7. Input:\na\n7. Input:\nb\n",
    f"7. Instruction: {GOOD[1]}\n7. Output:\na\n7. Input:\nb\n",
])
def test_unparsable_pieces(piece):
    batch = parse_generated_instructions(continuation(item(6, GOOD[0]), piece))
    assert [t.instruction for t in batch.tasks] == [GOOD[0]]
    assert batch.dropped == {"unparsable": 1}


@pytest.mark.parametrize("instruction,inp,reason", [
    ("Write a poem.", "", "too_short"),                    # 3 words
    ("Write a poem", "", "too_short"),
    (" ".join(["word"] * 151), "", "too_long"),
    ("Describe the image in detail please.", "", "blacklisted_word"),
    ("Go  to the store and buy some milk.", "", "blacklisted_word"),   # "go to", any spacing
    ("What is the MAP of the area around us?", "", "blacklisted_word"),
    ("Describe the scene in three sentences.", "See the attached picture.", "blacklisted_word"),
    ('"Hello" means what in Spanish language?', "", "starts_with_punctuation"),
    ("- Name four kinds of trees.", "", "starts_with_punctuation"),
    ("Éxplain the rules of chess briefly.", "", "non_ascii_start"),
    ("Summarize the article at https://example.com today.", "", "contains_url"),
    ("Summarize the article on this website.", "Visit www.example.org now", "contains_url"),
    ("Answer the question below with noinput given.", "", "noinput_marker"),
    ("Classify the sentence as positive or negative.", "noinput required here", "noinput_marker"),
    ("Classify the sentence below. Input: I love it.", "", "format_leak"),
])
def test_filters_drop_with_stable_reason(instruction, inp, reason):
    assert reason in DROP_REASONS
    assert instruction_drop_reason(instruction, inp) == reason
    batch = parse_generated_instructions(continuation(item(6, GOOD[0]), item(7, instruction, inp)))
    assert [t.instruction for t in batch.tasks] == [GOOD[0]]
    assert batch.dropped == {reason: 1}


@pytest.mark.parametrize("instruction,inp,expected", [
    ("Write a poem about love.", "", None),                             # 5 words: kept
    ("Describe the imagery used in this poem.", "Roses are red", None),   # "imagery" != "image"
    ("Profile the mapping between these two sets.", "A, B", None),        # "mapping", "Profile"
    ("Explain how a file system stores data.", "", "blacklisted_word"),
    ("Explain how a FILES system stores data.", "", "blacklisted_word"),
])
def test_blacklist_is_whole_word(instruction, inp, expected):
    assert instruction_drop_reason(instruction, inp) == expected


def test_blacklist_is_the_reference_list():
    assert len(BLACKLIST) == 18 and "go to" in BLACKLIST and "flowchart" in BLACKLIST


@pytest.mark.parametrize("raw", ["<noinput>", "<NoInput>", "No input.", "no input", "noinput",
                                 "(no input)", " <noinput> "])
def test_noinput_markers_become_empty_input(raw):
    batch = parse_generated_instructions(continuation(item(6, GOOD[0], raw)))
    assert batch.tasks == [GeneratedTask(GOOD[0], "", "fine")]


def test_first_index_is_prepended():
    text = f" {GOOD[0]}\n3. Input:\n<noinput>\n###\n4. Instruction: {GOOD[1]}\n4. Input:\nx\n"
    batch = parse_generated_instructions(text, first_index=3)
    assert [t.instruction for t in batch.tasks] == GOOD[:2]


def test_empty_text():
    batch = parse_generated_instructions("")
    assert batch.tasks == [] and batch.dropped == {"too_short": 1}
    assert parse_generated_instructions("", truncated=True).dropped == {"truncated_last": 1}


# ---- scores -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,lenient,strict", [
    ("8||good", 8, 8),
    (" 8.5 || solid answer", 8, 8),     # round half to even, as Python's round()
    ("9.5||", 10, 10),
    ("7.6", 8, 8),
    ("Score: 7/10", 7, None),           # strict: must start with the number
    ("8/10", 8, 8),
    ("10", 10, 10),
    ("10.4||x", 10, 10),
    ("10.6||x", None, None),            # rounds to 11
    ("-3", None, None),
    ("11", None, None),
    ("0", None, None),
    ("0.6", 1, 1),                      # rounds to 1
    ("", None, None),
    ("no idea, sorry", None, None),
    ("**9**||great", 9, 9),
    ("<7>||fine", 7, 7),
    ("- 8||bullet", 8, 8),
    ("\n\n  6 || ok", 6, 6),
    ("GPT-4 would give it 9", 9, None),  # "4" is glued to "GPT-"
    ("v2 of the answer: 5", 5, None),
    ("7-8", 7, 7),
    ("On a scale of 1 to 10, I give 8", 1, None),  # lenient: the FIRST number
    ("\u0668||arabic digit", None, None),        # only ASCII digits count
])
def test_extract_score(text, lenient, strict):
    assert extract_score(text) == lenient
    assert extract_score_strict(text) == strict


def test_scores_are_ints():
    assert isinstance(extract_score("8.0"), int) and extract_score("8.0") == 8
    assert isinstance(extract_score_strict("8.0"), int)
