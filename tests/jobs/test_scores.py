import math

import pytest

from sheepdog_jobs.scores import logprob_score


def lp(p: float) -> float:
    return math.log(p) if p > 0 else float("-inf")


def test_expected_argmax_and_mass():
    expected, argmax, mass = logprob_score({"7": lp(0.2), "8": lp(0.2), "9": lp(0.1)})
    assert mass == pytest.approx(0.5)
    assert expected == pytest.approx((7 * 0.2 + 8 * 0.2 + 9 * 0.1) / 0.5)  # 7.8
    assert argmax == 7  # tie between 7 and 8: the smaller (stricter) score


def test_single_digit_certain():
    assert logprob_score({"9": 0.0}) == (9.0, 9, 1.0)


def test_renormalisation_ignores_other_tokens():
    # Only 15% of the mass on digits (the measured tiny-model case); result is still a score.
    expected, argmax, mass = logprob_score({"2": lp(0.1), "3": lp(0.05), "Hello": lp(0.8)})
    assert mass == pytest.approx(0.15)
    assert expected == pytest.approx((2 * 0.1 + 3 * 0.05) / 0.15)
    assert argmax == 2


def test_ten_as_its_own_token():
    expected, argmax, mass = logprob_score({"10": lp(0.6), "9": lp(0.2)})
    assert argmax == 10 and mass == pytest.approx(0.8)
    assert expected == pytest.approx((10 * 0.6 + 9 * 0.2) / 0.8)


def test_ten_sharing_the_one_prefix_is_subtracted():
    # P("1") = 0.5 covers "1" and "10"; P("10") = P("1") * P("0"|"1") = 0.4.
    expected, argmax, mass = logprob_score({"1": lp(0.5), "10": lp(0.4)},
                                           ten_shares_one_prefix=True)
    assert mass == pytest.approx(0.5)
    assert argmax == 10
    assert expected == pytest.approx((1 * 0.1 + 10 * 0.4) / 0.5)
    # without the flag the two are counted separately
    _, _, mass_separate = logprob_score({"1": lp(0.5), "10": lp(0.4)})
    assert mass_separate == pytest.approx(0.9)


def test_space_prefixed_tokens_add_up():
    expected, argmax, mass = logprob_score(
        {"8": lp(0.3), " 8": lp(0.2), "\u25815": lp(0.1), "\u01205": lp(0.1), "x5": lp(0.2)})
    assert mass == pytest.approx(0.7)  # "x5" is not a score
    assert argmax == 8
    assert expected == pytest.approx((8 * 0.5 + 5 * 0.2) / 0.7)


def test_nothing_covered():
    assert logprob_score({}) == (None, None, 0.0)
    assert logprob_score({"8": float("-inf"), "x": 0.0}) == (None, None, 0.0)
    assert logprob_score({"0": 0.0, "11": 0.0}) == (None, None, 0.0)  # not scores


def test_nan_is_an_error():
    with pytest.raises(ValueError):
        logprob_score({"8": float("nan")})


def test_expected_is_within_range():
    expected, _, _ = logprob_score({str(k): lp(0.1) for k in range(1, 11)})
    assert expected == pytest.approx(5.5)
