"""The SelfAlignmentSweep gauges (the dashboard's sweep row), in the operator's registry.

Labels: namespace and sweep (and a child's phase): bounded like the runs' series. Derived from
the status each reconcile writes, so they are right after an operator restart too; removed when
the sweep is deleted (Dispatcher.forget -> forget_run).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, Gauge

CELL_PHASES = ("NotCreated", "Pending", "Running", "Suspended", "Succeeded", "Failed")


class SweepMetrics:
    """Per sweep: its runs by phase, GPU-seconds, what sharing saved and the stages reused
    (the dashboard's sweep row). Derived from the status written, so right after a restart."""

    def __init__(self, registry: CollectorRegistry, reconcile_error: Optional[Callable[[str, str], None]] = None):
        labels = ("namespace", "sweep")
        self.runs = Gauge("sheepdog_sweep_runs", "A sweep's child runs by phase (NotCreated: waiting for "
                          "maxParallelRuns).", (*labels, "phase"), registry=registry)
        self.gpu = Gauge("sheepdog_sweep_gpu_seconds", "Sum of the sweep's children's GPU-seconds.", labels,
                         registry=registry)
        self.saved = Gauge("sheepdog_sweep_saved_gpu_seconds", "GPU-seconds the sweep's shared stages did "
                           "not spend again (the producers' cost of every reused stage).", labels, registry=registry)
        self.reused = Gauge("sheepdog_sweep_reused_stages", "Stages of the sweep's children taken from the "
                            "stage cache.", labels, registry=registry)
        self._reconcile_error = reconcile_error
        self._known: set[tuple[str, str]] = set()

    def observe(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        phases = [c.get("phase") for c in status.get("cells") or []]
        for phase in CELL_PHASES:
            self.runs.labels(namespace, name, phase).set(phases.count(phase))
        self.gpu.labels(namespace, name).set(status.get("gpuSeconds") or 0)
        self.saved.labels(namespace, name).set(status.get("savedGpuSeconds") or 0)
        self.reused.labels(namespace, name).set(status.get("reusedStages") or 0)
        self._known.add((namespace, name))

    def forget_run(self, namespace: str, name: str) -> None:  # Dispatcher.forget calls it so
        if (namespace, name) not in self._known:
            return
        self._known.discard((namespace, name))
        for phase in CELL_PHASES:
            try:
                self.runs.remove(namespace, name, phase)
            except KeyError:
                pass
        for g in (self.gpu, self.saved, self.reused):
            try:
                g.remove(namespace, name)
            except KeyError:
                pass

    def reconcile_error(self, namespace: str, reason: str) -> None:
        if self._reconcile_error is not None:
            self._reconcile_error(namespace, f"Sweep{reason}")
