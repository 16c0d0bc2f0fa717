"""What the operator's watch streams delivered: runs, stage Jobs and stage pods, in memory.

A reconcile reads the run, its Jobs, their pods and the Job controller's FailedCreate Events
from here instead of a GET and LISTs of its own (issue 14, point 8). Fed by Kopf (handlers.py):

  - every listed, added or modified object through `@kopf.index` handlers. Kopf runs no
    handler of any resource until the initial listing of every indexed resource has passed its
    indexers, so the first reconcile after a start already sees every Job and pod: a run is
    never planned on a half-filled cache (which would take its running Jobs for deleted ones);
  - deletions through the `@kopf.on.event` handlers (an index handler is not called for one);
  - the operator's own writes: the status PATCH's answer and a created Job, so that the next
    reconcile does not read a version older than what it wrote (the watch event follows).

Why not Kopf's own indexes as the store: reconciles run in worker threads while Kopf changes
its indexes on the event loop, and those indexes take nothing but watch events, not our own
writes. So this store is ours (a lock, plain dicts), and the index handlers only feed it.

Newer wins: an object replaces the cached one unless both resourceVersions are integers and
the cached one is higher (etcd revisions are; a delayed watch event must not undo our own
write's answer). Objects are stored as plain dicts and never changed in place: readers get
the stored dicts and must not modify them. Pods are kept as metadata and status (what the
reads use; their spec is most of their size) plus spec.nodeName (provenance), Jobs without their pod template but for the
containers' resources (slim_job), managedFields dropped from everything.

Staleness, and what covers it:
  - the watch is behind our own write: the write's answer is stored (above); a Job whose
    ADDED has not arrived and whose POST answer was lost is POSTed again, answered 409 and
    found by a GET (deterministic names: never a second Job);
  - a status write answered 409 (the run changed meanwhile): `invalidate_run`, and the retry
    GETs the run;
  - Kopf re-lists after a watch expired (410) but says nothing of the objects deleted during
    the gap: the periodic resync LISTs runs and stage Jobs and `relist` drops every cached one
    the listing no longer has unless it is newer than the listing;
  - a finished Job whose pods have not all arrived (the Job and pod watches are separate
    streams): `pods_behind`, and the reconcile LISTs that Job's pods;
  - a FailedCreate Event that arrives before its Job: the reconcile's recheck of a Job without
    pods (stuck.recheck_events) reads it a few seconds later.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Optional

from sheepdog.kube.jobs import JOB_NAME_LABEL, LABEL_RUN

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

TOMBSTONES_KEPT = 4096  # uids of deleted objects remembered (a late answer must not revive one)


def _rv(obj: Mapping[str, Any]) -> Optional[int]:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def newer_or_same(new: Mapping[str, Any], old: Optional[Mapping[str, Any]]) -> bool:
    """Whether `new` may replace `old` (see the module docstring: newer wins)."""
    if old is None:
        return True
    a, b = _rv(new), _rv(old)
    return a is None or b is None or a >= b


def plain(value: Any) -> Any:
    """A watch event's body (Kopf's mapping views) as plain dicts and lists, to keep."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def slim(obj: Mapping[str, Any], keep_spec: bool = True) -> Obj:
    """A plain deep copy (of a Kopf body too) without metadata.managedFields, and without
    spec unless kept: what the cache keeps, never shared with the caller."""
    out = {k: plain(v) for k, v in obj.items() if (keep_spec or k != "spec") and k != "metadata"}
    out["metadata"] = {k: plain(v) for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return out


def slim_job(job: Mapping[str, Any]) -> Obj:
    """A Job as the cache keeps it: its pod template reduced to the containers' names and
    resources (gpu_cost's fallback for a Job without the GPUs annotation). The template's
    command holds the whole stage config, most of a stage Job's size, and nothing reads it."""
    out = slim(job)
    spec = out.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        pod = spec["template"].get("spec") or {}
        spec["template"] = {"spec": {"containers": [
            {"name": c.get("name"), "resources": c.get("resources") or {}}
            for c in pod.get("containers") or () if isinstance(c, dict)]}}
    return out


def _job_of(pod: Mapping[str, Any]) -> Optional[str]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(JOB_NAME_LABEL) or labels.get("job-name")


def _job_of_event(event: Mapping[str, Any]) -> Optional[str]:
    return (event.get("involvedObject") or {}).get("name")


def pods_behind(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> bool:
    """A finished Job whose pods as cached show fewer succeeded (or failed) pods than the Job
    controller counted: the pod watch has not delivered them yet, and the outcome (summary,
    failure message) must be read from a LIST instead."""
    st = job.get("status") or {}
    phases = [(p.get("status") or {}).get("phase") for p in pods]
    conds = {c.get("type") for c in st.get("conditions") or () if c.get("status") == "True"}
    if "Complete" in conds:
        return phases.count("Succeeded") < max(1, int(st.get("succeeded") or 0))
    if "Failed" in conds:
        return phases.count("Failed") < int(st.get("failed") or 0)
    return False


def missing(objects: Mapping[Key, Mapping[str, Any]], namespace: Optional[str], items: list[Mapping[str, Any]],
            resource_version: Optional[str]) -> list[Key]:
    """The keys of `objects` (of one namespace, or all when None) that a LIST at
    `resource_version` lacks and that are not newer than it: deleted while a watch was away.
    Nothing without an integer resourceVersion (a LIST that cannot be placed in time)."""
    try:
        list_rv = int(resource_version)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    listed = {((it.get("metadata") or {}).get("namespace"), (it.get("metadata") or {}).get("name"))
              for it in items}
    out = []
    for key, obj in list(objects.items()):
        if (namespace is None or key[0] == namespace) and key not in listed:
            rv = _rv(obj)
            if rv is not None and rv <= list_rv:
                out.append(key)
    return out


class _Kind:
    """One kind of object: by (namespace, name), plus (namespace, group) -> names."""

    def __init__(self, group_of: Any):
        self.objects: dict[Key, Obj] = {}
        self.groups: dict[Key, set[str]] = {}
        self.group_of = group_of

    def put(self, key: Key, obj: Obj) -> None:
        self.drop(key)
        self.objects[key] = obj
        group = self.group_of(obj)
        if group:
            self.groups.setdefault((key[0], group), set()).add(key[1])

    def drop(self, key: Key) -> Optional[Obj]:
        old = self.objects.pop(key, None)
        group = self.group_of(old) if old is not None else None
        if group:
            names = self.groups.get((key[0], group))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self.groups[(key[0], group)]
        return old

    def of_group(self, namespace: str, group: str) -> list[Obj]:
        return [self.objects[(namespace, n)] for n in sorted(self.groups.get((namespace, group), ()))]


class WatchCache:
    """Thread-safe: the event loop writes, reconcile threads read (one lock, short holds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = _Kind(lambda o: None)
        self._jobs = _Kind(lambda o: ((o.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN))
        self._pods = _Kind(_job_of)
        self._events = _Kind(_job_of_event)  # FailedCreate Events of Jobs (the watch's field selector)
        self._gone: OrderedDict[str, None] = OrderedDict()  # uids of deleted objects

    # writes -----------------------------------------------------------------------------

    def _put(self, kind: _Kind, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if not meta.get("name") or not meta.get("namespace"):
            return False
        key = (meta["namespace"], meta["name"])
        with self._lock:
            if meta.get("uid") in self._gone or not newer_or_same(obj, kind.objects.get(key)):
                return False
            kind.put(key, obj)
            return True

    def _drop(self, kind: _Kind, namespace: str, name: str, uid: Optional[str] = None) -> None:
        with self._lock:
            old = kind.objects.get((namespace, name))
            if uid is not None and old is not None and (old.get("metadata") or {}).get("uid") not in (None, uid):
                return  # an object of the same name created since (the DELETED is of an older one)
            kind.drop((namespace, name))
            if uid:
                self._gone[uid] = None
                while len(self._gone) > TOMBSTONES_KEPT:
                    self._gone.popitem(last=False)

    def put_run(self, run: Mapping[str, Any]) -> bool:
        return self._put(self._runs, slim(run))

    def put_job(self, job: Mapping[str, Any]) -> bool:
        return self._put(self._jobs, slim_job(job))

    def put_pod(self, pod: Mapping[str, Any]) -> bool:
        out = slim(pod, keep_spec=False)
        # of the spec only the node it was bound to: a finished stage records it (provenance.py)
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            out["spec"] = {"nodeName": node}
        return self._put(self._pods, out)

    def put_event(self, event: Mapping[str, Any]) -> bool:
        return self._put(self._events, slim(event))

    def drop_event(self, namespace: str, name: str, uid: Optional[str] = None) -> None:
        self._drop(self._events, namespace, name, uid)

    def drop_run(self, namespace: str, name: str, uid: Optional[str] = None) -> None:
        self._drop(self._runs, namespace, name, uid)

    def drop_job(self, namespace: str, name: str, uid: Optional[str] = None) -> None:
        self._drop(self._jobs, namespace, name, uid)

    def drop_pod(self, namespace: str, name: str, uid: Optional[str] = None) -> None:
        self._drop(self._pods, namespace, name, uid)

    def invalidate_run(self, namespace: str, name: str) -> None:
        """Forget the cached run without a tombstone: the next read GETs it."""
        with self._lock:
            self._runs.drop((namespace, name))

    def relist(self, kind: str, namespace: Optional[str], items: list[Mapping[str, Any]],
               resource_version: Optional[str]) -> int:
        """Merge a LIST (of one namespace, or all when None) of "runs", "jobs", "pods" or
        "events": its items are put (newer wins), and every cached one it lacks is dropped unless
        it is newer than the LIST (created since). Without an integer resourceVersion nothing is
        dropped. Returns how many were dropped."""
        store = {"runs": self._runs, "jobs": self._jobs, "pods": self._pods, "events": self._events}[kind]
        put = {"runs": self.put_run, "jobs": self.put_job, "pods": self.put_pod, "events": self.put_event}[kind]
        for it in items:
            put(it)
        with self._lock:
            gone = missing(store.objects, namespace, items, resource_version)
            for key in gone:
                store.drop(key)
        return len(gone)

    # reads ------------------------------------------------------------------------------

    def run(self, namespace: str, name: str) -> Optional[Obj]:
        with self._lock:
            return self._runs.objects.get((namespace, name))

    def runs_in(self, namespace: str) -> list[Obj]:
        """Every cached run of the namespace (the stage cache's index: kube/stage_cache.py)."""
        with self._lock:
            return [run for (ns, _), run in self._runs.objects.items() if ns == namespace]

    def jobs(self, namespace: str, run: str) -> list[Obj]:
        """The Jobs labelled sheepdog.dev/run=<run> (ownership is the reader's check)."""
        with self._lock:
            return self._jobs.of_group(namespace, run)

    def pods(self, namespace: str, job_names: Iterable[str]) -> list[Obj]:
        """The pods of these Jobs (by the Job controller's job-name label)."""
        with self._lock:
            return [p for job in sorted(set(job_names)) for p in self._pods.of_group(namespace, job)]

    def job_events(self, namespace: str, job: str) -> list[Obj]:
        """The cached Events about this Job (the operator watches only FailedCreate ones)."""
        with self._lock:
            return self._events.of_group(namespace, job)

    def run_of_job(self, namespace: str, job: str) -> Optional[str]:
        with self._lock:
            found = self._jobs.objects.get((namespace, job))
        return ((found or {}).get("metadata") or {}).get("labels", {}).get(LABEL_RUN) if found else None

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"runs": len(self._runs.objects), "jobs": len(self._jobs.objects),
                    "pods": len(self._pods.objects), "events": len(self._events.objects)}
