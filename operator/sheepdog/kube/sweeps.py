"""The SelfAlignmentSweep controller: API calls and Kopf wiring around sheepdog.sweep.policy.

    reconcile(ns, name): GET the sweep, LIST its children (label sheepdog.dev/sweep=<name>),
    plan_sweep -> POST each child to create (409: it exists, never a duplicate), then the
    sweep's status (a merge patch of the status subresource, conditional on the sweep's
    resourceVersion), then its Events; the sweep's gauges from the status written.

Triggers: any watch event of a sweep; any watch event of a run labelled sheepdog.dev/sweep
(its owner is reconciled: a child's phase or figures changed); a resync of every unsettled
sweep (the safety net for a lost event). Reconciles run in the operator's thread pool, one at
a time per sweep, coalesced, through the same Dispatcher the runs use (handlers.py).

Nothing lives only in memory: after a SIGKILL the next process lists the children and creates
exactly the missing ones (policy.py). Deleting a sweep deletes its children (ownerReferences,
the garbage collector); their Jobs follow theirs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from sheepdog.api.spec import GROUP, PLURAL, VERSION
from sheepdog.api.sweep_spec import SWEEP_PLURAL
from sheepdog.kube.client import Conflict, NotFound, replacing_merge_patch
from sheepdog.kube.events import run_event
from sheepdog.kube.sweep_metrics import SweepMetrics
from sheepdog.sweep.grid import LABEL_SWEEP
from sheepdog.sweep.policy import plan_sweep

log = logging.getLogger("sheepdog.sweeps")
SWEEP_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Invalid")


@dataclass
class SweepResult:
    """What Dispatcher logs of a reconcile (the attributes of the runs' Result it reads)."""

    phase: str = ""
    created: list[str] = field(default_factory=list)
    status_written: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)
    recheck_after: Optional[float] = None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SweepReconciler:
    """One reconcile of a sweep (blocking: runs in the Dispatcher's thread pool)."""

    def __init__(self, kube: Any, metrics: SweepMetrics, instance: str = ""):
        self.kube = kube
        self.metrics = metrics
        self.instance = instance

    # paths ------------------------------------------------------------------------------------
    @staticmethod
    def _sweeps(namespace: Optional[str]) -> str:
        if namespace:
            return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SWEEP_PLURAL}"
        return f"/apis/{GROUP}/{VERSION}/{SWEEP_PLURAL}"

    @staticmethod
    def _runs(namespace: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    # API ----------------------------------------------------------------------------------------
    def get_sweep(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        try:
            return self.kube.request("GET", f"{self._sweeps(namespace)}/{name}")
        except NotFound:
            return None

    def list_sweeps(self, namespace: Optional[str]) -> list[dict[str, Any]]:
        # paged like every LIST of the operator (tests/operator/test_watch_scope.py)
        return list(self.kube._list_pages(self._sweeps(namespace), []).get("items") or [])  # noqa: SLF001

    def list_children(self, namespace: str, name: str) -> list[dict[str, Any]]:
        out = self.kube._list_pages(self._runs(namespace), [("labelSelector", f"{LABEL_SWEEP}={name}")])  # noqa: SLF001
        return list(out.get("items") or [])

    def create_child(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """True when created; False when a run of its name exists (it is not created twice)."""
        try:
            self.kube.request("POST", self._runs(namespace), body=manifest)
        except Conflict:
            return False
        return True

    def write_status(self, sweep: dict[str, Any], status: dict[str, Any]) -> None:
        meta = sweep["metadata"]
        old = sweep.get("status") or {}
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]},
                "status": replacing_merge_patch(old, status) if old else status}
        self.kube.request("PATCH", f"{self._sweeps(meta['namespace'])}/{meta['name']}/status", body=body,
                          content_type="application/merge-patch+json")

    # the reconcile --------------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str) -> SweepResult:
        sweep = self.get_sweep(namespace, name)
        if sweep is None or (sweep.get("metadata") or {}).get("deletionTimestamp"):
            return SweepResult(phase="Deleted")
        children = self.list_children(namespace, name)
        plan = plan_sweep(sweep, children, _now())
        result = SweepResult(phase=plan.status.get("phase", ""))
        for manifest in plan.creates:
            manifest = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
            if self.create_child(namespace, manifest):
                result.created.append(manifest["metadata"]["name"])
        old = sweep.get("status") or {}
        if _differs(old, plan.status):
            self.write_status(sweep, plan.status)  # Conflict: the Dispatcher retries on fresh data
            result.status_written = True
        for type_, reason, message in plan.events:
            if reason == "RunCreated" and message.split()[2] not in result.created:
                continue  # it existed already: no Event for a create that did not happen
            self.kube.request("POST", f"/api/v1/namespaces/{namespace}/events",
                              body=run_event(sweep, type_, reason, message, self.instance))
            result.events.append((type_, reason))
        self.metrics.observe(namespace, name, plan.status)
        return result

    def forget(self, namespace: str, name: str) -> None:
        pass  # nothing kept per sweep beyond its gauges (SweepMetrics.forget_run)


def _differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the status needs a write: anything but the conditions' timestamps changed."""
    strip = lambda s: {**s, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                           for c in s.get("conditions") or []]}
    return strip(old) != strip(new)


def settled(sweep: dict[str, Any]) -> bool:
    st = sweep.get("status") or {}
    return (st.get("phase") in ("Succeeded", "Invalid")
            and st.get("observedGeneration") == (sweep.get("metadata") or {}).get("generation"))


async def resync_forever(dispatcher: Any, reconciler: SweepReconciler, namespaces: list[str],
                         interval: float) -> None:
    """Every `interval` s: trigger every sweep that is not settled (a lost event's safety net)."""
    loop = asyncio.get_running_loop()
    crd_missing_said = False
    while True:
        await asyncio.sleep(interval)
        if not dispatcher.leading():
            continue
        try:
            for ns in namespaces or [None]:
                for sweep in await loop.run_in_executor(dispatcher.executor, reconciler.list_sweeps, ns):
                    meta = sweep.get("metadata") or {}
                    if not settled(sweep):
                        await dispatcher.trigger(meta.get("namespace"), meta.get("name"), why="resync")
            crd_missing_said = False
        except asyncio.CancelledError:
            raise
        except NotFound:
            # The SelfAlignmentSweep CRD is not installed (runs alone work without it): said
            # once, not a traceback a minute; served as soon as it is installed.
            if not crd_missing_said:
                log.warning("the SelfAlignmentSweep CRD is not installed: no sweeps are served until it is")
                crd_missing_said = True
        except Exception:  # noqa: BLE001 - logged; the next round tries again
            log.exception("sweep resync failed; next in %ss", interval)


def register(registry: Any, dispatcher: Any) -> None:
    """Kopf on.event handlers: sweeps, and runs labelled sheepdog.dev/sweep (their owner)."""
    import kopf

    @kopf.on.event(GROUP, VERSION, SWEEP_PLURAL, registry=registry)
    async def sweep_event(type: Optional[str], body: Any, namespace: Optional[str], name: Optional[str],
                          **_: Any) -> None:
        if not name or not namespace:
            return
        if type == "DELETED":
            dispatcher.forget(namespace, name)
            return
        await dispatcher.trigger(namespace, name, why=f"sweep {type or 'listed'}")

    @kopf.on.event(GROUP, VERSION, PLURAL, labels={LABEL_SWEEP: kopf.PRESENT}, registry=registry)
    async def child_event(type: Optional[str], labels: Any, namespace: Optional[str], name: Optional[str],
                          **_: Any) -> None:
        sweep = labels.get(LABEL_SWEEP)
        if sweep and namespace:
            await dispatcher.trigger(namespace, sweep, why=f"child run {name} {type or 'listed'}")


def start(registry: Any, kube: Any, executor: Any, run_dispatcher: Any, instance: str) -> tuple[Any, Any]:
    """The sweep controller beside the runs': its Dispatcher (leading when the runs' does) and
    reconciler, with the operator's sweep gauges (Metrics.sweeps); handlers registered. The
    caller starts resync_forever."""
    from sheepdog.kube.handlers import Dispatcher

    reconciler = SweepReconciler(kube, run_dispatcher.metrics.sweeps, instance)
    dispatcher = Dispatcher(reconciler, executor)  # type: ignore[arg-type]
    dispatcher.leading = lambda: run_dispatcher.leading()
    register(registry, dispatcher)
    return dispatcher, reconciler


__all__ = ["SweepMetrics", "SweepReconciler", "register", "resync_forever", "settled", "start"]
