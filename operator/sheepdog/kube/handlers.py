"""Kopf handlers and the per-run reconcile queue.

Triggers (all end in Dispatcher.trigger(namespace, name)):
  - any watch event of a SelfAlignmentRun (including the initial listing after a start);
  - a watch event of a Job labelled sheepdog.dev/run that changes what the planner reads of
    it (observe.job_signature: state, attempts, start and finish), or deletes it; the other
    Job events (a pod became ready, counters moving between fields) are dropped here;
  - a watch event of a stage pod (label sheepdog.dev/run) that changes whether or why it is
    stuck (Reconciler.pod_changed: unschedulable, image pull failing, a config error); the
    ordinary life of a pod is dropped here;
  - the Job controller's FailedCreate Event about a stage Job (the Job's status does not
    change when its pods cannot be created);
  - a recheck the reconcile asked for (Result.recheck_after: a Job-creation error's backoff, a
    Job without pods whose FailedCreate Event may follow, a deleted Job's pods still ending);
  - a periodic resync of every run that is not settled (one background task), the safety net
    for a lost event; a finished run whose status answers its current spec is skipped.

What a reconcile reads comes from the watch streams (sheepdog.kube.cache, issue 14 point 8):
`@kopf.index` handlers on runs, stage Jobs, stage pods and Jobs' FailedCreate Events put every
listed, added or modified object into the WatchCache and keep nothing in Kopf's own indexes;
their point is that Kopf then starts no handler until every indexed resource's initial listing
is through them, so no reconcile after a start plans on a half-filled cache. The on.event
handlers below drop deleted objects from it (and a FailedCreate Event triggers its run). The resync re-lists runs and stage Jobs into it (WatchCache.relist: the
deletions a watch that expired may have missed).

Only `@kopf.on.event` and `@kopf.index` handlers are registered: Kopf then adds no finalizer
and writes no progress annotations to runs (those come with on.create/on.update/on.delete,
timers and daemons). A run can therefore always be deleted, also while the operator is down; its Jobs go
with it through their ownerReferences (the garbage collector). The one exception is a run with
spec.storage.deleteDataOnDelete: the operator's own finalizer holds it until its data is
deleted (kube/data_cleanup.py; at most planner/data_cleanup_policy.CLEANUP_TIMEOUT once the
operator runs).

Per run, one reconcile runs at a time, and triggers that arrive while one is queued are
coalesced into it: a reconcile reads everything anew (from the cache, which the event that
triggered it has already updated), so one that *starts* after a trigger covers that trigger. Reconciles run in a thread pool (the Kubernetes client is blocking);
the event loop only queues. A reconcile that raises is retried with backoff (1 s .. 60 s).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from sheepdog.api.spec import GROUP, PLURAL, VERSION
from sheepdog.kube.client import Conflict
from sheepdog.kube.observe import LABEL_RUN
from sheepdog.kube.reconcile import Reconciler
from sheepdog.planner.data_cleanup_policy import FINALIZER
from sheepdog.timestamps import parse_time
from sheepdog.kube.retry_request import retry_token

log = logging.getLogger("sheepdog.handlers")

RETRY_DELAYS = (1, 2, 5, 10, 30, 60)


@dataclass
class _RunState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    requested: int = 0
    covered: int = 0
    failures: int = 0
    retry: Optional[asyncio.TimerHandle] = None
    waiters: int = 0


class Dispatcher:
    def __init__(self, reconciler: Reconciler, executor: concurrent.futures.Executor):
        self.reconciler = reconciler
        self.metrics = reconciler.metrics
        self.executor = executor
        self._runs: dict[tuple[str, str], _RunState] = {}
        self.last_resync: Optional[float] = None
        self.reconciles = 0
        self._tasks: set[asyncio.Task] = set()
        # Whether this replica may reconcile (leader election, kube/leader.py): a standby keeps
        # its cache fed and drops every trigger.
        self.leading: Callable[[], bool] = lambda: True
        self.leading_since: Optional[float] = None

    async def trigger(self, namespace: str, name: str, why: str = "",
                      no_news: Optional[Callable[[], bool]] = None) -> None:
        """Reconcile the run (coalesced, see the module docstring). `no_news` is asked once
        this trigger's turn has come: True drops it (a run event of our own status write
        whose response had not been recorded when the event arrived)."""
        if not self.leading():
            return
        key = (namespace, name)
        st = self._runs.get(key)
        if st is None:
            st = self._runs[key] = _RunState()
        st.requested += 1
        seq = st.requested
        st.waiters += 1
        try:
            async with st.lock:
                if st.covered >= seq:
                    return  # a reconcile that started after this trigger already ran
                if no_news is not None and no_news():
                    return
                st.covered = st.requested
                await self._run(key, st, why)
        finally:
            st.waiters -= 1
            if st.waiters == 0 and st.retry is None and not st.lock.locked() and self._runs.get(key) is st:
                # nothing pending: drop the state (keeps memory bounded by live activity)
                if st.failures == 0:
                    del self._runs[key]

    async def _run(self, key: tuple[str, str], st: _RunState, why: str) -> None:
        namespace, name = key
        if st.retry is not None:
            st.retry.cancel()
            st.retry = None
        loop = asyncio.get_running_loop()
        log.debug("%s/%s: reconcile (%s)", namespace, name, why or "event")
        try:
            result = await loop.run_in_executor(self.executor, self.reconciler.reconcile, namespace, name)
        except Conflict as e:
            # The run changed between our read and our status write: its change is an event of
            # its own, but retry soon regardless.
            log.info("%s/%s: conflict (%s); retrying", namespace, name, e)
            self.metrics.reconcile_error(namespace, "Conflict")
            self._schedule(key, st, 0.2)
            return
        except Exception as e:  # noqa: BLE001 - logged, counted, retried
            st.failures += 1
            delay = RETRY_DELAYS[min(st.failures, len(RETRY_DELAYS)) - 1]
            self.metrics.reconcile_error(namespace, type(e).__name__)
            log.exception("%s/%s: reconcile failed (%s); retrying in %ss", namespace, name, why or "event", delay)
            self._schedule(key, st, delay)
            return
        self.reconciles += 1
        st.failures = 0
        if result.recheck_after:
            self._schedule(key, st, result.recheck_after)
        if result.created or result.status_written or result.events:
            log.info(
                "%s/%s: phase %s%s%s%s", namespace, name, result.phase,
                f", created {', '.join(result.created)}" if result.created else "",
                ", status written" if result.status_written else "",
                f", events {', '.join(r for _, r in result.events)}" if result.events else "",
            )

    def _schedule(self, key: tuple[str, str], st: _RunState, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if st.retry is not None:
            st.retry.cancel()

        def fire() -> None:
            st.retry = None
            task = loop.create_task(self.trigger(*key, why="retry"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        st.retry = loop.call_later(delay, fire)

    def forget(self, namespace: str, name: str) -> None:
        st = self._runs.pop((namespace, name), None)
        if st is not None and st.retry is not None:
            st.retry.cancel()
        self.reconciler.forget(namespace, name)
        self.metrics.forget_run(namespace, name)

    # -----------------------------------------------------------------------------------------

    async def resync(self, namespaces: list[str], concurrency: int) -> int:
        """Reconcile every run once; forget the metrics of runs that no longer exist."""
        loop = asyncio.get_running_loop()
        lists = [None] if not namespaces else list(namespaces)
        runs: list[tuple[str, str]] = []
        present: set[tuple[str, str]] = set()
        kube, cache = self.reconciler.kube, self.reconciler.cache
        for ns in lists:
            items = await loop.run_in_executor(self.executor, kube.list_runs, ns)
            await loop.run_in_executor(self.executor, relist, cache, "runs", ns, items)
            jobs = await loop.run_in_executor(self.executor, kube.list_stage_jobs, ns)
            await loop.run_in_executor(self.executor, relist, cache, "jobs", ns, jobs)
            # pods and FailedCreate Events deleted while their watch was away: a stuck pod or an
            # old FailedCreate left in the cache would hold its run stuck for ever
            pods = await loop.run_in_executor(self.executor, kube.list_stage_pods, ns)
            await loop.run_in_executor(self.executor, relist, cache, "pods", ns, pods)
            self.reconciler.prune_pods(ns, pods, getattr(pods, "resource_version", None))
            events = await loop.run_in_executor(self.executor, kube.list_failed_create_events, ns)
            await loop.run_in_executor(self.executor, relist, cache, "events", ns, events)
            for r in items:
                key = (r["metadata"]["namespace"], r["metadata"]["name"])
                present.add(key)
                if not settled(r):
                    runs.append(key)
        for key in self.metrics.known_runs() - present:
            self.forget(*key)
        sem = asyncio.Semaphore(concurrency)

        async def one(key: tuple[str, str]) -> None:
            async with sem:
                await self.trigger(*key, why="resync")

        await asyncio.gather(*(one(k) for k in runs))
        self.last_resync = time.monotonic()
        return len(runs)

    def lead(self, namespaces: list[str], concurrency: int) -> None:
        """This replica leads from now on: reconcile every run at once (the triggers of the
        standby time were dropped)."""
        self.leading_since = time.monotonic()
        task = asyncio.get_running_loop().create_task(self.resync(namespaces, concurrency))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stalled(self, interval: float) -> Optional[str]:
        """Why the liveness probe fails: the leader's resync has not completed for three
        intervals (a reconcile or an API call that hangs); None while it is fine."""
        if not self.leading():
            return None
        since = self.last_resync if self.last_resync is not None else self.leading_since
        if since is None:
            return None
        age = time.monotonic() - since
        return f"no resync completed for {age:.0f}s (every {interval:g}s expected)" if age > 3 * interval else None

    async def resync_forever(self, namespaces: list[str], interval: float, concurrency: int) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.leading():
                continue
            try:
                n = await self.resync(namespaces, concurrency)
                log.debug("resync: %d runs", n)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                self.metrics.reconcile_error("", "ResyncFailed")
                log.exception("resync failed; next in %ss", interval)


def relist(cache: Any, kind: str, namespace: Optional[str], items: list) -> None:
    dropped = cache.relist(kind, namespace, items, getattr(items, "resource_version", None))
    if dropped:
        log.info("resync: %d cached %s were gone (deletions the watch missed)", dropped, kind)


def settled(run: Any) -> bool:
    """A finished run whose status answers its current spec: only an event (an edit, a
    deletion) can give it anything to do, so the resync skips it. One with a
    ttlSecondsAfterFinished is never settled: it is to be deleted (run_ttl.py)."""
    st = run.get("status") or {}
    token = retry_token(run)  # a retry request not acted on yet (its watch event was missed)
    return (st.get("phase") in ("Succeeded", "Failed")
            and st.get("observedGeneration") == (run.get("metadata") or {}).get("generation")
            and (token is None or (st.get("lastRetry") or {}).get("token") == token)
            and (run.get("spec") or {}).get("ttlSecondsAfterFinished") is None)


def may_owe_events(run: Any, event_ttl: float) -> bool:
    """Whether the run's last status write named Events a crashed process may not have posted
    (younger than the API server keeps Events): a fresh process reconciles it to post them."""
    now = time.time()
    for ev in (run.get("status") or {}).get("pendingEvents") or ():
        at = parse_time((ev or {}).get("at"))
        if at is None or now - at.timestamp() < event_ttl:
            return True
    return False


def register(registry: Any, dispatcher: Dispatcher, resync_interval: float = 60.0) -> None:
    """The Kopf handlers (on.event and the cache's index feed; see the module docstring)."""
    import kopf

    cache = dispatcher.reconciler.cache
    stage = {LABEL_RUN: kopf.PRESENT}

    # The cache's feed (see the module docstring). Returning None keeps nothing in Kopf's index.
    @kopf.index(GROUP, VERSION, PLURAL, registry=registry)
    async def cached_runs(body: Any, **_: Any) -> None:
        cache.put_run(body)

    @kopf.index("batch", "v1", "jobs", labels=stage, registry=registry)
    async def cached_jobs(body: Any, **_: Any) -> None:
        cache.put_job(body)

    @kopf.index("", "v1", "pods", labels=stage, registry=registry)
    async def cached_pods(body: Any, **_: Any) -> None:
        cache.put_pod(body)

    # Only the Job controller's FailedCreate Events (operator.py's field selector): why a Job has
    # no pods. The Job's status does not change on one, so the Event itself triggers its run.
    @kopf.index("", "v1", "events", registry=registry)
    async def cached_events(body: Any, **_: Any) -> None:
        cache.put_event(body)

    @kopf.on.event("", "v1", "events", registry=registry)
    async def failed_create(type: Optional[str], body: Any, namespace: Optional[str], name: Optional[str],
                            **_: Any) -> None:
        if not namespace or not name:
            return
        if type == "DELETED":
            cache.drop_event(namespace, name, body.get("metadata", {}).get("uid"))
            return
        job = (body.get("involvedObject") or {}).get("name")
        run = cache.run_of_job(namespace, job) if job else None
        if run:  # else not a stage Job (or not delivered yet: the reconcile's recheck covers it)
            await dispatcher.trigger(namespace, run, why=f"FailedCreate of {job}")

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def run_event(type: Optional[str], body: Any, namespace: Optional[str], name: Optional[str], **_: Any) -> None:
        if not name or not namespace:
            return
        if type == "DELETED":
            cache.drop_run(namespace, name, body.get("metadata", {}).get("uid"))
            dispatcher.forget(namespace, name)
            return
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            if FINALIZER in (meta.get("finalizers") or ()):  # deleteDataOnDelete: its data goes first
                await dispatcher.trigger(namespace, name, why="run deleted")
            return
        if type is None and settled(body) and not may_owe_events(body, dispatcher.reconciler.options.event_ttl):
            # Listed at a start and finished with nothing to do: its gauges from its status, no
            # reconcile (a cluster's history of thousands of finished runs costs no requests).
            dispatcher.metrics.observe_run(namespace, name, body.get("status") or {})
            return
        rv = meta.get("resourceVersion")
        own = lambda: dispatcher.reconciler.is_own_write(namespace, name, rv)  # noqa: E731
        if own():
            return
        await dispatcher.trigger(namespace, name, why=f"run {type or 'listed'}", no_news=own)

    @kopf.on.event("batch", "v1", "jobs", labels=stage, registry=registry)
    async def job_event(type: Optional[str], body: Any, namespace: Optional[str], name: Optional[str],
                        labels: Any, **_: Any) -> None:
        run = labels.get(LABEL_RUN)
        if not run or not namespace:
            return
        if type == "DELETED" and name:
            cache.drop_job(namespace, name, body.get("metadata", {}).get("uid"))
        if name and not dispatcher.reconciler.job_changed(namespace, name, None if type == "DELETED" else body):
            return
        await dispatcher.trigger(namespace, run, why=f"job {body.get('metadata', {}).get('name')} {type or 'listed'}")

    @kopf.on.event("", "v1", "pods", labels=stage, registry=registry)
    async def pod_event(type: Optional[str], body: Any, namespace: Optional[str], name: Optional[str],
                        labels: Any, **_: Any) -> None:
        run = labels.get(LABEL_RUN)
        if not run or not namespace or not name:
            return
        if type == "DELETED":
            cache.drop_pod(namespace, name, body.get("metadata", {}).get("uid"))
        if not dispatcher.reconciler.pod_changed(namespace, name, None if type == "DELETED" else body):
            return
        await dispatcher.trigger(namespace, run, why=f"pod {name} {type or 'listed'}")

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        stalled = dispatcher.stalled(resync_interval)
        if stalled:  # the liveness endpoint answers 500, and the kubelet restarts the operator
            raise kopf.PermanentError(stalled)
        age = None if dispatcher.last_resync is None else round(time.monotonic() - dispatcher.last_resync, 1)
        return {"reconciles": dispatcher.reconciles, "lastResyncAgeSeconds": age, "leading": dispatcher.leading()}
