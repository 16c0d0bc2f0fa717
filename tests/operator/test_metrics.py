"""sheepdog.kube.metrics: families, names, labels, and series removal (no cluster)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sheepdog.kube.metrics import Metrics

STATUS = {
    "phase": "Running",
    "iteration": 2,
    "stage": "train",
    "bestIteration": 1,
    "iterations": [
        {"iteration": 1, "generated": 20, "assessed": 18, "parseFailures": 1, "kept": 9, "keepRate": 0.5,
         "meanQuality": 7.5, "meanFollowing": 8.0, "trainLoss": 1.25, "evaluation": {"ifeval-smoke.promptStrict": 0.3}},
        {"iteration": 2, "generated": 21},
    ],
}


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def names(m: Metrics) -> set[str]:
    return {name for name, _ in samples(m)}


def test_run_series_from_status():
    m = Metrics()
    m.observe_run("ns", "r", STATUS)
    s = samples(m)
    assert s[("sheepdog_runs", (("namespace", "ns"), ("phase", "Running")))] == 1
    assert s[("sheepdog_runs", (("namespace", "ns"), ("phase", "Succeeded")))] == 0
    assert s[("sheepdog_run_iteration", (("namespace", "ns"), ("run", "r")))] == 2
    assert s[("sheepdog_run_stage_info", (("iteration", "2"), ("namespace", "ns"), ("run", "r"), ("stage", "train")))] == 1
    it1 = (("iteration", "1"), ("namespace", "ns"), ("run", "r"))
    assert s[("sheepdog_iteration_kept_pairs", it1)] == 9
    assert s[("sheepdog_iteration_keep_ratio", it1)] == 0.5
    assert s[("sheepdog_iteration_train_loss", it1)] == 1.25
    assert s[("sheepdog_iteration_evaluation_score", (*it1[:1], ("metric", "ifeval-smoke.promptStrict"), *it1[1:]))] == 0.3
    # unknown figures are absent, not 0
    assert ("sheepdog_iteration_kept_pairs", (("iteration", "2"), ("namespace", "ns"), ("run", "r"))) not in s


def test_stage_change_replaces_the_stage_info_series_and_delete_removes_all():
    m = Metrics()
    m.observe_run("ns", "r", STATUS)
    m.observe_run("ns", "other", {"phase": "Succeeded", "iteration": 1})
    m.observe_run("ns", "r", {**STATUS, "iteration": 3, "stage": "synthesize"})
    s = samples(m)
    info = [k for k in s if k[0] == "sheepdog_run_stage_info"]
    assert info == [("sheepdog_run_stage_info", (("iteration", "3"), ("namespace", "ns"), ("run", "r"), ("stage", "synthesize")))]
    m.forget_run("ns", "r")
    s = samples(m)
    assert not [k for k in s if ("run", "r") in k[1]]
    assert s[("sheepdog_runs", (("namespace", "ns"), ("phase", "Running")))] == 0
    assert s[("sheepdog_runs", (("namespace", "ns"), ("phase", "Succeeded")))] == 1


def test_counter_and_histogram_names_follow_conventions():
    m = Metrics()
    m.job_created("ns", "synthesize", None)
    m.job_created("ns", "curate", 0.4)
    m.stage_finished("ns", "synthesize", "succeeded", 12.0)
    m.stage_finished("ns", "train", "failed", 3.0)
    m.stage_retried("ns", "train", 2)
    m.reconcile_error("ns", "ApiException")
    m.reconciled("ns", 0.01)
    n = names(m)
    for want in (
        "sheepdog_jobs_created_total", "sheepdog_job_failures_total", "sheepdog_stage_retries_total",
        "sheepdog_reconcile_errors_total", "sheepdog_stage_duration_seconds_bucket",
        "sheepdog_stage_transition_latency_seconds_count", "sheepdog_reconcile_duration_seconds_sum",
    ):
        assert want in n, want
    s = samples(m)
    assert s[("sheepdog_stage_retries_total", (("namespace", "ns"), ("stage", "train")))] == 2
    assert s[("sheepdog_job_failures_total", (("namespace", "ns"), ("stage", "train")))] == 1
    assert s[("sheepdog_stage_transition_latency_seconds_count", (("namespace", "ns"), ("stage", "curate")))] == 1
    assert s[("sheepdog_jobs_created_total", (("namespace", "ns"), ("stage", "synthesize")))] == 1


def test_stage_counters_of_a_namespace_start_at_zero():
    """increase() only sees the first failure of a namespace if the series existed before it."""
    m = Metrics()
    assert not [k for k in samples(m) if k[0] == "sheepdog_job_failures_total"]
    m.observe_run("ns", "r", STATUS)
    s = samples(m)
    for stage in ("synthesize", "curate", "train", "evaluate"):
        labels = (("namespace", "ns"), ("stage", stage))
        for name in ("sheepdog_jobs_created_total", "sheepdog_job_failures_total", "sheepdog_stage_retries_total"):
            assert s[(name, labels)] == 0, (name, stage)
    m.stage_finished("ns", "train", "failed", 3.0)
    m.observe_run("ns", "r", STATUS)  # a later reconcile does not reset anything
    assert samples(m)[("sheepdog_job_failures_total", (("namespace", "ns"), ("stage", "train")))] == 1


def test_every_series_an_alert_or_the_dashboard_reads_exists_from_the_start():
    """'No errors' (a 0) must look different from 'no operator' (nothing): the series the
    alerts and the dashboard read exist before any run, except the per-run (and per-sweep) ones."""
    from tests.metrics.promql import alert_rules, dashboard_queries, load_dashboard, metric_names, rendered_rules

    m = Metrics()
    m.start(["ns"])
    present = {name for name, _ in samples(m)}
    exprs = [r["expr"] for r in alert_rules(rendered_rules())] + [e for _, _, e in dashboard_queries(load_dashboard())]
    # a Gauge says its labels on the collector, a custom collector (kube/run_series.py) per family
    per_run = {fam.name for c in m.registry._collector_to_names for fam in c.describe()  # noqa: SLF001
               if {"run", "sweep"} & set(getattr(c, "_labelnames", ()) or getattr(fam, "_labelnames", ()))}
    read = {n for e in exprs for n in metric_names(e)} - {"up"}
    missing = {n for n in read if n not in present and not any(n.startswith(f) for f in per_run)}
    assert not missing, f"absent until something happens: {sorted(missing)}"
    assert samples(m)[("sheepdog_reconcile_errors_total", (("namespace", "ns"), ("reason", "Conflict")))] == 0
    assert samples(m)[("sheepdog_runs_stuck", (("namespace", "ns"), ("reason", "Unschedulable")))] == 0


def test_stuck_runs_are_counted_by_reason_with_the_time_they_got_stuck():
    stuck = dict(STATUS, conditions=[{"type": "Stuck", "status": "True", "reason": "ImagePullFailing",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    m = Metrics()
    m.observe_run("ns", "r", stuck)
    m.observe_run("ns", "q", STATUS)
    s = samples(m)
    assert s[("sheepdog_runs_stuck", (("namespace", "ns"), ("reason", "ImagePullFailing")))] == 1
    assert s[("sheepdog_runs_stuck", (("namespace", "ns"), ("reason", "Unschedulable")))] == 0
    key = ("sheepdog_run_stuck_since_timestamp_seconds",
           (("namespace", "ns"), ("reason", "ImagePullFailing"), ("run", "r"), ("stage", "train")))
    assert s[key] == 1767225600.0
    m.observe_run("ns", "r", STATUS)  # not stuck any more
    s = samples(m)
    assert key not in s and s[("sheepdog_runs_stuck", (("namespace", "ns"), ("reason", "ImagePullFailing")))] == 0
    # a suspended run is never counted stuck (the planner writes no Stuck=True for it either)
    m.observe_run("ns", "r", dict(stuck, phase="Suspended"))
    assert samples(m)[("sheepdog_runs_stuck", (("namespace", "ns"), ("reason", "ImagePullFailing")))] == 0


def test_gpu_seconds_per_iteration_from_status():
    m = Metrics()
    m.observe_run("ns", "r", {**STATUS, "gpuSeconds": 7200,
                              "iterations": [{"iteration": 1, "kept": 9, "gpuSeconds": 7200}, {"iteration": 2}]})
    s = samples(m)
    assert s[("sheepdog_iteration_gpu_seconds", (("iteration", "1"), ("namespace", "ns"), ("run", "r")))] == 7200
    assert ("sheepdog_iteration_gpu_seconds", (("iteration", "2"), ("namespace", "ns"), ("run", "r"))) not in s


def stage_info(m: Metrics) -> list[tuple]:
    return [k for k in samples(m) if k[0] == "sheepdog_run_stage_info"]


def test_a_status_write_takes_the_old_stage_down_before_the_write_and_sets_the_new_after():
    """Issue 24: right after a run read Succeeded, a scrape still showed its last stage. What a
    scrape during the write sees is recorded by the write itself."""
    m = Metrics()
    m.observe_run("ns", "r", STATUS)
    done = {**STATUS, "phase": "Succeeded", "stage": None}
    during: dict[str, object] = {}

    def write() -> None:
        s = samples(m)
        during["info"] = stage_info(m)
        during["running"] = s[("sheepdog_run_phase", (("namespace", "ns"), ("phase", "Running"), ("run", "r")))]

    m.with_status_write("ns", "r", STATUS, done, write)
    assert during == {"info": [], "running": 0}
    s = samples(m)
    assert stage_info(m) == []
    assert s[("sheepdog_run_phase", (("namespace", "ns"), ("phase", "Succeeded"), ("run", "r")))] == 1
    assert s[("sheepdog_runs", (("namespace", "ns"), ("phase", "Running")))] == 0


def test_a_failed_status_write_puts_the_old_series_back():
    m = Metrics()
    m.observe_run("ns", "r", STATUS)
    before = samples(m)

    def refused() -> None:
        raise RuntimeError("409")

    try:
        m.with_status_write("ns", "r", STATUS, {**STATUS, "iteration": 3, "stage": "synthesize"}, refused)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the write's error must reach the reconcile")
    assert samples(m) == before
