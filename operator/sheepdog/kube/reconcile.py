"""One reconcile of one run: read, observe, plan, act, write status once, then emit events.

Everything a reconcile decides comes from what the watch streams delivered (the run, its Jobs
and their pods, kept by sheepdog.kube.cache; the API server itself where the cache cannot
tell) plus the run's own status, so running it again (after a restart, twice for the same
event, from the periodic resync) is harmless:

  1. Read the run from the watch cache (sheepdog.kube.cache: what the watches delivered, plus
     our own last write); a GET only when it has none. Gone or being deleted -> nothing to do
     (the garbage collector removes its Jobs through their ownerReferences; there is no
     finalizer to remove).
  2. Load the spec (sheepdog.api.load: camelCase paths in the problems). A spec that slipped
     past the CRD schema -> the planner's plan_invalid_spec: reason InvalidSpec with the
     problems; no new stage starts until the spec is fixed (a running stage finishes). So does
     a stage Job the pre-flight finds refused (sheepdog.kube.preflight: once per generation).
  3. The run's Jobs from the watch cache (label sheepdog.dev/run=<name>, owned by this run's
     uid: Jobs of a deleted run of the same name that the garbage collector has not removed yet
     are ignored). Terminal Jobs whose outcome the status does not record yet get their pods
     read once, from the cache too (the summary is the succeeded pod's termination message; a
     failure's detail is the last failed pod's), or from a LIST when the pod watch has not yet
     delivered the pods the Job controller counted (cache.pods_behind). A running Job with a
     pod that is not ready is checked against the stuck pods the pod watch keeps (pod_changed;
     no LIST), and a running Job without pods is checked against its FailedCreate Events, also
     from the cache (sheepdog.kube.stuck).
     A running train's rank-0 pod log tail is read at most once per resync interval for its
     progress (sheepdog.kube.train_progress; a failed read keeps the last progress).
  4. plan(...) -> the complete new status, the stages to start, the events.
  5. Create the Jobs (and a multi-node train's rendezvous Service). 409 AlreadyExists is a
     no-op for a Job this run owns: the Job of a stage is created once, ever. Any other
     creation error is the planner's creation_policy: permanent ones (422, 403 by policy, a
     Job of that name the run does not own) fail the run with the API server's message,
     transient ones hold the stage with a reason and are retried with backoff. A Job deleted
     by hand is created again only once its old pods have ended. Then the plan's job changes
     (suspend / resume a running Job: spec.suspend, pendingTimeout) are patched.
  6. Write the status once: a merge patch of the status subresource that makes it exactly the
     planner's status, conditional on the run's resourceVersion as read (a run edited
     meanwhile -> Conflict -> the reconcile is retried on a run it GETs).
  7. Only then emit the planner's Events (a failed status write emits nothing). The status
     written names them (status.pendingEvents), so a process killed before it posted them
     has its successor post them, under the same names: at least once, never twice.

Why Jobs are created before the status write: a Job that exists is observed by every later
reconcile, while a status that names a Job that does not exist would need special handling.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional

from pydantic import ValidationError

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import PendingEvent, RunStatus
from sheepdog.kube import observe as obs
from sheepdog.kube import crash_hooks, data_cleanup, job_cleanup, kueue_workloads, run_ttl, stage_cache, stuck
from sheepdog.kube.train_progress import TrainProgressReader, pod_log_reader
from sheepdog.kube.cache import WatchCache, missing, plain, pods_behind
from sheepdog.kube.client import Conflict, KubeApi, error_status
from sheepdog.kube.events import event_name, run_event
from sheepdog.kube.metrics import Metrics
from sheepdog.guardrails import run_guardrail_problems
from sheepdog.kube import preflight
from sheepdog.kube.ownership import job_conflict, live_pods, owned_by as _owned_by
from sheepdog.kube.pod_events import PodEventsReader
from sheepdog.kube.pod_passthrough import add_to_job
from sheepdog.kube.retry_request import retry_token
from sheepdog.planner import creation_policy
from sheepdog.planner.actions import Plan, stage_name
from sheepdog.planner.creation_policy import CreateError
from sheepdog.planner.planner import plan, plan_invalid_spec, timestamp
from sheepdog.planner.reasons import Reason
from sheepdog.planner.retention_policy import DEFAULT_KEEP_ITERATIONS
from sheepdog.api.load import RunSpecError, parse_run
from sheepdog.stage_config import kube_layout

log = logging.getLogger("sheepdog.reconcile")

OWN_WRITES_KEPT = 4
CREATE_RETRY_DELAYS = (2, 5, 10, 30, 60)  # a transient Job-creation error, retried
OLD_PODS_RECHECK = 5.0  # seconds between looks at the pods of a Job deleted by hand
# kube-apiserver's default --event-ttl: a pending Event older than this is not posted again
EVENT_TTL = 3600.0
EVENT_RETRY = 5.0  # seconds before a reconcile posts again an Event whose POST failed


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Result:
    """What one reconcile did (for logs, metrics and tests)."""

    found: bool = True
    skipped: str = ""  # why nothing was done ("deleting", "gone")
    phase: Optional[str] = None
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    status_written: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)
    done: bool = False
    latencies: list[float] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # Jobs suspended ("name:suspend") or resumed
    recheck_after: Optional[float] = None  # reconcile again after this many seconds
    prebuilt: dict[str, list] = field(default_factory=dict)  # Job name -> objects the pre-flight built
    cache_view: Any = None  # the stage cache's entries this reconcile planned with (stage_cache.py)


@dataclass
class Options:
    image_defaults: Any = None
    guardrails: Any = None  # sheepdog.guardrails.Guardrails (the chart's admin guardrails)
    # Test-only: copy `sheepdog.test/*` pod annotations from the run's
    # `sheepdog.test/pod-annotations` annotation into its Jobs' pod templates (see below).
    test_pod_annotations: bool = False
    instance: str = ""
    # Seconds between two reads of a running train's log (train_progress): the resync interval.
    progress_interval: float = 60.0
    # Iterations whose finished stage Jobs are kept (job_cleanup); None keeps every Job.
    job_history: Optional[int] = DEFAULT_KEEP_ITERATIONS
    # The API server's --event-ttl: an owed Event older than this may have been posted and
    # expired, so it is not posted again (the "never twice" window).
    event_ttl: float = EVENT_TTL
    test_exit_after_status_write: str = ""  # test-only crash point (crash_hooks.py)
    stage_cache: bool = False  # the stage cache (kube/stage_cache.py); the operator turns it on


def _without_events(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "pendingEvents"}


def _seconds_between(start: Optional[str], end: Optional[str]) -> Optional[float]:
    a, b = obs.parse_time(start), obs.parse_time(end)
    if a is None or b is None:
        return None
    return (b - a).total_seconds()


def _stage_records(status: Mapping[str, Any]) -> dict[tuple[int, str], Mapping[str, Any]]:
    out = {}
    for rec in status.get("iterations") or ():
        for stage, srec in (rec.get("stages") or {}).items():
            out[(rec.get("iteration"), stage)] = srec or {}
    return out


class Reconciler:
    """Synchronous: runs in a worker thread; one reconcile per run at a time (handlers.py)."""

    def __init__(
        self,
        kube: KubeApi,
        metrics: Metrics,
        options: Optional[Options] = None,
        clock: Callable[[], str] = utcnow,
        cache: Optional[WatchCache] = None,
    ):
        self.kube = kube
        self.metrics = metrics
        self.options = options or Options()
        self.clock = clock
        # what the watch streams delivered (handlers.py feeds it): the reads of a reconcile
        self.cache = cache if cache is not None else WatchCache()

        # (namespace, name) -> resourceVersions of our last status writes (a few: the watch
        # event of one write can arrive after the next write)
        self._own_writes: dict[tuple[str, str], deque[str]] = {}
        # (namespace, Job name) -> observe.job_signature of the Job as last reconciled on
        self._job_signatures: dict[tuple[str, str], tuple] = {}
        # (namespace, pod name) -> a stage pod that is stuck, as its last watch event showed it:
        # the pod watch keeps exactly the stuck pods, so no reconcile LISTs pods to find them
        self._stuck_pods: dict[tuple[str, str], dict[str, Any]] = {}
        # (namespace, run) -> names of its status's pending Events this process has posted
        self._posted: dict[tuple[str, str], set[str]] = {}
        # (namespace, run) -> transient Job-creation errors in a row (the backoff)
        self._create_failures: dict[tuple[str, str], int] = {}
        # a running train's progress, from rank 0's log (train_progress.py)
        self.train_progress = TrainProgressReader(pod_log_reader(kube), self.options.progress_interval)
        # the Events of a pod that stays ContainerCreating (why it cannot mount its volumes)
        self.pod_events = PodEventsReader(kube.list_pod_events, 0.9 * self.options.progress_interval)
        self.stage_cache = stage_cache.for_reconciler(self.cache) if self.options.stage_cache else None

    def _written(self, run: Mapping[str, Any], response: Any) -> None:
        meta = run["metadata"]
        rv = ((response or {}).get("metadata") or {}).get("resourceVersion") if isinstance(response, dict) else None
        if rv:
            self._own_writes.setdefault((meta["namespace"], meta["name"]), deque(maxlen=OWN_WRITES_KEPT)).append(rv)

    def _read_run(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        """The run as the watch (or our own last write) left it; a GET when the cache has none
        (not delivered yet, or invalidated by a conflict)."""
        run = self.cache.run(namespace, name)
        if run is None:
            run = self.kube.get_run(namespace, name)
            if run is not None:
                self.cache.put_run(run)
        return run

    def _write_status(self, run: Mapping[str, Any], status: dict[str, Any]) -> None:
        """The conditional status write; its answer is the cache's run from now on. A 409 means
        the cached run is stale: forget it, so that the retry GETs it."""
        try:
            response = self.kube.replace_run_status(run, status)
        except Conflict:
            self.cache.invalidate_run(run["metadata"]["namespace"], run["metadata"]["name"])
            raise
        self._written(run, response)
        if isinstance(response, dict) and response.get("metadata"):
            self.cache.put_run(response)

    def _pods(self, namespace: str, jobs: list[dict[str, Any]], need: list[str]) -> list[dict[str, Any]]:
        """The pods of the Jobs in `need` from the cache; a LIST for those whose finished pods
        the pod watch has not delivered yet."""
        cached = {n: self.cache.pods(namespace, [n]) for n in need}
        by_name = {j["metadata"]["name"]: j for j in jobs}
        behind = [n for n in need if pods_behind(by_name[n], cached[n])]
        fresh = self.kube.list_pods(namespace, behind) if behind else []
        return [p for n in need if n not in behind for p in cached[n]] + fresh

    def is_own_write(self, namespace: str, name: str, resource_version: Optional[str]) -> bool:
        """True for the watch event of the run version our own status write produced: it holds
        nothing this operator does not know (the write was conditional on the version we read),
        so it needs no reconcile. Saves about a third of all reconciles."""
        return bool(resource_version) and resource_version in self._own_writes.get((namespace, name), ())

    def job_changed(self, namespace: str, job: str, body: Optional[Mapping[str, Any]]) -> bool:
        """Whether a Job event (body None: deleted) can change its run's plan: only when it
        changes what the planner reads of the Job (observe.job_signature). A Job this process
        just created is known as it was created, so its ADDED event is no news either. The
        first event of every Job after a start counts: nothing is missed across restarts."""
        key = (namespace, job)
        if body is None:
            self._job_signatures.pop(key, None)
            return True
        sig = obs.job_signature(body)
        if self._job_signatures.get(key) == sig:
            return False
        self._job_signatures[key] = sig
        return True

    def pod_changed(self, namespace: str, pod: str, body: Optional[Mapping[str, Any]]) -> bool:
        """Whether a stage pod's event can change whether (or why) its run is stuck: only a
        pod that becomes stuck, changes why, or stops being stuck (runs, ends, is deleted).
        Only stuck pods and pods being created (stuck only by their Events or the time: the
        reconcile tells) are remembered, so the ordinary life of a pod is no news."""
        self.train_progress.pod_event(namespace, pod, body)
        key = (namespace, pod)
        sig = None if body is None else stuck.pod_signature(body)
        before = self._stuck_pods.pop(key, None)
        if sig is not None or body is not None and stuck.creating(body):
            self._stuck_pods[key] = plain(body)
        else:
            self.pod_events.forget(namespace, pod)
        # a pod created long enough ago to have been found stuck by its Events, created at last
        left = before is not None and key not in self._stuck_pods and (stuck.creating_for(
            before, self.clock()) or 0) >= stuck.MOUNT_GRACE
        return left or sig != (None if before is None else stuck.pod_signature(before))

    def prune_pods(self, namespace: Optional[str], listing: list, resource_version: Optional[str]) -> int:
        """The resync's LIST of stage pods: forget the stuck pods it lacks (deleted while the
        pod watch was away: they would hold their run stuck for ever)."""
        gone = missing(dict(self._stuck_pods), namespace, listing, resource_version)
        for key in gone:
            self._stuck_pods.pop(key, None)
            self.pod_events.forget(*key)
        return len(gone)

    def stuck_pods(self, namespace: str) -> list[dict[str, Any]]:
        return [p for (ns, _), p in dict(self._stuck_pods).items() if ns == namespace]

    def forget(self, namespace: str, name: str) -> None:
        self._own_writes.pop((namespace, name), None)
        self._create_failures.pop((namespace, name), None)
        self._posted.pop((namespace, name), None)

    # -----------------------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Result:
        t0 = time.monotonic()
        try:
            return self._reconcile(namespace, name)
        finally:
            self.metrics.reconciled(namespace, time.monotonic() - t0)

    def _reconcile(self, namespace: str, name: str) -> Result:
        run = self._read_run(namespace, name)
        if run is None:
            self.metrics.forget_run(namespace, name)
            return Result(found=False, skipped="gone")
        meta = run["metadata"]
        if meta.get("deletionTimestamp"):  # only spec.storage.deleteDataOnDelete has anything to do
            self.metrics.forget_run(namespace, name)
            return Result(skipped="deleting", recheck_after=data_cleanup.deleting(
                self.kube, self.cache, run, self.options.image_defaults, self.clock(), self.options.instance))
        old_raw: dict[str, Any] = run.get("status") or {}
        generation = meta.get("generation")
        problems = spec_problems(run)
        if problems is not None:
            return self._invalid(run, old_raw, problems, generation)
        spec = RunSpec.model_validate(run.get("spec") or {})
        run = data_cleanup.ensure_finalizer(self.kube, self.cache, run, spec) or run
        # a run the admin's guardrails forbid (an image, ServiceAccount, Secret or volume), or a
        # stage Job the API server refuses in a dry run or whose pods Pod Security would refuse
        # (the pre-flight): held before any Job exists
        problems = run_guardrail_problems(run, self.options.guardrails)
        pre = preflight.check(self.kube, run, spec, self.options.image_defaults) if preflight.due(
            old_raw, generation) else None
        problems += pre.problems if pre is not None else []
        if problems:
            return self._invalid(run, old_raw, problems, generation)
        try:
            old_status = RunStatus.model_validate(old_raw)
        except ValidationError as e:
            # A status we cannot read (hand-edited?): start from scratch. Every Job that exists
            # is still observed, so nothing is created twice.
            log.warning("%s/%s: unreadable status, rebuilding it: %s", namespace, name, e)
            old_status = RunStatus()
            old_raw = {}

        uid = meta["uid"]
        jobs = [j for j in self.cache.jobs(namespace, name) if _owned_by(j, uid)]
        need = [j["metadata"]["name"] for j in jobs if obs.needs_pods(j, old_raw)]
        pods = (self._pods(namespace, jobs, need) if need else []) + self.stuck_pods(namespace)
        events = {j["metadata"]["name"]: self.cache.job_events(namespace, j["metadata"]["name"])
                  for j in jobs if stuck.needs_events(j)}
        now = self.clock()
        events = self.pod_events.merge(namespace, pods, events, now)  # pods that cannot mount volumes
        observed = self.train_progress.observe(namespace, name, obs.observe(jobs, old_raw, pods, events, now), now)

        layout = kube_layout(name, spec)
        view = self.stage_cache.view(run, spec, layout) if self.stage_cache and spec.stage_cache else None
        p = plan(name, spec, old_status.model_copy(deep=True), observed, layout, now, generation=generation,
                 retry=retry_token(run), cache=view)
        result = Result(done=p.done, prebuilt=pre.built if pre is not None else {}, cache_view=view)
        known = {(o.iteration, o.stage) for o in observed if o.stuck_reason}
        if any(stuck.recheck_events(j, obs.job_identity(j) in known) for j in jobs):
            # no pod and no FailedCreate yet: the Job controller's Event may still follow, and
            # no Job or pod event would tell (a Job's status does not change on FailedCreate)
            result.recheck_after = stuck.EVENTS_RECHECK

        # 5. act
        p = self._act(run, spec, p, observed, old_status, layout, now, generation, result)
        if p.actions and {a.name for a in p.actions} <= {*result.created, *result.existing}:
            p = self._as_started(namespace, name, uid, spec, p, old_status, old_raw, pods, events, layout, now,
                                 generation, retry_token(run), result.cache_view)
        result.recheck_after = stage_cache.recheck_after(p.status, result.recheck_after)

        # 6. write status once (a passed pre-flight recorded in it); 7. then its events
        if pre is not None and pre.passed:
            p.status.preflight_generation = generation
        new_raw = self._commit(run, old_raw, p.status, p.events, now, result)
        result.phase = new_raw.get("phase")
        if result.status_written:
            self._transitions(namespace, old_raw, new_raw)
        self.metrics.observe_run(namespace, name, new_raw)
        job_cleanup.clean_up(self.kube, self.cache, namespace, new_raw, jobs, self.options.job_history)
        ttl_left = run_ttl.expire(self.kube, run, spec, new_raw, now)
        if ttl_left is not None and (result.recheck_after is None or ttl_left < result.recheck_after):
            result.recheck_after = max(1.0, ttl_left)
        return result

    def _commit(self, run: Mapping[str, Any], old_raw: Mapping[str, Any], status: RunStatus, events: tuple,
                now: str, result: Result) -> dict[str, Any]:
        """Steps 6 and 7: the status write, when the status changed, then its Events, named in
        the status it wrote (status.pendingEvents). Events that an earlier process wrote but may
        not have posted (killed in between) are posted first: under their own names, so one
        that was posted is refused (409), not repeated. Returns the status as it now stands.
        A status whose only change would be new Events is no change: a reconcile that changes
        nothing emitted its Events the first time."""
        meta = run["metadata"]
        key = (meta["namespace"], meta["name"])
        self._post_owed(run, old_raw, now, result)
        new_raw = status.to_wire()
        if _without_events(new_raw) == _without_events(old_raw):
            return dict(old_raw)
        if events:
            at = timestamp(now)
            status.pending_events = [
                PendingEvent(name=event_name(meta["name"], at), type=ev.type, reason=ev.reason, message=ev.message,
                             at=at)
                for ev in events
            ]
            new_raw = status.to_wire()
        self.metrics.with_status_write(*key, old_raw, new_raw, lambda: self._write_status(run, new_raw))
        result.status_written = True
        crash_hooks.after_status_write(self.options.test_exit_after_status_write, events)
        if events:
            self._posted[key] = set()
            for ev in status.pending_events or ():
                self._emit(run, ev, result)
        return new_raw

    def _post_owed(self, run: Mapping[str, Any], old_raw: Mapping[str, Any], now: str, result: Result) -> None:
        """The status's pending Events this process has not posted (only after a start: every
        later write posts its own), unless older than the API server keeps Events: one that old
        may have been posted and expired, and posting it again would repeat it."""
        meta = run["metadata"]
        posted = self._posted.setdefault((meta["namespace"], meta["name"]), set())
        clock = obs.parse_time(timestamp(now))
        for raw in old_raw.get("pendingEvents") or ():
            try:
                ev = PendingEvent.model_validate(raw)
            except ValidationError:
                continue
            if ev.name in posted:
                continue
            at = obs.parse_time(ev.at)
            if clock is None or at is None or (clock - at).total_seconds() > self.options.event_ttl:
                posted.add(ev.name)
                continue
            self._emit(run, ev, result)

    # -----------------------------------------------------------------------------------------

    def _act(self, run: Mapping[str, Any], spec: RunSpec, p: Plan, observed: list, old_status: RunStatus,
             layout: Any, now: str, generation: Optional[int], result: Result) -> Plan:
        """Carry out the plan's starts and job changes; returns the plan as it stands after
        them (a creation error holds a start, or fails the run: creation_policy)."""
        meta = run["metadata"]
        ns, name = meta["namespace"], meta["name"]
        for action in list(p.actions):
            held = self._old_pods(ns, old_status, action)
            if held is not None:
                p = creation_policy.hold(p, action.iteration, action.stage, Reason.WAITING_FOR_OLD_PODS, held,
                                         now, old_status)
                result.recheck_after = OLD_PODS_RECHECK
                continue
            if self.stage_cache and not self.stage_cache.claim(run, spec, layout, action, p.status):
                # another run claimed the same stage first: planned again, this run waits for it
                result.cache_view, result.recheck_after = self.stage_cache.view(run, spec, layout), 1.0
                p = plan(name, spec, old_status.model_copy(deep=True), observed, layout, now, generation=generation,
                         retry=retry_token(run), cache=result.cache_view)
                continue
            err = self._start(run, spec, action, observed, result)
            if err is None:
                self._create_failures.pop((ns, name), None)
                continue
            message = creation_policy.describe(err, action.name)
            if creation_policy.permanent(err):
                log.warning("%s/%s: %s (permanent: the run fails)", ns, name, message)
                failed = creation_policy.rejected(action.iteration, action.stage, err, action.name)
                p = plan(name, spec, old_status.model_copy(deep=True), [*observed, failed], layout, now,
                         generation=generation, retry=retry_token(run), cache=result.cache_view)
                result.done = p.done
                return p
            n = self._create_failures[(ns, name)] = self._create_failures.get((ns, name), 0) + 1
            delay = CREATE_RETRY_DELAYS[min(n, len(CREATE_RETRY_DELAYS)) - 1]
            log.warning("%s/%s: %s (retrying in %ss)", ns, name, message, delay)
            p = creation_policy.hold(p, action.iteration, action.stage, creation_policy.reason_of(err),
                                     f"{message}; retrying in {delay}s", now, old_status)
            result.recheck_after = delay
        for change in p.job_changes:
            job = stage_name(name, change.iteration, change.stage, change.retry)
            kueue_workloads.set_suspended(self.kube, ns, job, change.suspend, self.cache.jobs(ns, name))
            result.changed.append(f"{job}:{'suspend' if change.suspend else 'resume'}")
            log.info("%s/%s: %s Job %s", ns, name, "suspended" if change.suspend else "resumed", job)
        return p

    def _as_started(self, namespace: str, name: str, uid: str, spec: RunSpec, p: Plan, old_status: RunStatus,
                    old_raw: Mapping[str, Any], pods: list, events: Mapping[str, Any], layout: Any,
                    now: str, generation: Optional[int], retry: Optional[str], cache: Any = None) -> Plan:
        """The plan again, with the Jobs just created observed: their stages are written as
        running now, so the Jobs' first status updates change nothing and a transition costs one
        status write, not two (bench/load.py, docs/benchmarks.md). The first plan's events stay
        (they say what was decided), followed by what the new Jobs add (a Job that Kueue holds is
        already stuck: its Warning belongs to this write, or the next reconcile would find the
        reason recorded and never say it). Anything else to do keeps the first plan."""
        jobs = [j for j in self.cache.jobs(namespace, name) if _owned_by(j, uid)]
        observed = obs.observe(jobs, old_raw, pods, events, now)
        again = plan(name, spec, old_status.model_copy(deep=True), observed, layout, now, generation=generation,
                     retry=retry, cache=cache)
        if again.actions or again.done or again.job_changes:
            return p
        return replace(again, status=stage_cache.carry_keys(p.status, again.status),
                       events=(*p.events, *(e for e in again.events if e not in p.events)))

    def _old_pods(self, namespace: str, old_status: RunStatus, action: Any) -> Optional[str]:
        """Why a Job deleted by hand cannot be created again yet (its pods still run), or None.
        Only asked when the status says the stage was running (or waiting for exactly this).
        A LIST, not the cache: a pod deletion the watch missed must not hold the stage for ever."""
        record = old_status.record(action.iteration)
        was = record.stages.get(action.stage) if record is not None else None
        if not ((was is not None and was.phase == "Running") or old_status.reason == Reason.WAITING_FOR_OLD_PODS):
            return None
        live = live_pods(self.kube.list_pods(namespace, [action.name]))
        if not live:
            return None
        return (f"iteration {action.iteration} {action.stage}: Job {action.name} is gone but its pods "
                f"{', '.join(live[:5])} have not ended; it is created again once they have")

    def _start(self, run: Mapping[str, Any], spec: RunSpec, action: Any, observed: list,
               result: Result) -> Optional[CreateError]:
        """Create the stage's objects; the error that stopped it, if any."""
        meta = run["metadata"]
        ns, name = meta["namespace"], meta["name"]
        objects = result.prebuilt.pop(action.name, None)  # built (and dry-run) by this reconcile's pre-flight
        for obj in objects or preflight.stage_objects(run, spec, action, self.options.image_defaults):
            if obj.get("kind") == "Job" and self.options.test_pod_annotations:
                add_to_job(obj, run, action.iteration, action.stage)
            oname = obj["metadata"]["name"]
            if obj.get("kind") == "Job":
                # known as created before the POST: its ADDED event can beat the response
                self._job_signatures[(ns, oname)] = obs.job_signature({})
            try:
                created = self.kube.create(ns, obj)
            except Exception as e:  # noqa: BLE001 - every answer is classified (creation_policy)
                self._job_signatures.pop((ns, oname), None)
                return CreateError(*error_status(e))
            except BaseException:
                self._job_signatures.pop((ns, oname), None)
                raise
            if obj.get("kind") != "Job":
                continue
            if not created:
                # a GET, not the cache: whose Job holds the name decides (job_conflict)
                existing = self.kube.get_job(ns, oname)
                if existing is None:  # gone again since: the next attempt creates it
                    return CreateError(409, f"Job {oname} was being replaced; trying again")
                if not _owned_by(existing, meta["uid"]):
                    self._job_signatures.pop((ns, oname), None)
                    return job_conflict(existing, name)
                result.existing.append(oname)
                continue
            if isinstance(created, dict):
                self.cache.put_job(created)  # seen by the next reconcile before its ADDED event
            result.created.append(oname)
            latency = self._latency(observed)
            if latency is not None:
                result.latencies.append(latency)
            self.metrics.job_created(ns, action.stage, latency)
            log.info(
                "%s/%s: created Job %s%s", ns, name, oname,
                f" ({latency:.2f}s after the previous stage completed)" if latency is not None else "",
            )
        return None

    def _latency(self, observed: list) -> Optional[float]:
        """Seconds from the latest completion among the run's Jobs to now (the new Job's
        creation). Kubernetes timestamps have 1 s resolution, so this is within about 1 s."""
        finished = [o.finished_at for o in observed if o.state == "succeeded" and o.finished_at]
        if not finished:
            return None
        last = max(finished, key=lambda t: obs.parse_time(t) or datetime.min.replace(tzinfo=timezone.utc))
        end = obs.parse_time(last)
        if end is None:
            return None
        return (datetime.now(timezone.utc) - end).total_seconds()

    def _transitions(self, namespace: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """Counters and histograms of what changed between the written and the previous status:
        counted once per transition, even across operator restarts (status is the memory)."""
        before = _stage_records(old)
        for (iteration, stage), rec in _stage_records(new).items():
            prev = before.get((iteration, stage), {})
            # attempts 1 -> 3 means two retries happened (whatever their outcome)
            retries = max(0, int(rec.get("attempts") or 0) - 1) - max(0, int(prev.get("attempts") or 0) - 1)
            self.metrics.stage_retried(namespace, stage, retries)
            phase, prev_phase = rec.get("phase"), prev.get("phase")
            if phase in ("Succeeded", "Failed") and prev_phase != phase and not rec.get("reusedFrom"):  # ran here
                self.metrics.stage_finished(
                    namespace, stage, phase.lower(), _seconds_between(rec.get("startedAt"), rec.get("finishedAt"))
                )

    def _emit(self, run: Mapping[str, Any], ev: PendingEvent, result: Result) -> None:
        """Post one Event. It counts as posted once the API server answered 201, or 409 (one of
        its name exists: posted before); a failed POST stays owed (status.pendingEvents) and the
        next reconcile, asked for in EVENT_RETRY seconds, posts it again."""
        meta = run["metadata"]
        ns = meta["namespace"]
        try:
            created = self.kube.create_event(
                ns, run_event(run, ev.type, ev.reason, ev.message, self.options.instance, name=ev.name, at=ev.at))
        except Exception as e:  # noqa: BLE001 - retried; the status has it all meanwhile
            log.warning("%s/%s: could not emit event %s (retried): %s", ns, meta["name"], ev.reason, e)
            result.recheck_after = min(result.recheck_after or EVENT_RETRY, EVENT_RETRY)
            return
        self._posted.setdefault((ns, meta["name"]), set()).add(ev.name)
        if created is False:
            return
        result.events.append((ev.type, ev.reason))
        self.metrics.event_emitted(ns, ev.type, ev.reason)

    def _invalid(self, run: Mapping[str, Any], old_raw: Mapping[str, Any], problems: list[str], generation: Optional[int]) -> Result:
        """A spec the API server accepted but the models reject (an old CRD, a rule the schema
        cannot express). The planner decides what that means (plan_invalid_spec)."""
        meta = run["metadata"]
        try:
            old = RunStatus.model_validate(old_raw)
        except ValidationError:
            old = RunStatus()
        now = self.clock()
        p = plan_invalid_spec(old, problems, now, generation=generation)
        result = Result(done=p.done)
        new_raw = self._commit(run, old_raw, p.status, p.events, now, result)
        result.phase = new_raw.get("phase")
        self.metrics.observe_run(meta["namespace"], meta["name"], new_raw)
        return result


def spec_problems(run: Mapping[str, Any]) -> Optional[list[str]]:
    """None when the run's spec loads, else one line per problem (camelCase paths)."""
    meta = run.get("metadata") or {}
    manifest = {
        "apiVersion": run.get("apiVersion", "sheepdog.dev/v1alpha1"),
        "kind": run.get("kind", "SelfAlignmentRun"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": run.get("spec") or {},
    }
    try:
        parse_run(manifest, source=f"{meta.get('namespace')}/{meta.get('name')}")
    except RunSpecError as e:
        return list(e.problems) or [str(e)]
    except ValidationError as e:  # not expected: parse_run rewrites these
        return [f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
    return None
