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
from sheepdog.kube.observe import parse_time
from sheepdog.planner.reasons import Reason
from sheepdog.planner.stuck_policy import STUCK_REASONS

# What the Stuck condition can say: the stuck pods' reasons and the Job-creation holds.
STUCK_METRIC_REASONS = tuple(str(r) for r in (*STUCK_REASONS, Reason.JOB_CREATE_FAILED, Reason.JOB_CONFLICT,
                                              Reason.WAITING_FOR_OLD_PODS))

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")

# Per-iteration figures from status.iterations[] -> gauge name suffix, help.
ITERATION_FIGURES = {
    "generated": ("sheepdog_iteration_generated_instructions", "Instructions kept by synthesis."),
    "assessed": ("sheepdog_iteration_assessed_pairs", "Pairs self-assessed."),
    "parseFailures": ("sheepdog_iteration_parse_failures", "Self-assessments whose score could not be parsed."),
    "kept": ("sheepdog_iteration_kept_pairs", "Pairs kept by curation."),
    "keepRate": ("sheepdog_iteration_keep_ratio", "Kept / assessed (0..1)."),
    "meanQuality": ("sheepdog_iteration_mean_quality_score", "Mean self-assessed quality (0..10)."),
    "meanFollowing": ("sheepdog_iteration_mean_following_score", "Mean self-assessed instruction following (0..10)."),
    "trainLoss": ("sheepdog_iteration_train_loss", "Final training loss."),
    "gpuSeconds": ("sheepdog_iteration_gpu_seconds", "GPU-seconds of the iteration's stages (GPUs x pod running time)."),
}

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All metric families, in their own registry (tests make as many as they like)."""

    def __init__(self, registry: Optional[CollectorRegistry] = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        run = ("namespace", "run")
        self.runs = Gauge("sheepdog_runs", "SelfAlignmentRuns by phase.", ("namespace", "phase"), registry=r)
        self.run_phase = Gauge(
            "sheepdog_run_phase", "1 for the run's current phase, 0 for the others.", (*run, "phase"), registry=r
        )
        self.run_iteration = Gauge("sheepdog_run_iteration", "The run's current iteration (1-based; 0 before the first).", run, registry=r)
        self.run_stage_info = Gauge(
            "sheepdog_run_stage_info", "1 for the stage the run is in (its iteration and stage as labels).",
            (*run, "iteration", "stage"), registry=r,
        )
        self.run_best_iteration = Gauge("sheepdog_run_best_iteration", "The run's best iteration so far (0: none yet, or M_0, the base model, when stopping found no iteration better).", run, registry=r)
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
        self.runs_stuck = Gauge(
            "sheepdog_runs_stuck", "Runs whose current stage is stuck (its pods do not run, or its Job "
            "cannot be created), by reason.", ("namespace", "reason"), registry=r,
        )
        self.run_stuck_since = Gauge(
            "sheepdog_run_stuck_since_timestamp_seconds", "Unix time since which the run's stage is stuck "
            "(present only while it is).", (*run, "stage", "reason"), registry=r,
        )
        self.events_emitted = Counter("sheepdog_events_total", "Kubernetes Events emitted on runs.", ("namespace", "type", "reason"), registry=r)
        it = (*run, "iteration")
        self.iteration_figures = {
            key: Gauge(name, help_, it, registry=r) for key, (name, help_) in ITERATION_FIGURES.items()
        }
        self.iteration_evaluation = Gauge(
            "sheepdog_iteration_evaluation_score", "Evaluation score of the iteration's model (metric label: suite.metric).",
            (*it, "metric"), registry=r,
        )
        # SelfAlignmentSweeps (kube/sweeps.py): per sweep its runs by phase, GPU-seconds, saving
        from sheepdog.kube.sweep_metrics import SweepMetrics

        self.sweeps = SweepMetrics(r, lambda namespace, reason: self.reconcile_error(namespace, reason))
        self._lock = threading.Lock()
        # (namespace, run) -> the label sets this process has set for the run, to remove them.
        self._series: dict[tuple[str, str], dict[str, set[tuple[str, ...]]]] = {}
        self._phases: dict[tuple[str, str], str] = {}
        self._stuck: dict[tuple[str, str], str] = {}  # (namespace, run) -> stuck reason
        self._namespaces: set[str] = set()

    # ----------------------------------------------------------------------------------------
    # per-run gauges, from status

    def _track(self, key: tuple[str, str], family: str, labels: tuple[str, ...]) -> None:
        self._series.setdefault(key, {}).setdefault(family, set()).add(labels)

    def _families(self) -> dict[str, Any]:
        fams: dict[str, Any] = {
            "run_phase": self.run_phase,
            "run_iteration": self.run_iteration,
            "run_stage_info": self.run_stage_info,
            "run_best_iteration": self.run_best_iteration,
            "run_stuck_since": self.run_stuck_since,
            "iteration_evaluation": self.iteration_evaluation,
        }
        for key, g in self.iteration_figures.items():
            fams["it:" + key] = g
        return fams

    def observe_run(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Set the run's gauges from its (new) status. Series that no longer apply (the stage
        label of the previous stage) are removed."""
        key = (namespace, name)
        fams = self._families()
        with self._lock:
            self._zero_counters(namespace)
            old = self._series.pop(key, {})
            phase = status.get("phase") or "Pending"
            self._phases[key] = phase
            for p in PHASES:
                self.run_phase.labels(namespace, name, p).set(1 if p == phase else 0)
                self._track(key, "run_phase", (namespace, name, p))
            iteration = int(status.get("iteration") or 0)
            self.run_iteration.labels(namespace, name).set(iteration)
            self._track(key, "run_iteration", (namespace, name))
            self.run_best_iteration.labels(namespace, name).set(int(status.get("bestIteration") or 0))
            self._track(key, "run_best_iteration", (namespace, name))
            stuck = _stuck_series(namespace, name, status)
            if stuck is not None:
                labels, since = stuck
                self.run_stuck_since.labels(*labels).set(since)
                self._track(key, "run_stuck_since", labels)
                self._stuck[key] = labels[-1]
            else:
                self._stuck.pop(key, None)
            labels = _stage_series(namespace, name, status)
            if labels is not None:
                self.run_stage_info.labels(*labels).set(1)
                self._track(key, "run_stage_info", labels)
            for rec in status.get("iterations") or ():
                it = str(rec.get("iteration"))
                for fig, gauge in self.iteration_figures.items():
                    value = rec.get(fig)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        gauge.labels(namespace, name, it).set(value)
                        self._track(key, "it:" + fig, (namespace, name, it))
                for metric, value in (rec.get("evaluation") or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        labels = (namespace, name, it, str(metric))
                        self.iteration_evaluation.labels(*labels).set(value)
                        self._track(key, "iteration_evaluation", labels)
            new = self._series.get(key, {})
            for fam, label_sets in old.items():
                for labels in label_sets - new.get(fam, set()):
                    try:
                        fams[fam].remove(*labels)
                    except KeyError:
                        pass
            self._recount(namespace)

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
        key = (namespace, name)
        phase = status.get("phase") or "Pending"
        stuck = _stuck_series(namespace, name, status)
        keep = {"run_stage_info": _stage_series(namespace, name, status),
                "run_stuck_since": stuck[0] if stuck else None}
        fams = self._families()
        with self._lock:
            series = self._series.get(key, {})
            for fam, wanted in keep.items():
                for labels in list(series.get(fam, ())):
                    if labels != wanted:
                        series[fam].discard(labels)
                        try:
                            fams[fam].remove(*labels)
                        except KeyError:
                            pass
            old = self._phases.get(key)
            if old is not None and old != phase:
                self.run_phase.labels(namespace, name, old).set(0)

    def start(self, namespaces: list[str]) -> None:
        """The series of the watched namespaces (or "" for all) at 0, before any run."""
        with self._lock:
            for namespace in namespaces or [""]:
                self._zero_counters(namespace)
                self._recount(namespace)

    def _zero_counters(self, namespace: str) -> None:
        if namespace in self._namespaces:
            return
        self._namespaces.add(namespace)
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
        for reason in STUCK_METRIC_REASONS:
            self.runs_stuck.labels(namespace, reason).set(0)

    def forget_run(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted run."""
        key = (namespace, name)
        fams = self._families()
        with self._lock:
            for fam, label_sets in self._series.pop(key, {}).items():
                for labels in label_sets:
                    try:
                        fams[fam].remove(*labels)
                    except KeyError:
                        pass
            self._phases.pop(key, None)
            self._stuck.pop(key, None)
            self._recount(namespace)

    def _recount(self, namespace: str) -> None:
        counts = {p: 0 for p in PHASES}
        for (ns, _), phase in self._phases.items():
            if ns == namespace and phase in counts:
                counts[phase] += 1
        for p, n in counts.items():
            self.runs.labels(namespace, p).set(n)
        stuck = {r: 0 for r in STUCK_METRIC_REASONS}
        for (ns, _), reason in self._stuck.items():
            if ns == namespace:
                stuck[reason] = stuck.get(reason, 0) + 1
        for reason, n in stuck.items():
            self.runs_stuck.labels(namespace, reason).set(n)

    def known_runs(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._phases)

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


def _stage_series(namespace: str, name: str, status: Mapping[str, Any]) -> Optional[tuple[str, ...]]:
    """The labels of the run's sheepdog_run_stage_info series, None while it is in no stage."""
    stage = status.get("stage")
    if stage and (status.get("phase") or "Pending") in ("Running", "Suspended", "Pending"):
        return (namespace, name, str(int(status.get("iteration") or 0)), str(stage))
    return None


def _stuck_series(namespace: str, name: str, status: Mapping[str, Any]) -> Optional[tuple[tuple[str, ...], float]]:
    """The labels and value (since when) of the run's stuck series, None while it is not stuck."""
    stuck = next((c for c in status.get("conditions") or ()
                  if c.get("type") == "Stuck" and c.get("status") == "True"), None)
    since = parse_time((stuck or {}).get("lastTransitionTime"))
    if stuck is None or (status.get("phase") or "Pending") != "Running" or since is None:
        return None
    return (namespace, name, str(status.get("stage") or ""), str(stuck.get("reason") or "")), since.timestamp()
