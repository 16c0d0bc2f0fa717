import random

import pytest

from sheepdog_jobs.rouge import ExactDedup, FastDedup, lcs_length, rouge_l_f1, tokenize
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS


def test_tokenize_matches_rouge_score_default_tokenizer():
    assert tokenize("Don't STOP-me now!!") == ["don", "t", "stop", "me", "now"]
    assert tokenize("café 42x  _under_score") == ["caf", "42x", "under", "score"]
    assert tokenize("") == []
    assert tokenize("?! ...") == []


def test_lcs_length_known_values():
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length([], [1, 2]) == 0
    assert lcs_length([1, 2, 3], [1, 2, 3]) == 3
    assert lcs_length([1, 2, 3], [3, 2, 1]) == 1


def test_rouge_l_f1_known_values():
    a = tokenize("the cat sat on the mat")
    b = tokenize("the cat lay on the mat")
    # LCS = 5 ("the cat on the mat"), p = r = 5/6
    assert rouge_l_f1(a, b) == pytest.approx(5 / 6)
    assert rouge_l_f1(a, a) == 1.0
    assert rouge_l_f1(a, []) == 0.0
    assert rouge_l_f1(tokenize("police killed the gunman"),
                      tokenize("the gunman kill police")) == pytest.approx(0.5)  # lcs 2 of 4/4


def test_f1_uses_rouge_score_float_formula_at_ties():
    # lcs 28, lengths 43 and 37: exactly 0.7 mathematically, one ulp above in rouge_score.
    a = [f"t{i}" for i in range(43)]
    b = a[:28] + [f"u{i}" for i in range(9)]
    f1 = rouge_l_f1(a, b)
    assert f1 > 0.7
    assert f1 == pytest.approx(0.7)
    for cls in (ExactDedup, FastDedup):
        dedup = cls([" ".join(a)], threshold=0.7)
        assert dedup.add_if_novel(" ".join(b)) is False


@pytest.mark.parametrize("cls", [ExactDedup, FastDedup])
@pytest.mark.parametrize("n,k", [(13, 7), (65, 35)])
def test_tie_with_pool_item_contained_in_candidate(cls, n, k):
    # F1 = 2k/(n+k) = 0.7 exactly (0.7000000000000001 in floats): the LCS needed is exactly
    # 0.7n/1.3, the edge of FastDedup's prefix filter.
    candidate = [f"t{i}" for i in range(n)]
    item = candidate[::2][:k] if n >= 2 * k - 1 else candidate[:k]
    assert rouge_l_f1(candidate, item) > 0.7
    dedup = cls([" ".join(item)], threshold=0.7)
    assert dedup.add_if_novel(" ".join(candidate)) is False


@pytest.mark.parametrize("cls", [ExactDedup, FastDedup])
def test_dedup_basic_decisions(cls):
    dedup = cls(["Give three tips for staying healthy."], threshold=0.7)
    assert len(dedup) == 1
    assert dedup.add_if_novel("Give three tips for staying healthy!") is False
    assert dedup.add_if_novel("Give three tips for staying very healthy.") is False  # f=0.92
    assert dedup.add_if_novel("Translate the sentence into French.") is True
    assert len(dedup) == 2
    # the kept text is now in the pool
    assert dedup.add_if_novel("Translate the sentence into French, please.") is False
    assert dedup.max_similarity("Give three tips for staying healthy.") == 1.0
    assert dedup.max_similarity("zebra quantum") == 0.0


@pytest.mark.parametrize("cls", [ExactDedup, FastDedup])
def test_dedup_threshold_is_strict_greater(cls):
    # f1 = 2*2/(3+3)... use exact 0.5: lcs 2 of 4 and 4 tokens
    dedup = cls(["a b c d"], threshold=0.5)
    assert dedup.add_if_novel("a b x y") is True  # f1 == 0.5, not > 0.5
    assert dedup.add_if_novel("a b c z") is False  # 0.75


@pytest.mark.parametrize("cls", [ExactDedup, FastDedup])
def test_dedup_empty_pool_and_empty_text(cls):
    dedup = cls([], threshold=0.7)
    assert dedup.max_similarity("anything here") == 0.0
    assert dedup.add_if_novel("anything here") is True
    assert dedup.add_if_novel("!!!") is True  # no tokens: similar to nothing (as the reference)
    assert dedup.add_if_novel("anything here") is False


@pytest.mark.parametrize("cls", [ExactDedup, FastDedup])
def test_threshold_validation(cls):
    with pytest.raises(ValueError):
        cls([], threshold=1.5)
    with pytest.raises(ValueError):
        cls([], threshold=-0.1)


def _random_corpus(rng: random.Random, count: int) -> list[str]:
    vocab = ["the", "a", "of", "write", "list", "give", "explain", "story", "poem", "code",
             "python", "sort", "numbers", "short", "three", "tips", "about", "for", "and",
             "summarize", "text", "following", "sentence", "word", "translate", "french"]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    texts: list[str] = []
    for _ in range(count):
        if texts and rng.random() < 0.6:
            words = rng.choice(texts).split()  # near-duplicate of an earlier text
            for _ in range(rng.randint(0, 3)):
                op = rng.random()
                pos = rng.randrange(len(words) + 1)
                if op < 0.4:
                    words.insert(pos, rng.choices(vocab, weights)[0])
                elif op < 0.7 and len(words) > 1:
                    del words[min(pos, len(words) - 1)]
                else:
                    words[min(pos, len(words) - 1)] = rng.choices(vocab, weights)[0]
        else:
            words = rng.choices(vocab, weights, k=rng.randint(1, 14))
        texts.append(" ".join(words))
    return texts


# About 3000 near-duplicate strings in all; high thresholds keep more, so the (quadratic)
# reference gets fewer strings there to keep the test fast.
@pytest.mark.parametrize("threshold,count", [(0.0, 600), (0.3, 600), (0.5, 600), (0.7, 600),
                                             (0.9, 400), (1.0, 200)])
def test_exact_and_fast_make_identical_decisions(threshold, count):
    rng = random.Random(int(threshold * 100) + 7)
    texts = _random_corpus(rng, count)
    pool = texts[:30]
    exact, fast = ExactDedup(pool, threshold), FastDedup(pool, threshold)
    decisions = []
    for text in texts[30:]:
        e, f = exact.add_if_novel(text), fast.add_if_novel(text)
        assert e == f, (text, threshold)
        decisions.append(e)
    assert len(exact) == len(fast)
    # the corpus really exercises both outcomes (except at the extremes)
    if 0.0 < threshold < 1.0:
        assert 0 < sum(decisions) < len(decisions)
    for text in texts[:200]:
        assert exact.max_similarity(text) == fast.max_similarity(text)


def test_fast_dedup_equivalence_on_seed_instructions():
    from pathlib import Path
    import json
    path = SELF_INSTRUCT_SEED_TASKS
    assert path.exists(), f"the shared Self-Instruct seed tasks are missing: {path}"
    seeds = [json.loads(line)["instruction"] for line in path.open()]
    rng = random.Random(3)
    exact, fast = ExactDedup(seeds[:100]), FastDedup(seeds[:100])
    for text in seeds[100:] + [s.replace("the", "a", 1) for s in rng.sample(seeds, 60)]:
        assert exact.add_if_novel(text) == fast.add_if_novel(text)
    assert len(exact) == len(fast) < 175 + 60  # some rewrites were duplicates
