"""Prometheus metrics of the operator (prometheus_client).

Naming follows Prometheus conventions: base units (seconds, ratios 0..1), `_total` counters,
`_info` for a constant-1 series that carries labels. Labels are bounded: namespace, run,
iteration, stage, phase, metric (evaluation metric names come from the run's suites) and
reason (CamelCase words chosen by the planner/operator). No spec contents, paths, images or
secrets are ever labels or values.

Per-run series are derived from the run's status on every reconcile (`observe_run`), so they
are right after an operator restart too; they are removed when the run is deleted
(`forget_run`). Counters and histograms count what this process saw happen (a transition is
counted once: when a reconcile moves the status record of a stage, which happens once).
The per-stage counters of a namespace exist at 0 from its first run on: `increase()` and
`rate()` then see the first Job, retry or failure (a series born at 1 shows no increase).
Every series an alert or the dashboard reads exists from the operator's start (`start`: the
watched namespaces, or namespace "" when it watches all), so "no errors" (0) and "no
operator" (absent) look different.

Stuck runs (the run's Stuck condition, planner/stuck_policy.py): `sheepdog_runs_stuck` counts
them by reason, `sheepdog_run_stuck_since_timestamp_seconds` says since when each one is
stuck (the condition's lastTransitionTime, so it survives operator restarts); the
SheepdogRunStuck alert compares it with time().
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sheepdog.api.spec import STAGES
from sheepdog.kube.run_series import ITERATION_FIGURES, PHASES, RunSeries  # noqa: F401 (re-exported)
from sheepdog.planner.reasons import Reason
from sheepdog.planner.stuck_policy import STUCK_REASONS

# What the Stuck condition can say: the stuck pods' reasons and the Job-creation holds.
STUCK_METRIC_REASONS = tuple(str(r) for r in (*STUCK_REASONS, Reason.JOB_CREATE_FAILED, Reason.JOB_CONFLICT,
                                              Reason.WAITING_FOR_OLD_PODS))

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All metric families, in their own registry (tests make as many as they like)."""

    def __init__(self, registry: Optional[CollectorRegistry] = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        run = ("namespace", "run")
        self.stage_duration = Histogram(
            "sheepdog_stage_duration_seconds", "Wall time of a finished stage Job (start to completion).",
            ("namespace", "stage", "result"), buckets=DURATION_BUCKETS, registry=r,
        )
        self.jobs_created = Counter("sheepdog_jobs_created_total", "Stage Jobs created.", ("namespace", "stage"), registry=r)
        self.job_failures = Counter(
            "sheepdog_job_failures_total", "Stage Jobs that failed for good (attempts exhausted).", ("namespace", "stage"), registry=r
        )
        self.stage_retries = Counter(
            "sheepdog_stage_retries_total", "Failed stage attempts that were retried by the Job controller.", ("namespace", "stage"), registry=r
        )
        self.transition_latency = Histogram(
            "sheepdog_stage_transition_latency_seconds",
            "From a stage Job's completion to the creation of the next stage's Job.",
            ("namespace", "stage"), buckets=LATENCY_BUCKETS, registry=r,
        )
        self.reconcile_errors = Counter(
            "sheepdog_reconcile_errors_total", "Reconciles that raised (they are retried).", ("namespace", "reason"), registry=r
        )
        self.reconcile_duration = Histogram(
            "sheepdog_reconcile_duration_seconds", "Duration of one reconcile of one run.", ("namespace",),
            buckets=RECONCILE_BUCKETS, registry=r,
        )
        self.events_emitted = Counter("sheepdog_events_total", "Kubernetes Events emitted on runs.", ("namespace", "type", "reason"), registry=r)
        self.run_series = RunSeries(r, STUCK_METRIC_REASONS)
        # SelfAlignmentSweeps (kube/sweeps.py): per sweep its runs by phase, GPU-seconds, saving
        from sheepdog.kube.sweep_metrics import SweepMetrics

        self.sweeps = SweepMetrics(r, lambda namespace, reason: self.reconcile_error(namespace, reason))
        self._lock = threading.Lock()
        self._namespaces: set[str] = set()

    # ----------------------------------------------------------------------------------------
    # per-run gauges, from status

    def observe_run(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Set the run's series from its (new) status (kube/run_series.py): series the status
        no longer says (the stage label of the previous stage) are gone."""
        self._zero_counters(namespace)
        self.run_series.observe((namespace, name), status)

    def with_status_write(self, namespace: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any],
                          write: Callable[[], None]) -> None:
        """Runs `write` (the status write) with the run's gauges changing in the same step: what
        the new status stops saying goes before it, what it says right after it (before any
        Event's request), and a failed write puts the old status's series back."""
        self.retire(namespace, name, new)
        try:
            write()
        except BaseException:
            self.observe_run(namespace, name, old)
            raise
        self.observe_run(namespace, name, new)

    def retire(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Before the run's status is written: take down what the new status no longer says
        (its former stage and stuck series, the 1 of its former phase), so that no scrape
        after the write shows the old state. observe_run sets the new series after the write."""
        self.run_series.retire((namespace, name), status)

    def start(self, namespaces: list[str]) -> None:
        """The series of the watched namespaces (or "" for all) at 0, before any run."""
        for namespace in namespaces or [""]:
            self._zero_counters(namespace)

    def _zero_counters(self, namespace: str) -> None:
        with self._lock:
            if namespace in self._namespaces:
                return
            self._namespaces.add(namespace)
        self.run_series.add_namespace(namespace)
        for stage in STAGES:
            for counter in (self.jobs_created, self.job_failures, self.stage_retries):
                counter.labels(namespace, stage)
        # a conflict is the one error every busy operator sees; its series stands for "0 errors"
        self.reconcile_errors.labels(namespace, "Conflict")
        self.reconcile_duration.labels(namespace)
        for stage in STAGES:
            self.transition_latency.labels(namespace, stage)
            for result in ("succeeded", "failed"):
                self.stage_duration.labels(namespace, stage, result)

    def forget_run(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted run."""
        self.run_series.forget((namespace, name))

    def known_runs(self) -> set[tuple[str, str]]:
        return self.run_series.known()

    # ----------------------------------------------------------------------------------------
    # events of this process

    def job_created(self, namespace: str, stage: str, latency: Optional[float]) -> None:
        self.jobs_created.labels(namespace, stage).inc()
        if latency is not None:
            self.transition_latency.labels(namespace, stage).observe(max(0.0, latency))

    def stage_finished(self, namespace: str, stage: str, result: str, seconds: Optional[float]) -> None:
        if seconds is not None and seconds >= 0:
            self.stage_duration.labels(namespace, stage, result).observe(seconds)
        if result == "failed":
            self.job_failures.labels(namespace, stage).inc()

    def stage_retried(self, namespace: str, stage: str, n: int = 1) -> None:
        if n > 0:
            self.stage_retries.labels(namespace, stage).inc(n)

    def reconcile_error(self, namespace: str, reason: str) -> None:
        self.reconcile_errors.labels(namespace, reason).inc()

    def reconciled(self, namespace: str, seconds: float) -> None:
        self.reconcile_duration.labels(namespace).observe(seconds)

    def event_emitted(self, namespace: str, type_: str, reason: str) -> None:
        self.events_emitted.labels(namespace, type_, reason).inc()
