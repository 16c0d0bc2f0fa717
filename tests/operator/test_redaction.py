"""sheepdog.redaction: credentials out of text that status, Events and the operator's log carry."""

from __future__ import annotations

import logging

import pytest

from sheepdog.redaction import REDACTED, RedactingFilter, redact, redact_logs

HF = "hf_" + "aBcD1234" * 4 + "xy"
SK = "sk-proj-" + "Z9y8X7w6" * 4
GHP = "ghp_" + "0123456789abcdefABCDEF" * 2
AKIA = "AKIA" + "ABCDEFGHIJ234567"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLXBhcnQtaGVyZQ"


@pytest.mark.parametrize("text,secret,expected", [
    ("POST https://alice:s3cr3t@judge.example.com/v1/chat failed",
     "s3cr3t", f"POST https://{REDACTED}@judge.example.com/v1/chat failed"),
    ("mlflow at http://tok3n@mlflow:5000 refused", "tok3n", f"mlflow at http://{REDACTED}@mlflow:5000 refused"),
    ("s3://AKIDX:wJalr%2FK7@bucket/p", "wJalr", f"s3://{REDACTED}@bucket/p"),
    (f"401 for token {HF} at hub", HF, f"401 for token {REDACTED} at hub"),
    (f"openai.AuthenticationError: Incorrect API key provided: {SK}.", SK,
     f"openai.AuthenticationError: Incorrect API key provided: {REDACTED}."),
    (f"git clone with {GHP}", GHP, f"git clone with {REDACTED}"),
    (f"InvalidAccessKeyId: {AKIA} does not exist", AKIA, f"InvalidAccessKeyId: {REDACTED} does not exist"),
    (f"headers={{'Authorization': 'Bearer abcdef0123456789xyz'}}", "abcdef0123456789xyz",
     f"headers={{'Authorization': 'Bearer {REDACTED}'}}"),
    (f"token: {JWT}", JWT, f"token: {REDACTED}"),
    ("HF_TOKEN=plainvalue123 python -m x", "plainvalue123", f"HF_TOKEN={REDACTED} python -m x"),
    ('{"api_key": "k-1234", "model": "m"}', "k-1234", f'{{"api_key": "{REDACTED}", "model": "m"}}'),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI", f"AWS_SECRET_ACCESS_KEY={REDACTED}"),
    ("password:hunter2, user: bob", "hunter2", f"password:{REDACTED}, user: bob"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- end", "MIIEow", f"{REDACTED} end"),
])
def test_credentials_are_redacted(text, secret, expected):
    out = redact(text)
    assert out == expected
    assert secret not in out
    assert redact(out) == out, "idempotent: a status rewritten every reconcile stays the same"


@pytest.mark.parametrize("text", [
    "BackoffLimitExceeded: Job has reached the specified backoff limit; last pod r-i1-train-0: "
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "synthesis.maxTokens: 64; max_tokens=512; tokens: 1000 generated",
    "image ghcr.io/sheepdog-dev/sheepdog-worker:0.1.0 pulled; see https://example.com/docs#secret-volumes",
    "secret \"hf-token\" not found",
    "user@example.com wrote 3 files to /data/runs/r",
    "skipping sk-1 and hf_x (too short to be tokens)",
    "",
])
def test_ordinary_messages_are_left_alone(text):
    assert redact(text) == text


def test_the_log_filter_redacts_arguments_and_tracebacks():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("test.redaction")
    logger.propagate = False
    handler = Keep()
    logger.addHandler(handler)
    try:
        redact_logs(logger)
        redact_logs(logger)  # installed once
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        logger.warning("stage failed: %s", f"GET https://u:pw@hub/x with {HF}")
        try:
            raise RuntimeError(f"bad key {SK}")
        except RuntimeError:
            logger.exception("reconcile of %s failed", "ns/r")
    finally:
        logger.removeHandler(handler)
    assert records[0] == f"stage failed: GET https://{REDACTED}@hub/x with {REDACTED}"
    assert records[1].startswith("reconcile of ns/r failed\nTraceback")
    assert f"RuntimeError: bad key {REDACTED}" in records[1] and SK not in records[1]


def test_a_failed_stages_last_words_reach_status_and_events_redacted():
    """observe.failure_message (status.message, the stage record, the StageFailed Event and
    pendingEvents take it from there) and every Event the operator posts."""
    from sheepdog.kube.events import run_event
    from sheepdog.kube.observe import failure_message

    summary = '{"ok": false, "error": "HTTPError 401 for https://bob:hunter2@judge/v1 with key ' + SK + '"}'
    job = {"metadata": {"name": "r-i1-evaluate"},
           "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                      "message": "Job has reached the specified backoff limit"}]}}
    pod = {"metadata": {"name": "r-i1-evaluate-x", "creationTimestamp": "2025-01-01T00:00:00Z"},
           "status": {"phase": "Failed", "containerStatuses": [
               {"state": {"terminated": {"exitCode": 1, "message": summary, "finishedAt": "2025-01-01T00:01:00Z"}}}]}}
    message = failure_message(job, [pod])
    assert message == ("BackoffLimitExceeded: Job has reached the specified backoff limit; last pod r-i1-evaluate-x: "
                       f"HTTPError 401 for https://{REDACTED}@judge/v1 with key {REDACTED}")
    # a raw (non-JSON) message whose token straddles the clip (1024): redacted first, so no
    # head of it too short to recognise is left behind
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    terminated["message"] = "P"
    head = len(failure_message(job, [pod])) - 1
    terminated["message"] = "x" * (1024 - 12 - head) + " " + HF
    clipped = failure_message(job, [pod])
    assert len(clipped) <= 1024 and HF[:8] not in clipped and clipped.endswith(REDACTED), clipped[-40:]
    run = {"metadata": {"name": "r", "namespace": "ns", "uid": "u"}}
    event = run_event(run, "Warning", "StageFailed", f"evaluate failed: token={HF}")
    assert event["message"] == f"evaluate failed: token={REDACTED}"
