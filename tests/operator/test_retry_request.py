"""The retry request annotation (kube/retry_request.py) and how the resync treats it: pure."""

from __future__ import annotations

from datetime import datetime, timezone

from sheepdog.kube.handlers import settled
from sheepdog.kube.retry_request import RETRY_ANNOTATION, new_token, refusal, retry_patch, retry_token


def run(phase="Failed", token=None, recorded=None):
    meta = {"name": "r", "namespace": "ns", "generation": 3}
    if token is not None:
        meta["annotations"] = {RETRY_ANNOTATION: token}
    status = {"phase": phase, "observedGeneration": 3, "iteration": 2, "stage": "train", "message": "boom"}
    if recorded is not None:
        status["lastRetry"] = {"token": recorded, "resumed": True}
    return {"metadata": meta, "status": status}


def test_the_token_is_the_annotation_and_blank_is_none():
    assert RETRY_ANNOTATION == "sheepdog.dev/retry"
    assert retry_token(run(token="abc")) == "abc"
    assert retry_token(run()) is None and retry_token(run(token="  ")) is None
    assert retry_patch("t") == {"metadata": {"annotations": {"sheepdog.dev/retry": "t"}}}


def test_new_tokens_differ_even_within_one_second():
    at = datetime(2026, 12, 7, 14, 0, 0, tzinfo=timezone.utc)
    a, b = new_token(at), new_token(at)
    assert a != b and a.startswith("20261207T140000Z-")


def test_only_a_failed_run_is_retried_from_the_cli():
    assert refusal(run("Failed")) is None
    assert "not Failed" in refusal(run("Running")) and "Succeeded" in refusal(run("Succeeded"))


def test_a_failed_run_with_a_request_not_acted_on_is_not_settled():
    """The resync must reconcile it, in case the annotation's watch event was missed."""
    assert settled(run("Failed"))
    assert not settled(run("Failed", token="new", recorded="old"))
    assert not settled(run("Failed", token="new"))
    assert settled(run("Failed", token="old", recorded="old"))
