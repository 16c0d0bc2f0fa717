"""A real Prometheus scrapes the operator during kwok-simulated runs.

The chart is installed (ServiceMonitor and PrometheusRule on); Prometheus (Debian's binary, on
a free loopback port) gets a scrape job derived from the release's ServiceMonitor and Service
(job name, path, honorLabels, target labels: what the Prometheus Operator would generate) and
the release's PrometheusRule as its rule file. The operator runs as the release's
ServiceAccount. Then: every dashboard query and variable returns data, every alert expression
evaluates without error on data that exists, the failed run's alert fires, the exposition
passes `promtool check metrics`, and stopping the operator makes SheepdogOperatorDown pending.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.chart.e2e import (
    RESTRICTED,
    Release,
    apply_chart_crds,
    apply_monitoring_crds,
    create_namespace,
    create_token,
    delete_namespace,
    failing_run,
    good_run,
    installed_release,
    run_operator_as,
    storage,
    unique,
    wait_phase,
)
from tests.metrics.promql import (
    alert_rules,
    dashboard_queries,
    grafana_values,
    load_dashboard,
    metric_names,
    promtool,
    substitute,
    variable_queries,
)
from tests.metrics.prometheus import Prometheus, scrape_config_from_service_monitor

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
]

VALUES = {
    "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
}
# Prometheus's ServiceAccount (kube-prometheus-stack's name), in a namespace of its own
PROMETHEUS_SA = "kube-prometheus-stack-prometheus"
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass
class Scraped:
    release: Release
    run_namespace: str
    operator: Any
    prometheus: Prometheus
    job: str
    start: float
    rules: dict[str, Any]

    def values(self, run: str = "good") -> dict[str, str]:
        return grafana_values(run, job=self.job, namespace=self.run_namespace)

    def range(self, expr: str) -> list[dict[str, Any]]:
        return self.prometheus.query_range(expr, self.start, time.time(), step=1)


@pytest.fixture(scope="module")
def scraped(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    apply_chart_crds(cluster)
    apply_monitoring_crds(cluster)
    # Prometheus scrapes with its ServiceAccount's token, which the chart lets read /metrics
    # (metrics.readers), and verifies the operator's certificate with the serving CA
    mon = create_namespace(cluster, unique("monitoring"), RESTRICTED)
    cluster.kubectl("create", "serviceaccount", PROMETHEUS_SA, "-n", mon)
    values = {**VALUES, "metrics": {"readers": [{"kind": "ServiceAccount", "name": PROMETHEUS_SA, "namespace": mon}]}}
    with installed_release(cluster, tmp, "sdprom", values) as rel:
        run_ns = create_namespace(cluster, unique("runs"), RESTRICTED)
        op = run_operator_as(cluster, rel, tmp / "operator.log", namespaces=[])
        op.metrics_token = create_token(cluster, mon, PROMETHEUS_SA)
        token_file = tmp / "prometheus.token"
        token_file.write_text(op.metrics_token)
        svc = rel.get("Service")
        sm = rel.get("ServiceMonitor")
        rules = rel.get("PrometheusRule")["spec"]
        rule_file = tmp / "sheepdog-rules.yaml"
        rule_file.write_text(yaml.safe_dump(rules, sort_keys=False))
        ca = sm["spec"]["endpoints"][0]["tlsConfig"]["ca"]["secret"]
        scrape = scrape_config_from_service_monitor(sm, svc, f"127.0.0.1:{op.metrics_port}", files={
            SA_TOKEN: token_file, f"secret:{ca['name']}/{ca['key']}": op.metrics_tls / ca["key"]})
        prom = Prometheus(tmp / "prom", [scrape], rule_files=[rule_file])
        try:
            storage(cluster, run_ns)
            start = time.time()
            prom.start()
            op.start()
            # the runs start only once a scrape of the operator has succeeded: on a loaded
            # machine Prometheus's first scrapes can come after the first stage has ended
            cluster.wait_for("first successful scrape of the operator",
                             lambda: any(t["health"] == "up" for t in prom.targets()), timeout=60, interval=0.5)
            # each stage lasts 5 s: several 1 s scrapes see every stage even if one times out
            cluster.apply(good_run("good", run_ns, duration="5s"))
            cluster.apply(failing_run("bad", run_ns))
            # a sweep of one cell (the good run's spec): the dashboard's sweep row has its series
            sweep_run = good_run("template", run_ns, iterations=1)
            cluster.apply({"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentSweep",
                           "metadata": {"name": "sweep", "namespace": run_ns,
                                        "annotations": sweep_run["metadata"]["annotations"]},
                           "spec": {"template": sweep_run["spec"],
                                    "axes": [{"field": "filter.threshold", "values": [5]}]}})
            try:
                for name in ("good", "bad", "sweep-threshold-5"):
                    wait_phase(cluster, run_ns, name, ("Succeeded", "Failed"))
            except BaseException:
                print(f"----- operator log -----\n{op.log_tail(300)}")
                raise
            time.sleep(4)  # a few more scrapes and rule evaluations of the final state
            yield Scraped(rel, run_ns, op, prom, svc["metadata"]["name"], start, rules)
        finally:
            op.stop()
            prom.stop()
            delete_namespace(cluster, run_ns)
            delete_namespace(cluster, mon)


def test_prometheus_scrapes_the_operator(scraped):
    (target,) = scraped.prometheus.targets()
    assert target["health"] == "up", target
    # over HTTPS with its token (metrics.secure, the chart's default)
    assert target["scrapeUrl"].startswith("https://"), target
    assert scraped.operator.scrape(token=None)[0] == 401
    assert target["labels"]["job"] == scraped.job
    assert target["labels"]["namespace"] == scraped.release.namespace
    # honorLabels: the runs' namespace survives (not renamed exported_namespace)
    assert scraped.prometheus.query(f'sheepdog_run_phase{{namespace="{scraped.run_namespace}", run="good"}}')
    assert not scraped.prometheus.query('{exported_namespace!=""}')


def test_exposition_passes_promtool_check_metrics(scraped):
    text = scraped.operator.metrics()
    assert "sheepdog_run_phase{" in text and "sheepdog_stage_duration_seconds_bucket{" in text
    res = promtool("check", "metrics", input=text)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


DASHBOARD = load_dashboard()
QUERIES = list(dashboard_queries(DASHBOARD))


@pytest.mark.parametrize("title,ref,expr", QUERIES, ids=[f"{t}/{r}" for t, r, _ in QUERIES])
def test_dashboard_query_returns_data(scraped, title, ref, expr):
    """Over the time of the runs (as the dashboard's time range would show it), each query of
    each panel returns at least one series with a real number."""
    result = scraped.range(substitute(expr, scraped.values()))
    assert result, f"{title}/{ref}: no data for {expr}"
    values = [float(v) for series in result for _, v in series["values"]]
    assert any(math.isfinite(v) for v in values), f"{title}/{ref}: only NaN/Inf"


def test_per_run_panels_show_the_runs_figures(scraped):
    """The values behind the run panels are the run's status figures (kwok summaries)."""
    prom, ns = scraped.prometheus, scraped.run_namespace

    def at_end(metric: str) -> dict[str, float]:
        return {r["metric"]["iteration"]: float(r["value"][1])
                for r in prom.query(f'{metric}{{namespace="{ns}", run="good"}}')}

    assert at_end("sheepdog_iteration_kept_pairs") == {"1": 9.0, "2": 9.0}
    assert at_end("sheepdog_iteration_generated_instructions") == {"1": 20.0, "2": 20.0}
    assert at_end("sheepdog_iteration_train_loss") == {"1": 1.25, "2": 1.25}
    stages = {(r["metric"]["iteration"], r["metric"]["stage"])
              for r in scraped.range(f'sheepdog_run_stage_info{{namespace="{ns}", run="good"}}')}
    # with evaluation on, M_0 is evaluated first, as iteration 0
    assert stages == {("0", "evaluate")} | {(i, s) for i in ("1", "2")
                                           for s in ("synthesize", "curate", "train", "evaluate")}


def test_dashboard_variables_list_the_run(scraped):
    vals = scraped.values()
    found = {}
    for name, q in variable_queries(DASHBOARD).items():
        label = {"job": "job", "namespace": "namespace", "run": "run", "sweep": "sweep"}[name]
        found[name] = {r["metric"].get(label) for r in scraped.range(f"count by ({label}) ({substitute(q, vals)})")}
    assert scraped.job in found["job"]
    assert scraped.run_namespace in found["namespace"]
    assert {"good", "bad"} <= found["run"]
    assert "sweep" in found["sweep"]



# Series that only exist when something goes wrong (the operator's own errors; a run whose
# stage is stuck, which neither run here is): a healthy run may have no series of them, but
# the operator must declare them (Prometheus then knows their metadata), so an alert on them
# is not silently selecting a metric that does not exist.
ONLY_ON_ERROR = {"sheepdog_reconcile_errors_total", "sheepdog_run_stuck_since_timestamp_seconds"}


def test_alert_expressions_evaluate_on_existing_data(scraped):
    metadata = scraped.prometheus.api("metadata")
    for rule in alert_rules(scraped.rules):
        scraped.prometheus.query(rule["expr"])  # raises with Prometheus's error on failure
        for metric in metric_names(rule["expr"]):
            sel = f'{metric}{{job="{scraped.job}"}}'
            if metric in ONLY_ON_ERROR:
                declared = metric in metadata or metric.removesuffix("_total") in metadata
                assert declared, f"{rule['alert']}: {metric} is not declared by the operator"
                continue
            assert scraped.range(f"count({sel})"), f"{rule['alert']}: no {sel} was scraped"


def test_prometheus_evaluates_every_rule_without_error(scraped):
    rules = scraped.prometheus.rules()
    assert len(rules) == len(alert_rules(scraped.rules))
    for r in rules:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))


def active_alerts(scraped: Scraped) -> list[dict[str, str]]:
    return [r["metric"] for r in scraped.prometheus.query("ALERTS")]


def test_run_failed_alert_fires_for_the_failed_run_only(scraped):
    alerts = active_alerts(scraped)
    failed = [a for a in alerts if a["alertname"] == "SheepdogRunFailed"]
    assert [(a["namespace"], a["run"], a["alertstate"]) for a in failed] == [(scraped.run_namespace, "bad", "firing")]
    names = {a["alertname"] for a in alerts}
    assert "SheepdogOperatorDown" not in names and "SheepdogStageStuck" not in names
    assert "SheepdogReconcileErrors" not in names


def test_operator_down_goes_pending_when_the_operator_stops(scraped):
    scraped.operator.stop()

    def pending():
        return [a for a in active_alerts(scraped) if a["alertname"] == "SheepdogOperatorDown"]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not pending():
        time.sleep(0.5)
    (alert,) = pending()
    assert alert["alertstate"] == "pending"  # fires after `for: 5m`
    assert alert["job"] == scraped.job and alert["namespace"] == scraped.release.namespace
