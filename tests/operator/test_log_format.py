"""`sheepdog operator --log-format json`: one JSON object per log line (sheepdog/logformat.py)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sheepdog.kube.operator import parse_args
from sheepdog.logformat import JsonFormatter, configure


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_extras(restore_root_logging):
    stream = io.StringIO()
    configure("info", "json", stream)
    log = logging.getLogger("sheepdog.operator")
    log.info("run %s started", "demo", extra={"k8s_ref": {"namespace": "ns", "name": "demo"}, "odd": object()})
    log.debug("not at INFO")
    try:
        raise ValueError("bad spec")
    except ValueError:
        log.exception("reconcile failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["level"] == "INFO" and first["logger"] == "sheepdog.operator"
    assert first["message"] == "run demo started"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert first["k8s_ref"] == {"namespace": "ns", "name": "demo"}
    assert first["odd"].startswith("<object object")  # not JSON: its repr, the line still parses
    assert "exception" not in first
    assert second["level"] == "ERROR" and "ValueError: bad spec" in second["exception"]


def test_text_stays_the_default(restore_root_logging, monkeypatch):
    monkeypatch.delenv("SHEEPDOG_LOG_FORMAT", raising=False)
    assert parse_args([]).log_format == "text"
    stream = io.StringIO()
    configure("info", "text", stream)
    logging.getLogger("sheepdog.operator").warning("plain")
    assert stream.getvalue().rstrip().endswith("WARNING sheepdog.operator: plain")


def test_the_flag_and_its_environment_variable(monkeypatch, capsys):
    assert parse_args(["--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("SHEEPDOG_LOG_FORMAT", "json")
    assert parse_args([]).log_format == "json"
    with pytest.raises(SystemExit):
        parse_args(["--log-format", "xml"])
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_a_formatter_alone_makes_one_line_per_record():
    record = logging.LogRecord("kopf.objects", logging.WARNING, __file__, 1, "line one\nline two", (), None)
    text = JsonFormatter().format(record)
    assert "\n" not in text and json.loads(text)["message"] == "line one\nline two"
