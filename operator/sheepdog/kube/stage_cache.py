"""The stage cache on a cluster (docs/stage-cache.md): the index is the runs' own status.

The operator does not mount the volume, and it already watches every run of the namespaces it
serves (sheepdog.kube.cache). A run's status records each stage's content key (cacheKey) with
its phase, so the runs of a namespace that use the same storage claim *are* the index:

- a stage record Succeeded with a key, not itself reused, whose output stays where it is
  (stage_cache_policy.publishable) -> a finished entry: its summary, its run's directory;
- a stage record Pending or Running with a key, neither reused nor waiting -> a stage being
  produced: a run that needs the same key waits for it.

No new object kind, no new permission, no request: a lookup reads the watch cache. What this
process decided but has not written yet is a *claim* held in memory (one operator leads at a
time: leader election), so two runs reconciled at the same moment do not both start the same
stage: the first claims, the second sees the claim and waits. A claim ends when the claimant's
status records the stage (the status then says the same) or after CLAIM_SECONDS.

After a restart the claims are gone and the statuses speak: every decision is re-derived from
them, so a reuse is made again the same way (idempotent). The one window: an operator that
created a stage Job and died before the status write, while another run decided the same
stage, makes both produce it (both outputs are right; one was not needed).

A deleted run leaves the index with its status: a stage is reused only from runs that exist,
and is waited for only from runs that exist and will offer it: a run being deleted offers
nothing, its claims end at once (as those of a run gone from the watch cache or replaced by a
new run of its name), and a stage whose output will not be offered (publishable: a run with
deleteDataOnDelete, whose data goes with it; a train whose model keepModels may delete) is
neither an entry nor a claim while it is produced, so no run waits for it in vain.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

from pydantic import ValidationError

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.planner.actions import StartStage
from sheepdog.planner.stage_cache_policy import (  # noqa: F401  (carry_keys: for reconcile.py)
    CacheEntry, CacheInputs, StageCache, carry_keys, publishable, published_summary,
)
from sheepdog.stage_config import Layout, kube_layout

CLAIM_SECONDS = 120.0  # a claim outlives its reconcile's status write by far
WAIT_RECHECK = 5.0  # seconds between looks of a run that waits for another's stage

Obj = dict[str, Any]
log = logging.getLogger("sheepdog.stage_cache")


def cluster_inputs(spec: RunSpec) -> CacheInputs:
    """On a cluster the operator cannot read the volume: the base model and the seed tasks are
    named by their paths there (or hub id). A file replaced in place under the same path is
    not noticed; a new file under a new path is a new input."""
    return CacheInputs(base_model=f"ref:{spec.model.base}",
                       seed=f"path:{spec.seed.path}" if spec.seed.path else "builtin")


def producer_ref(namespace: str, run: str, iteration: int, stage: str) -> str:
    return f"{namespace}/{run}/iteration-{iteration}/{stage}"


def _parsed(run: Mapping[str, Any]) -> Optional[tuple[RunSpec, RunStatus]]:
    try:
        return RunSpec.model_validate(run.get("spec") or {}), RunStatus.model_validate(run.get("status") or {})
    except ValidationError:
        return None


def entries_of_run(run: Mapping[str, Any]) -> tuple[Optional[str], list[CacheEntry]]:
    """(its storage claim, the index entries its status holds); (None, []) for a run that
    offers nothing (being deleted, spec.stageCache false, unreadable)."""
    meta = run.get("metadata") or {}
    parsed = _parsed(run)
    if parsed is None or meta.get("deletionTimestamp") or not parsed[0].stage_cache:
        return None, []
    spec, status = parsed
    run_dir = kube_layout(meta["name"], spec).run_dir
    out = []
    for record in status.iterations:
        for stage, rec in record.stages.items():
            if rec.cache_key is None or rec.reused_from is not None:
                continue
            if rec.phase == "Succeeded" and publishable(spec, stage):
                state, summary = "succeeded", published_summary(record, stage)
            elif rec.phase in ("Pending", "Running") and rec.waiting_for is None and publishable(spec, stage):
                # an output that will not be offered (deleteDataOnDelete, a model keepModels may
                # delete) is not worth waiting for: the other run produces its own at once
                state, summary = "running", None
            else:
                continue
            out.append(CacheEntry(
                key=rec.cache_key, state=state,
                producer=producer_ref(meta["namespace"], meta["name"], record.iteration, stage),
                owner=meta.get("uid", ""), run_dir=run_dir, iteration=record.iteration, stage=stage,
                summary=summary))
    return spec.storage.claim_name, out


def merge_entries(per_run: Iterable[tuple[str, list[CacheEntry]]]) -> dict[str, CacheEntry]:
    """One entry per key from the runs' (creation time + name sorts them), finished before
    being produced, then the oldest run's."""
    found: dict[str, CacheEntry] = {}
    for _, entries in sorted(per_run, key=lambda item: item[0]):
        for entry in entries:
            have = found.get(entry.key)
            if have is None or (have.state == "running" and entry.state == "succeeded"):
                found[entry.key] = entry
    return found


def entries_of_runs(runs: Iterable[Mapping[str, Any]], claim_name: str) -> dict[str, CacheEntry]:
    """The index entries the runs' statuses hold, for runs on the storage claim `claim_name`."""
    per_run = []
    for run in runs:
        claim, entries = entries_of_run(run)
        if claim == claim_name:
            per_run.append((_order(run), entries))
    return merge_entries(per_run)


def _order(run: Mapping[str, Any]) -> str:
    meta = run.get("metadata") or {}
    return f"{meta.get('creationTimestamp') or ''}/{meta.get('name') or ''}"


def _records_key(run: Optional[Mapping[str, Any]], iteration: int, stage: str, key: str) -> bool:
    """Whether the run's status (as cached) records `stage` of `iteration` with `key`."""
    parsed = _parsed(run) if run is not None else None
    if parsed is None:
        return False
    record = parsed[1].record(iteration)
    rec = record.stages.get(stage) if record is not None else None
    return rec is not None and rec.cache_key == key


def _claimant_gone(run: Optional[Mapping[str, Any]], uid: str, was_cached: bool) -> bool:
    """Whether a claim's run will never produce the stage: deleted (being deleted, gone from
    the watch cache that held it, or replaced by a new run of its name). A run the cache did
    not hold yet when it claimed (its first reconcile can come before the watch) keeps its
    claim until CLAIM_SECONDS."""
    if run is None:
        return was_cached
    meta = run.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) or (bool(uid) and meta.get("uid", uid) != uid)


class ClusterStageCache:
    """Thread-safe (reconciles of different runs run at once)."""

    def __init__(self, runs_in: Callable[[str], list[Obj]], run_of: Callable[[str, str], Optional[Obj]],
                 clock: Callable[[], float] = time.monotonic):
        self._runs_in, self._run_of, self._clock = runs_in, run_of, clock
        self._lock = threading.Lock()
        # (namespace, claim name, key) -> (entry, the claiming run's name, when, whether the
        # watch cache held the run then)
        self._claims: dict[tuple[str, str, str], tuple[CacheEntry, str, float, bool]] = {}
        # (namespace, name) -> (uid, resourceVersion, its claim, its entries): a run's status is
        # parsed once per version, not once per reconcile of every other run
        self._parsed: dict[tuple[str, str], tuple[Any, Any, Optional[str], list[CacheEntry]]] = {}

    def _entries(self, namespace: str, claim_name: str) -> dict[str, CacheEntry]:
        per_run, seen = [], set()
        for run in self._runs_in(namespace):
            meta = run.get("metadata") or {}
            key = (namespace, meta.get("name"))
            seen.add(key)
            memo = self._parsed.get(key)
            if memo is None or memo[:2] != (meta.get("uid"), meta.get("resourceVersion")):
                memo = self._parsed[key] = (meta.get("uid"), meta.get("resourceVersion"), *entries_of_run(run))
            if memo[2] == claim_name:
                per_run.append((_order(run), memo[3]))
        for gone in [k for k in self._parsed if k[0] == namespace and k not in seen]:
            del self._parsed[gone]
        return merge_entries(per_run)

    def _live_claims(self, namespace: str, claim_name: str) -> dict[str, CacheEntry]:
        now, out = self._clock(), {}
        for (ns, claim, key), (entry, name, at, was_cached) in list(self._claims.items()):
            if ns != namespace or claim != claim_name:
                continue
            run = self._run_of(ns, name)
            if now - at > CLAIM_SECONDS or _records_key(run, entry.iteration, entry.stage, key) \
                    or _claimant_gone(run, entry.owner, was_cached):
                del self._claims[(ns, claim, key)]  # the status says it from now on, or nobody will
                continue
            out[key] = entry
        return out

    def view(self, run: Mapping[str, Any], spec: RunSpec, layout: Layout) -> StageCache:
        meta = run["metadata"]
        claim_name = spec.storage.claim_name
        with self._lock:
            entries = {**self._live_claims(meta["namespace"], claim_name),
                       **self._entries(meta["namespace"], claim_name)}
        log.debug("%s/%s: stage cache entries %s", meta["namespace"], meta["name"],
                  {k[:12]: (e.state, e.producer) for k, e in entries.items()})
        return StageCache(owner=meta.get("uid", ""), inputs=cluster_inputs(spec), entries=entries,
                          run_dir=layout.run_dir)

    def claim(self, run: Mapping[str, Any], spec: RunSpec, layout: Layout, action: StartStage,
              status: RunStatus) -> bool:
        """Before a keyed stage's Job is created: True when this run may produce it; False when
        another run holds it (plan again: that plan waits for it)."""
        record = status.record(action.iteration)
        rec = record.stages.get(action.stage) if record is not None else None
        if rec is None or rec.cache_key is None or not publishable(spec, action.stage):
            return True  # an output never offered to others is nobody's to wait for: no claim
        meta = run["metadata"]
        ns, claim_name, uid = meta["namespace"], spec.storage.claim_name, meta.get("uid", "")
        with self._lock:
            held = {**self._live_claims(ns, claim_name), **self._entries(ns, claim_name)}
            other = held.get(rec.cache_key)
            if other is not None and other.owner != uid and other.run_dir.rstrip("/") != layout.run_dir.rstrip("/"):
                return False
            self._claims[(ns, claim_name, rec.cache_key)] = (CacheEntry(
                key=rec.cache_key, state="running", producer=producer_ref(ns, meta["name"], action.iteration,
                                                                          action.stage),
                owner=uid, run_dir=layout.run_dir, iteration=action.iteration, stage=action.stage), meta["name"],
                self._clock(), self._run_of(ns, meta["name"]) is not None)
        return True


def recheck_after(status: RunStatus, current: Optional[float]) -> Optional[float]:
    """A run that waits for another's stage looks again every WAIT_RECHECK seconds (the other
    run's status changes wake no reconcile of this one)."""
    if status.reason != "WaitingForStage":
        return current
    return WAIT_RECHECK if current is None else min(current, WAIT_RECHECK)


def for_reconciler(cache: Any) -> ClusterStageCache:
    """The index over a WatchCache (sheepdog.kube.cache)."""
    return ClusterStageCache(cache.runs_in, cache.run)
