"""The judge's HTTP client (evaluation/judge.py HttpJudge, the openai package) against a real
local server speaking the OpenAI chat API: evaluation.judge.timeoutSeconds, maxRetries and
concurrency as the spec sets them. (Wire format, Bearer key, 5xx retry and 4xx failure:
tests/jobs/test_evaluate_stage.py's StubJudge tests.)"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from sheepdog.api.spec import RunSpec
from sheepdog_jobs.evaluation.judge import HttpJudge, JudgeError, Pair
from tests.jobs.http_stub import LocalServer


class GatedJudge:
    """POST /v1/chat/completions answering "7". ``stall`` requests (the first ones) never get
    an answer before the client gives up: they wait until the server closes. Every other
    request waits until ``gate`` requests are in flight together (or 10 s pass), so the most
    requests ever seen in flight is the client's concurrency, whatever the machine's speed."""

    def __init__(self, stall: int = 0, gate: int = 1):
        self.requests = 0
        self.in_flight = self.most_in_flight = 0
        self.stall, self.gate = stall, gate
        self.lock = threading.Lock()
        self.full = threading.Event()
        self.closing = threading.Event()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests += 1
                    stalled = judge.requests <= judge.stall
                    judge.in_flight += 1
                    judge.most_in_flight = max(judge.most_in_flight, judge.in_flight)
                    if judge.in_flight >= judge.gate:
                        judge.full.set()
                try:
                    if stalled:
                        judge.closing.wait(30)
                        return
                    judge.full.wait(10)
                    payload = json.dumps({
                        "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "7"}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with judge.lock:
                        judge.in_flight -= 1

            def log_message(self, *args):
                pass

        self.local = LocalServer(Handler)
        self.url = self.local.url

    def __enter__(self):
        self.local.__enter__()
        return self

    def __exit__(self, *exc):
        self.closing.set()  # the stalled requests end, so the server can close
        self.local.__exit__(*exc)


PAIRS = [Pair(f"Task {i}.", "", f"Answer {i}.") for i in range(6)]


def spec_with_judge(url: str, **judge) -> RunSpec:
    return RunSpec.model_validate({"model": {"base": "m"},
                                   "evaluation": {"judge": {"url": url, "model": "judge", **judge}}})


def test_spec_defaults_give_a_slow_judge_minutes_and_retries():
    judge = HttpJudge.from_spec(spec_with_judge("http://127.0.0.1:9/v1"))
    assert (judge.timeout, judge.max_retries, judge.concurrency) == (300.0, 2, 4)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_bounds_the_requests_in_flight(concurrency):
    with GatedJudge(gate=concurrency) as server:
        judge = HttpJudge.from_spec(spec_with_judge(server.url, concurrency=concurrency))
        out = judge.judge(PAIRS, ["quality"])
    assert [j["quality"].score for j in out] == [7.0] * len(PAIRS)
    assert server.requests == len(PAIRS)
    assert server.most_in_flight == concurrency


def test_a_request_past_the_timeout_is_tried_again():
    with GatedJudge(stall=1) as server:
        judge = HttpJudge.from_spec(spec_with_judge(server.url, timeoutSeconds=0.5, maxRetries=1, concurrency=1))
        out = judge.judge(PAIRS[:1], ["quality"])
    assert out[0]["quality"].score == 7.0
    assert server.requests == 2  # the stalled one, then its retry


def test_timeouts_past_max_retries_fail_the_judgement_with_the_settings_named():
    with GatedJudge(stall=10) as server:
        judge = HttpJudge.from_spec(spec_with_judge(server.url, timeoutSeconds=0.3, maxRetries=2, concurrency=1))
        with pytest.raises(JudgeError, match=r"no answer within 0.3 s, 3 attempts \(evaluation.judge.timeoutSeconds"):
            judge.judge(PAIRS[:1], ["quality"])
    assert server.requests == 3


def test_max_retries_zero_sends_one_request():
    with GatedJudge(stall=10) as server:
        judge = HttpJudge.from_spec(spec_with_judge(server.url, timeoutSeconds=0.3, maxRetries=0))
        with pytest.raises(JudgeError, match="1 attempts"):
            judge.chat([{"role": "user", "content": "hi"}], 4)
    assert server.requests == 1


def test_a_refused_connection_is_a_judge_error():
    with GatedJudge() as server:
        url = server.url
    judge = HttpJudge(url, "judge", max_retries=0)
    with pytest.raises(JudgeError, match="judge endpoint"):
        judge.chat([{"role": "user", "content": "hi"}], 4)


@pytest.mark.parametrize("field,value", [("timeoutSeconds", 0), ("maxRetries", -1), ("concurrency", 0)])
def test_spec_refuses_nonsense_client_settings(field, value):
    with pytest.raises(ValueError, match=field):
        spec_with_judge("http://judge/v1", **{field: value})
