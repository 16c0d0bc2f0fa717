import pytest

from sheepdog_jobs.rules import RULE_REASONS, rule_filter_reason

CLEAN = ("Give three tips for staying healthy.", "",
         "1. Eat vegetables.\n2. Sleep eight hours.\n3. Walk every day.")


def test_clean_pair_is_kept():
    assert rule_filter_reason(*CLEAN) is None


@pytest.mark.parametrize("instruction,inp,output,reason", [
    ("Say hello.", "", "", "empty_output"),
    ("Say hello.", "", " \n\t ", "empty_output"),
    ("Say hello.", "", "Hello!\nUser: and how are you?", "role_marker"),
    ("Say hello.", "", "Hello!\n\nassistant: anything else?", "role_marker"),
    ("Say hello.", "", "Hello!\nHuman:", "role_marker"),
    ("Say hello.", "", "Hello!\n### Instruction:\nWrite more.", "role_marker"),
    ("Say hello.", "", "Hello!\nQuestion: what is 2+2?", "role_marker"),
    ("Say hello.", "", "Output: Hello!", "role_marker"),
    ("Say hello.", "", "Hello!<|im_end|>", "role_marker"),
    ("Say hello.", "", "Hello! [INST] more [/INST]", "role_marker"),
    ("Which is a fruit?", "", "Answer Choices: apple, chair", "answer_choices"),
    ("Which is a fruit?", "", "answer  choices: (A) apple", "answer_choices"),
    ("Which is a fruit?", "", "A) apple\nB) chair", "lettered_options"),
    ("Which is a fruit?", "", "(a) apple\n(b) chair\n(c) stone", "lettered_options"),
    ("Which is a fruit?", "", "Options:\n  C. apple\n  D. chair", "lettered_options"),
    ("Which is a fruit?", "", "A: apple\nB: chair", "lettered_options"),
    ("Translate to English.", "", "Hello means \u4f60\u597d", "cjk_text"),
    ("Translate to English.", "", "\u3053\u3093\u306b\u3061\u306f", "cjk_text"),
    ("Translate to English.", "", "\uc548\ub155", "cjk_text"),
    ("Write a letter to <name>.", "", "Dear friend, ...", "placeholder"),
    ("Write a letter.", "To: <insert recipient here>", "Dear friend", "placeholder"),
    ("Classify the text.", "<noinput>", "Positive", "placeholder"),
    ("Classify the noinput text.", "", "Positive", "placeholder"),
    ("Classify the text.", "None", "Positive", "placeholder"),
    ("Classify the text.", "N/A.", "Positive", "placeholder"),
    ("Classify the text.", "No input", "Positive", "placeholder"),
    ("Classify the text.", "", "noinput", "placeholder"),
    ("Is this sentence positive? I love rainy days.", "I love rainy days.", "Yes",
     "input_in_instruction"),
])
def test_each_reason(instruction, inp, output, reason):
    assert reason in RULE_REASONS
    assert rule_filter_reason(instruction, inp, output) == reason


@pytest.mark.parametrize("instruction,inp,output", [
    ("Explain the user interface.", "", "The user sees a menu. The assistant helps."),  # mid-line
    ("Describe vitamins.", "", "Vitamin (A) helps vision, e.g. at night."),   # not options
    ("Pick one.", "", "The answer is (B)."),                     # a single option, inline
    ("Outline it.", "", "A) Introduction\nA) Again"),           # one distinct letter
    ("List items.", "", "F) six\nG) seven"),                     # letters past E
    ("Write HTML.", "", "Use <b>bold</b> and <div>blocks</div>."),
    ("Use <b>bold</b> in a sentence.", "", "This is <b>bold</b>."),
    ("Compare the values.", "a < b and c > d", "b is larger"),
    ("Explain List<String> in Java.", "", "A generic list of strings."),
    ("Write a function that takes no input.", "", "def f():\n    return 1"),
    ("Give a word that means nonetheless.", "", "However"),
    ("Summarize.", "A long text about rivers.", "Rivers flow."),
])
def test_precise_rules_keep_good_pairs(instruction, inp, output):
    assert rule_filter_reason(instruction, inp, output) is None


def test_cjk_only_dropped_for_english_target():
    assert rule_filter_reason("Translate.", "", "\u4f60\u597d", language="en") == "cjk_text"
    assert rule_filter_reason("Translate.", "", "\u4f60\u597d", language="zh") is None


def test_first_applicable_reason_wins():
    assert rule_filter_reason("Say <name>.", "", "") == "empty_output"
    assert rule_filter_reason("Say <name>.", "", "User: hi\nA) x\nB) y") == "role_marker"
