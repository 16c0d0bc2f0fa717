"""retry_policy: a stage's own backoffLimit wins over spec.retries."""

from sheepdog.planner.retry_policy import backoff_limit, max_attempts
from tests.planner.simulate import make_spec


def test_spec_retries_is_the_default():
    spec = make_spec(retries=4)
    assert [backoff_limit(spec, s) for s in ("synthesize", "curate", "train", "evaluate")] == [4, 4, 4, 4]
    assert max_attempts(spec, "train") == 5


def test_a_stage_backoff_limit_overrides_including_zero():
    spec = make_spec(retries=2, stages={"train": {"backoffLimit": 0}, "curate": {"backoffLimit": 7}})
    assert backoff_limit(spec, "train") == 0 and max_attempts(spec, "train") == 1
    assert backoff_limit(spec, "curate") == 7
    assert backoff_limit(spec, "synthesize") == 2


def test_paper_default_is_two_retries():
    assert max_attempts(make_spec(), "synthesize") == 3
