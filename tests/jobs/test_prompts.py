import os

import pytest

from sheepdog_jobs.parsing import parse_generated_instructions
from sheepdog_jobs.prompts import (
    ASSESSMENT_KINDS, CRITERIA, SCORE_CUE, build_assessment_prompt, build_instruction_request,
    build_response_prompt,
)
from sheepdog_jobs.seeds import SeedTask

EXAMPLES = [
    SeedTask("Name three  primary colors:", "", "Red, blue and yellow.", "a"),
    SeedTask("Sort the numbers in ascending order.", "5, 2, 9", "2, 5, 9", "b"),
    SeedTask("Give a synonym for the word.", "happy", "glad", "c"),
    SeedTask("Explain what photosynthesis is.", "", "Plants make sugar from light.", "d"),
    SeedTask("Translate the sentence into French.", "Good morning", "Bonjour", "e"),
]


def test_instruction_request_has_meta_prompt_and_alpaca_layout():
    prompt = build_instruction_request(EXAMPLES)
    assert prompt.startswith("You are asked to come up with a set of 20 diverse task "
                             "instructions.")
    for n in range(1, 10):  # the nine numbered requirements, numbered 1..9
        assert f"\n{n}. " in prompt.split("List of 20 tasks:")[0]
    assert '"<noinput>"' in prompt
    assert "List of 20 tasks:\n\n###\n1. Instruction: Name three primary colors\n" in prompt
    assert "1. Input:\n<noinput>\n1. Output:\nRed, blue and yellow.\n###\n" in prompt
    assert "2. Instruction: Sort the numbers in ascending order.\n2. Input:\n5, 2, 9\n" \
           "2. Output:\n2, 5, 9\n###\n3. Instruction:" in prompt
    assert prompt.endswith("\nBonjour\n###\n6. Instruction:")
    assert prompt.count("\n###\n") == 6  # before each of the 5 examples, and at the end


def test_instruction_request_num_tasks_and_no_output_variant():
    prompt = build_instruction_request(EXAMPLES[:3], num_tasks=10, include_output=False)
    assert "a set of 10 diverse task instructions" in prompt and "List of 10 tasks:" in prompt
    assert "Output:\n" not in prompt
    assert prompt.endswith("3. Input:\nhappy\n###\n4. Instruction:")
    with pytest.raises(ValueError):
        build_instruction_request([])
    with pytest.raises(ValueError):
        build_instruction_request(EXAMPLES, num_tasks=5)


def test_request_round_trips_through_the_parser():
    # The examples section of a request is itself a valid continuation for the parser.
    prompt = build_instruction_request(EXAMPLES)
    body = prompt.split("List of 20 tasks:\n\n###\n1. Instruction:", 1)[1]
    body = body.rsplit("###\n6. Instruction:", 1)[0]
    parsed = parse_generated_instructions(body, first_index=1)
    assert [t.instruction for t in parsed.tasks] == [
        "Name three primary colors", "Sort the numbers in ascending order.",
        "Give a synonym for the word.", "Explain what photosynthesis is.",
        "Translate the sentence into French."]
    assert parsed.tasks[0].input == "" and parsed.tasks[1].input == "5, 2, 9"
    assert parsed.tasks[4].output == "Bonjour"


def test_response_prompt():
    assert build_response_prompt("Give three tips.", "") == "Give three tips.\n"
    # The authors' join: "{instruction}{input}\n", nothing between the two (issue 13, point 7).
    assert build_response_prompt(" Sort these. ", " 3, 1, 2 ") == "Sort these.3, 1, 2\n"


def test_response_prompt_template():
    blank_line = "{instruction}\n\n{input}\n"
    assert build_response_prompt(" Sort these. ", " 3, 1, 2 ", blank_line) == "Sort these.\n\n3, 1, 2\n"
    assert build_response_prompt("Hi", "", "Q: {instruction} [{input}] {{x}}") == "Q: Hi [] {x}"


@pytest.mark.parametrize("kind", ASSESSMENT_KINDS)
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("rubric_first", [False, True])
def test_assessment_prompt_common_pieces(kind, criterion, rubric_first):
    prompt = build_assessment_prompt(kind, criterion, "Sort the numbers.", "3, 1, 2",
                                     "1, 2, 3", rubric_first=rubric_first)
    assert prompt.endswith("As a strict scoring expert, your score is:")
    assert prompt.endswith(SCORE_CUE) and not prompt.endswith(" ")
    assert "'<score>||<explanation>'" in prompt
    assert "Instruction: Sort the numbers. 3, 1, 2 Response: 1, 2, 3." in prompt
    if kind == "icl":
        assert prompt.count("Assess the above instruction-response pair") >= 3
        for score in ("6||", "1||", "10||"):
            assert score in prompt
    if rubric_first:
        # the pair comes last: nothing after it but the cue
        tail = prompt.split("Response: 1, 2, 3.")[-1]
        assert len(tail) < 100 and "rate" not in tail and "||" not in tail


def test_response_gets_one_final_period():
    prompt = build_assessment_prompt("simple", "quality", "Say hi.", "", "Hi there.")
    assert "Response: Hi there.\n" in prompt
    prompt = build_assessment_prompt("simple", "quality", "Say hi.", "", "Hi there")
    assert "Response: Hi there.\n" in prompt


def test_paper_wording_of_combined_and_simple_rubrics():
    quality = build_assessment_prompt("combined", "quality", "I", "", "R")
    assert quality == (
        "Here are the instruction and the response. Instruction: I Response: R.\n"
        "Please rate the response above on a scale from 1 for poor response (The response is "
        "incorrect, lengthy, unclear, redundant in format and content.) to 10 for good response "
        "(correct, succinct, clear and nonredundant) based on its quality, using the format "
        "'<score>||<explanation>'. As a strict scoring expert, your score is:")
    following = build_assessment_prompt("combined", "following", "I", "", "R")
    assert "continues to generate the instruction content" in following
    assert "adherence to instructions" in following
    simple = build_assessment_prompt("simple", "quality", "I", "", "R")
    assert "(The response is incorrect.)" in simple and "lengthy" not in simple
    simple_f = build_assessment_prompt("simple", "following", "I", "", "R")
    assert "(The response does not comply with the instruction.)" in simple_f


def test_prompts_differ_by_kind_and_criterion():
    prompts = {(k, c): build_assessment_prompt(k, c, "I", "", "R")
               for k in ASSESSMENT_KINDS for c in CRITERIA}
    assert len(set(prompts.values())) == len(prompts)


@pytest.mark.parametrize("kind", ASSESSMENT_KINDS)
@pytest.mark.parametrize("criterion", CRITERIA)
def test_rubric_first_shares_a_long_common_prefix(kind, criterion):
    pairs = [("Sort the numbers.", "3, 1, 2", "1, 2, 3"),
             ("Write a haiku about autumn.", "", "Leaves fall..."),
             ("Name the capital of France.", "", "Paris")]
    first = [build_assessment_prompt(kind, criterion, *p, rubric_first=True) for p in pairs]
    paper = [build_assessment_prompt(kind, criterion, *p) for p in pairs]
    shared = os.path.commonprefix(first)
    assert len(shared) > 150
    assert "<score>||<explanation>" in shared  # the rubric is in the shared part
    if kind != "icl":  # in the paper's order the pair comes first: little is shared
        assert len(os.path.commonprefix(paper)) < 60


def test_unknown_kind_or_criterion():
    with pytest.raises(ValueError, match="kind"):
        build_assessment_prompt("fancy", "quality", "I", "", "R")
    with pytest.raises(ValueError, match="criterion"):
        build_assessment_prompt("simple", "helpfulness", "I", "", "R")
