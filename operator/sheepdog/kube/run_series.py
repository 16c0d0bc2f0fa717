"""The per-run series (sheepdog_runs, sheepdog_run_*, sheepdog_iteration_*) as one collector
over a compact record per run, built from the run's status.

Why not prometheus_client Gauge children: each labelled child is an object with its own lock
and value holder, and a finished three-iteration run has about 40 series. With 2000 finished
runs kept in a cluster that cost 52 MiB of the operator's memory (measured: docs/benchmarks.md,
issue 24); a record here is a few hundred bytes, and the samples are built by the scrape, not
by every status write. The counts by namespace (sheepdog_runs, sheepdog_runs_stuck) are
computed by the scrape too: no recount over every run on every status write.

Series and their meaning are unchanged (kube/metrics.py's docstring): a series absent from the
status is absent here (an unknown figure is not 0).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Optional

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from sheepdog.kube.observe import parse_time

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")

# Per-iteration figures from status.iterations[] -> gauge name, help.
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
_FIGURE_KEYS = tuple(ITERATION_FIGURES)

Key = tuple[str, str]  # (namespace, run)


@dataclass(frozen=True)
class RunRecord:
    """What the series of one run say. phase None: between `retire` and the next `observe`
    when the phase changed (every sheepdog_run_phase series of the run at 0)."""

    phase: Optional[str]
    iteration: int
    best_iteration: int
    stage: Optional[tuple[str, str]]  # (iteration, stage) while the run is in one
    stuck: Optional[tuple[str, str, float]]  # (stage, reason, since) while it is stuck
    # per iteration: (iteration, values in _FIGURE_KEYS' order, None where unknown)
    figures: tuple[tuple[str, tuple[Optional[float], ...]], ...]
    evaluation: tuple[tuple[str, str, float], ...]  # (iteration, suite.metric, value)


def _number(value: Any) -> Optional[float]:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stage_of(status: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(iteration, stage) of the run's sheepdog_run_stage_info series, None while it is in none."""
    stage = status.get("stage")
    if stage and (status.get("phase") or "Pending") in ("Running", "Suspended", "Pending"):
        return (str(int(status.get("iteration") or 0)), str(stage))
    return None


def stuck_of(status: Mapping[str, Any]) -> Optional[tuple[str, str, float]]:
    """(stage, reason, since) of the run's stuck series, None while it is not stuck."""
    stuck = next((c for c in status.get("conditions") or ()
                  if c.get("type") == "Stuck" and c.get("status") == "True"), None)
    since = parse_time((stuck or {}).get("lastTransitionTime"))
    if stuck is None or (status.get("phase") or "Pending") != "Running" or since is None:
        return None
    return (str(status.get("stage") or ""), str(stuck.get("reason") or ""), since.timestamp())


def record_of(status: Mapping[str, Any]) -> RunRecord:
    figures, evaluation = [], []
    for rec in status.get("iterations") or ():
        it = str(rec.get("iteration"))
        values = tuple(_number(rec.get(k)) for k in _FIGURE_KEYS)
        if any(v is not None for v in values):
            figures.append((it, values))
        for metric, value in (rec.get("evaluation") or {}).items():
            if _number(value) is not None:
                evaluation.append((it, str(metric), value))
    return RunRecord(
        phase=status.get("phase") or "Pending",
        iteration=int(status.get("iteration") or 0),
        best_iteration=int(status.get("bestIteration") or 0),
        stage=stage_of(status), stuck=stuck_of(status),
        figures=tuple(figures), evaluation=tuple(evaluation),
    )


def retired(old: RunRecord, status: Mapping[str, Any]) -> RunRecord:
    """What may still show while `status` is being written: the old record less what the new
    status no longer says (its former stage and stuck series, the 1 of its former phase)."""
    new_phase = status.get("phase") or "Pending"
    stage, stuck = stage_of(status), stuck_of(status)
    return replace(old, phase=old.phase if old.phase == new_phase else None,
                   stage=old.stage if old.stage == stage else None,
                   stuck=old.stuck if old.stuck == stuck else None)


class RunSeries:
    """The collector (registered in the operator's registry). Thread-safe: reconciles write
    from worker threads while the metrics server scrapes."""

    def __init__(self, registry: CollectorRegistry, stuck_reasons: Iterable[str]):
        self._stuck_reasons = tuple(stuck_reasons)
        self._lock = threading.Lock()
        self._runs: dict[Key, RunRecord] = {}
        self._namespaces: set[str] = set()
        registry.register(self)

    def add_namespace(self, namespace: str) -> None:
        """Its counts exist at 0 from now on (an alert tells "no runs" from "no operator")."""
        with self._lock:
            self._namespaces.add(namespace)

    def observe(self, key: Key, status: Mapping[str, Any]) -> None:
        record = record_of(status)
        with self._lock:
            self._namespaces.add(key[0])
            self._runs[key] = record

    def retire(self, key: Key, status: Mapping[str, Any]) -> None:
        with self._lock:
            old = self._runs.get(key)
            if old is not None:
                self._runs[key] = retired(old, status)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._runs.pop(key, None)

    def known(self) -> set[Key]:
        with self._lock:
            return set(self._runs)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            runs = list(self._runs.items())
            namespaces = set(self._namespaces)
        fams = self._families()
        (count, stuck_count, phase, iteration, stage, best, stuck_since, evaluation, *figure_fams) = fams
        counts = {(ns, p): 0 for ns in namespaces for p in PHASES}
        stuck_counts = {(ns, r): 0 for ns in namespaces for r in self._stuck_reasons}
        for (ns, name), rec in runs:
            if rec.phase in PHASES:
                counts[(ns, rec.phase)] = counts.get((ns, rec.phase), 0) + 1
            for p in PHASES:
                phase.add_metric([ns, name, p], 1 if p == rec.phase else 0)
            iteration.add_metric([ns, name], rec.iteration)
            best.add_metric([ns, name], rec.best_iteration)
            if rec.stage is not None:
                stage.add_metric([ns, name, *rec.stage], 1)
            if rec.stuck is not None:
                st, reason, since = rec.stuck
                stuck_since.add_metric([ns, name, st, reason], since)
                stuck_counts[(ns, reason)] = stuck_counts.get((ns, reason), 0) + 1
            for it, values in rec.figures:
                for fam, value in zip(figure_fams, values):
                    if value is not None:
                        fam.add_metric([ns, name, it], value)
            for it, metric, value in rec.evaluation:
                evaluation.add_metric([ns, name, it, metric], value)
        for (ns, p), n in sorted(counts.items()):
            count.add_metric([ns, p], n)
        for (ns, r), n in sorted(stuck_counts.items()):
            stuck_count.add_metric([ns, r], n)
        return iter(fams)

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        run, it = ["namespace", "run"], ["namespace", "run", "iteration"]
        return [
            GaugeMetricFamily("sheepdog_runs", "SelfAlignmentRuns by phase.", labels=["namespace", "phase"]),
            GaugeMetricFamily("sheepdog_runs_stuck", "Runs whose current stage is stuck (its pods do not run, "
                              "or its Job cannot be created), by reason.", labels=["namespace", "reason"]),
            GaugeMetricFamily("sheepdog_run_phase", "1 for the run's current phase, 0 for the others.",
                              labels=[*run, "phase"]),
            GaugeMetricFamily("sheepdog_run_iteration", "The run's current iteration (1-based; 0 before the "
                              "first).", labels=run),
            GaugeMetricFamily("sheepdog_run_stage_info", "1 for the stage the run is in (its iteration and "
                              "stage as labels).", labels=[*run, "iteration", "stage"]),
            GaugeMetricFamily("sheepdog_run_best_iteration", "The run's best iteration so far (0: none yet, or "
                              "M_0, the base model, when stopping found no iteration better).", labels=run),
            GaugeMetricFamily("sheepdog_run_stuck_since_timestamp_seconds", "Unix time since which the run's "
                              "stage is stuck (present only while it is).", labels=[*run, "stage", "reason"]),
            GaugeMetricFamily("sheepdog_iteration_evaluation_score", "Evaluation score of the iteration's model "
                              "(metric label: suite.metric).", labels=[*it, "metric"]),
            *(GaugeMetricFamily(name, help_, labels=it) for name, help_ in ITERATION_FIGURES.values()),
        ]
