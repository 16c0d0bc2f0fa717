"""The PromQL the project ships: the dashboard's panel queries and the PrometheusRule's alert
expressions, with Grafana's variables substituted so Prometheus and promtool can run them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import yaml

from tests.chart.helm import CHART, one, render

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))

# How the test release is named: the alert rules select the operator's `job` by these.
RELEASE = "sd"
RELEASE_NAMESPACE = "sheepdog-system"
METRICS_JOB = f"{RELEASE}-sheepdog-metrics"


def load_dashboard(path: Path = CHART / "dashboards" / "sheepdog.json") -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows' nested panels too)."""
    for p in dashboard["panels"]:
        if p.get("type") == "row":
            yield from (q for q in p.get("panels", []) if q.get("targets"))
        elif p.get("targets"):
            yield p


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's $var / ${var} substitution (built-ins and template variables)."""
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def grafana_values(run: str, job: str = METRICS_JOB, namespace: str = ".*", rate_interval: str = "1m",
                   sweep: str = "sweep") -> dict[str, str]:
    return {
        "namespace": namespace,
        "run": run,
        "sweep": sweep,
        "job": job,
        "datasource": "prometheus",
        "__rate_interval": rate_interval,
        "__interval": "15s",
        "__range": "1h",
    }


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of every panel."""
    for p in panels(dashboard):
        for t in p["targets"]:
            yield p["title"], t["refId"], t["expr"]


def variable_queries(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """name -> the PromQL inside label_values(...) of each query variable."""
    out = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        assert m, f"variable {v['name']}: {q}"
        out[v["name"]] = m.group(1)
    return out


def rendered_rules(values: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The chart's PrometheusRule spec (a Prometheus rule file: {groups: [...]})."""
    vals = {"prometheusRule": {"enabled": True}}
    if values:
        vals = {**vals, **values}
    docs = render(vals, release=RELEASE, namespace=RELEASE_NAMESPACE)
    return one(docs, "PrometheusRule")["spec"]


def alert_rules(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for g in spec["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str, cwd: Optional[Path] = None, input: Optional[str] = None) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        raise FileNotFoundError("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run([exe, *args], cwd=cwd, input=input, capture_output=True, text=True, timeout=120)


def write_rule_file(path: Path, spec: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(spec), sort_keys=False))
    return path


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers followed by { or [ or used bare,
    minus functions, keywords and label names)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    keywords = {"and", "or", "unless", "offset", "bool", "m", "h", "s", "d", "w", "y", "ms", "le", "inf", "nan"}
    return {w for w in words if w.lower() not in keywords and not re.fullmatch(r"\d+[smhdwy]", w)}


def exported_metric_names() -> set[str]:
    """Every sample name the operator's registry can expose (histograms' _bucket/_sum/_count)."""
    from sheepdog.kube.metrics import Metrics

    names = set()
    for collector in Metrics().registry._collector_to_names:  # noqa: SLF001 - names only
        for fam in collector.describe():
            if fam.type == "histogram":
                names |= {f"{fam.name}_bucket", f"{fam.name}_sum", f"{fam.name}_count"}
            elif fam.type == "counter":
                names.add(f"{fam.name}_total")
            else:
                names.add(fam.name)
    return names
