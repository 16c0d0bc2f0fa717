"""The chart's alert rules (PrometheusRule) with promtool: they parse and lint clean, they
behave as specified on synthetic series (alerts.test.yaml), and they only use metrics the
operator exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.metrics.promql import (
    alert_rules,
    exported_metric_names,
    metric_names,
    promtool,
    rendered_rules,
    write_rule_file,
)

HERE = Path(__file__).resolve().parent
UNIT_TESTS = HERE / "alerts.test.yaml"


VALUE_SETS = {
    "defaults": None,
    "custom": {"prometheusRule": {"enabled": True, "alertLabels": {"team": "ml"}, "alerts": {
        "stageStuck": {"threshold": "90m", "stages": {"train": "3d", "evaluate": None}},
        "jobFailures": {"count": 5, "window": "6h"},
        "operatorDown": {"for": "10m", "severity": "warning"},
    }}},
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_promtool_check_rules(name, tmp_path):
    path = write_rule_file(tmp_path / "rules.yaml", rendered_rules(VALUE_SETS[name]))
    res = promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and "FAILED" not in res.stdout + res.stderr, res.stdout + res.stderr


def test_promtool_test_rules(tmp_path):
    write_rule_file(tmp_path / "sheepdog-rules.yaml", rendered_rules())
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    res = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_unit_tests():
    alerts = {r["alert"] for r in alert_rules(rendered_rules())}
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tests for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert alerts <= firing, f"alerts never seen firing in {UNIT_TESTS.name}: {alerts - firing}"
    assert alerts <= quiet, f"alerts never checked to stay quiet in {UNIT_TESTS.name}: {alerts - quiet}"


def test_alerts_use_only_exported_metrics():
    exported = exported_metric_names() | {"up"}
    for rule in alert_rules(rendered_rules()):
        used = metric_names(rule["expr"])
        assert used, rule["expr"]
        assert used <= exported, f"{rule['alert']}: {used - exported} are not exported by sheepdog.kube.metrics"
