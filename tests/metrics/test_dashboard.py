"""The Grafana dashboard, panel by panel, without Grafana: every panel's queries, unit and
legends are the ones in PANELS below (a panel added, removed or changed must be changed here
too), every query parses (promtool), uses only metrics the operator exports, and the layout
is sound. test_prometheus.py runs the same queries against a real Prometheus scraping the
operator during a simulated run."""

from __future__ import annotations

import json

import pytest

from tests.chart.helm import CHART
from tests.metrics.promql import (
    DASHBOARDS,
    dashboard_queries,
    exported_metric_names,
    grafana_values,
    load_dashboard,
    metric_names,
    panels,
    promtool,
    substitute,
    variable_queries,
)

# panel title -> (unit, [(metric the query reads, legend) for each query, in refId order])
PANELS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    # runs overview
    "Runs by phase": ("short", [("sheepdog_runs", "{{phase}}")]),
    "Runs by phase over time": ("short", [("sheepdog_runs", "{{phase}}")]),
    "Operator up": ("none", [("up", "up")]),
    "All runs": ("none", [("sheepdog_run_phase", "{{phase}}"), ("sheepdog_run_iteration", "iteration"),
                          ("sheepdog_run_best_iteration", "best iteration")]),
    # one run ($run)
    "Phase": ("none", [("sheepdog_run_phase", "{{phase}}")]),
    "Iteration": ("none", [("sheepdog_run_iteration", "iteration")]),
    "Best iteration": ("none", [("sheepdog_run_best_iteration", "best iteration")]),
    "Current stage": ("none", [("sheepdog_run_stage_info", "iteration {{iteration}}: {{stage}}")]),
    "Progress through iterations and stages": ("none", [("sheepdog_run_stage_info", "i{{iteration}} {{stage}}")]),
    "Data per iteration: generated, assessed, kept": ("short", [
        ("sheepdog_iteration_generated_instructions", "generated"),
        ("sheepdog_iteration_assessed_pairs", "assessed"),
        ("sheepdog_iteration_kept_pairs", "kept")]),
    "Keep rate per iteration": ("percentunit", [("sheepdog_iteration_keep_ratio", "keep rate")]),
    "Parse failures per iteration": ("short", [("sheepdog_iteration_parse_failures", "parse failures")]),
    "Mean self-assessed scores per iteration": ("none", [
        ("sheepdog_iteration_mean_quality_score", "quality"),
        ("sheepdog_iteration_mean_following_score", "following")]),
    "Train loss per iteration": ("none", [("sheepdog_iteration_train_loss", "train loss")]),
    "GPU-hours per iteration": ("h", [("sheepdog_iteration_gpu_seconds", "GPU-hours")]),
    "GPU-hours per kept pair": ("h", [("sheepdog_iteration_gpu_seconds", "GPU-hours per kept pair")]),
    "Evaluation scores per iteration": ("none", [
        ("sheepdog_iteration_evaluation_score", "{{metric}} (iteration {{iteration}})")]),
    # stages
    "Stage duration (mean and p95)": ("s", [
        ("sheepdog_stage_duration_seconds_sum", "{{stage}} mean"),
        ("sheepdog_stage_duration_seconds_bucket", "{{stage}} p95")]),
    "Stage Jobs created": ("short", [("sheepdog_jobs_created_total", "{{stage}}")]),
    # failures and retries
    "Failures and retries (since operator start)": ("short", [
        ("sheepdog_stage_retries_total", "retried attempts"),
        ("sheepdog_job_failures_total", "failed Jobs"),
        ("sheepdog_run_phase", "failed runs")]),
    "Retries and failures by stage": ("short", [
        ("sheepdog_stage_retries_total", "retried {{stage}}"),
        ("sheepdog_job_failures_total", "failed {{stage}}")]),
    # operator health
    "Reconcile errors": ("ops", [("sheepdog_reconcile_errors_total", "{{reason}}")]),
    "Reconcile latency": ("s", [
        ("sheepdog_reconcile_duration_seconds_bucket", "p50"),
        ("sheepdog_reconcile_duration_seconds_bucket", "p95"),
        ("sheepdog_reconcile_duration_seconds_count", "reconciles/s")]),
    "Stage transition latency (p95)": ("s", [("sheepdog_stage_transition_latency_seconds_bucket", "{{stage}}")]),
    # one row per sweep ($sweep, repeated)
    "Sweep runs by phase": ("short", [("sheepdog_sweep_runs", "{{phase}}")]),
    "Sweep GPU-hours: spent and saved by sharing": ("h", [
        ("sheepdog_sweep_gpu_seconds", "spent"), ("sheepdog_sweep_saved_gpu_seconds", "saved by sharing")]),
    "Sweep stages reused": ("short", [("sheepdog_sweep_reused_stages", "reused stages")]),
}

# What the dashboard must show (the list) -> panels that show it.
REQUIRED = {
    "runs overview by phase": ["Runs by phase", "Runs by phase over time", "All runs"],
    "one run's progress through iterations and stages": ["Iteration", "Current stage",
                                                         "Progress through iterations and stages"],
    "data kept versus generated per iteration": ["Data per iteration: generated, assessed, kept",
                                                 "Keep rate per iteration"],
    "mean scores per iteration": ["Mean self-assessed scores per iteration"],
    "train loss": ["Train loss per iteration"],
    "GPU cost": ["GPU-hours per iteration", "GPU-hours per kept pair"],
    "stage durations": ["Stage duration (mean and p95)"],
    "failures and retries": ["Failures and retries (since operator start)", "Retries and failures by stage"],
    "operator up": ["Operator up"],
    "reconcile errors": ["Reconcile errors"],
    "reconcile latency": ["Reconcile latency"],
    "transition latency": ["Stage transition latency (p95)"],
    "a row per sweep (issue 27)": ["Sweep runs by phase", "Sweep GPU-hours: spent and saved by sharing",
                                   "Sweep stages reused"],
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_dashboard()


def test_dashboard_files_are_json_with_unique_uids():
    assert DASHBOARDS == [CHART / "dashboards" / "sheepdog.json"], "add new dashboards to this test"
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_every_panel_is_in_the_table(dashboard):
    titles = [p["title"] for p in panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    assert set(titles) == set(PANELS), (
        f"not in PANELS: {set(titles) - set(PANELS)}; no such panel: {set(PANELS) - set(titles)}")


@pytest.mark.parametrize("title", sorted(PANELS))
def test_panel_query_unit_and_legend(dashboard, title):
    panel = next(p for p in panels(dashboard) if p["title"] == title)
    unit, expected = PANELS[title]
    assert panel["fieldConfig"]["defaults"]["unit"] == unit
    assert panel["description"], "every panel says what it shows"
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    targets = panel["targets"]
    assert [t["refId"] for t in targets] == [chr(ord("A") + i) for i in range(len(targets))]
    assert len(targets) == len(expected), [t["expr"] for t in targets]
    for t, (metric, legend) in zip(targets, expected):
        assert metric in metric_names(t["expr"]), f"{t['refId']}: {t['expr']} does not read {metric}"
        assert t["legendFormat"] == legend
        assert t["datasource"] == panel["datasource"]
        if metric != "up":
            assert 'namespace=~"$namespace"' in t["expr"], "every query honours the namespace variable"
    if "$run" in json.dumps(targets):
        for t in targets:
            assert 'run="$run"' in t["expr"]
    if "$sweep" in json.dumps(targets):
        for t in targets:
            assert 'sweep="$sweep"' in t["expr"]


def test_required_views_exist(dashboard):
    titles = {p["title"] for p in panels(dashboard)}
    for what, needed in REQUIRED.items():
        assert set(needed) <= titles, f"{what}: missing {set(needed) - titles}"


def test_queries_use_only_exported_metrics(dashboard):
    exported = exported_metric_names() | {"up"}
    for title, ref, expr in dashboard_queries(dashboard):
        used = metric_names(substitute(expr, grafana_values("r")))
        assert used <= exported, f"{title}/{ref}: {used - exported} are not exported"
    for name, q in variable_queries(dashboard).items():
        assert metric_names(substitute(q, grafana_values("r"))) <= exported, name


def test_variables(dashboard):
    vars_ = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(vars_) == {"datasource", "job", "namespace", "run", "sweep"}
    assert vars_["datasource"]["type"] == "datasource" and vars_["datasource"]["query"] == "prometheus"
    assert vars_["namespace"]["includeAll"] and vars_["namespace"]["allValue"] == ".*"
    assert "$namespace" in vars_["run"]["definition"]
    assert "$namespace" in vars_["sweep"]["definition"] and vars_["sweep"]["includeAll"]
    # the sweep row repeats per sweep
    [row] = [p for p in dashboard["panels"] if p["type"] == "row" and p["title"] == "Sweep $sweep"]
    assert row["repeat"] == "sweep"


def test_every_query_parses(dashboard, tmp_path):
    """promtool checks each query (variables substituted) as a recording rule's expression."""
    rules = []
    for i, (title, ref, expr) in enumerate(dashboard_queries(dashboard)):
        rules.append({"record": f"dashboard:query_{i}", "expr": substitute(expr, grafana_values("r"))})
    for name, q in variable_queries(dashboard).items():
        rules.append({"record": f"dashboard:variable_{name}", "expr": substitute(q, grafana_values("r"))})
    import yaml

    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_layout_has_no_overlaps(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
