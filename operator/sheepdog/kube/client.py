"""The operator's Kubernetes API calls, as plain JSON dicts, over kube/transport.py (urllib3).

Reconciles run in worker threads (see reconcile.py), so a blocking client is right here. Bodies
and responses are plain JSON: the Job builders produce dicts and the reconcile reads dicts.

`Kube` is the only I/O surface of a reconcile. Tests substitute a fake with the same methods.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional, Protocol

from sheepdog.api.spec import GROUP, PLURAL, VERSION
from sheepdog.kube.transport import Credentials, Transport, load_credentials

Obj = dict[str, Any]


class Conflict(Exception):
    """409 on a write whose resourceVersion is stale: re-reconcile."""


class NotFound(Exception):
    pass


class ApiError(Exception):
    """Any other answer than 2xx, 404 or 409: its HTTP status, reason and body (error_status)."""

    def __init__(self, status: int, reason: str, body: str = ""):
        super().__init__(f"({status}) {reason}")
        self.status, self.reason, self.body = status, reason, body


USER_AGENT = "sheepdog-operator"
# Objects per page of the resync's LISTs and of Kopf's first LISTs.
LIST_PAGE_SIZE = 500
# The only Events the operator watches: the Job controller's FailedCreate (why a stage Job has
# no pods; stuck.py). The watch (operator.py) and the resync's re-list use the same selector.
FAILED_CREATE_EVENTS = "involvedObject.kind=Job,reason=FailedCreate"


class Listing(list):
    """A LIST's items, with the list's resourceVersion (WatchCache.relist needs it)."""

    resource_version: Optional[str] = None


class KubeApi(Protocol):
    def get_run(self, namespace: str, name: str) -> Optional[Obj]: ...
    def patch_run(self, namespace: str, name: str, patch: Obj) -> Obj: ...
    def list_runs(self, namespace: Optional[str]) -> list[Obj]: ...
    def list_stage_jobs(self, namespace: Optional[str]) -> list[Obj]: ...
    def list_pods(self, namespace: str, job_names: Iterable[str]) -> list[Obj]: ...
    def list_stage_pods(self, namespace: Optional[str]) -> list[Obj]: ...
    def list_failed_create_events(self, namespace: Optional[str]) -> list[Obj]: ...
    def create(self, namespace: str, obj: Obj) -> Optional[Obj]: ...
    def dry_run_create(self, namespace: str, obj: Obj) -> None: ...
    def list_pod_events(self, namespace: str, pod: str) -> list[Obj]: ...
    def get_job(self, namespace: str, name: str) -> Optional[Obj]: ...
    def suspend_job(self, namespace: str, name: str, suspend: bool) -> None: ...
    def list_job_workloads(self, namespace: str, job_uid: str) -> Optional[list[Obj]]: ...
    def set_workload_active(self, namespace: str, name: str, active: bool) -> None: ...
    def delete_job(self, namespace: str, name: str, uid: Optional[str] = None) -> bool: ...
    def delete_run(self, namespace: str, name: str, uid: str) -> bool: ...
    def get_lease(self, namespace: str, name: str) -> Optional[Obj]: ...
    def create_lease(self, namespace: str, name: str, spec: Obj) -> Optional[Obj]: ...
    def replace_lease(self, lease: Obj, spec: Obj) -> Optional[Obj]: ...
    def replace_run_status(self, run: Obj, status: Obj) -> Obj: ...
    def create_event(self, namespace: str, event: Obj) -> bool: ...

def replacing_merge_patch(old: Any, new: Any) -> Any:
    """A JSON merge patch (RFC 7386) that turns `old` into exactly `new`: keys that `new`
    drops are set to null (a plain merge patch would keep them), lists are replaced."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k in old and old[k] == v:
            continue
        patch[k] = replacing_merge_patch(old[k], v) if isinstance(old.get(k), dict) and isinstance(v, dict) else v
    return patch


class Kube:
    """KubeApi over our Transport (kube/transport.py), with raw JSON requests. Thread-safe
    (urllib3's pool is)."""

    def __init__(self, credentials: Optional[Credentials] = None, pool_size: int = 32, request_timeout: float = 30.0):
        from sheepdog import __version__

        # The user agent names the operator's own requests in the API server's audit log and
        # metrics (Kopf's watches say kopf/<version>).
        self.transport = Transport(credentials or load_credentials(), pool_size=pool_size, timeout=request_timeout,
                                   user_agent=f"{USER_AGENT}/{__version__}")
        self.timeout = request_timeout

    def request(self, method: str, path: str, body: Any = None, query: Optional[list[tuple[str, str]]] = None,
                content_type: str = "application/json") -> Obj:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        resp = self.transport.request(method, path, query=query, headers=headers,
                                      body=None if body is None else json.dumps(body).encode())
        text = resp.text
        if resp.status == 404:
            raise NotFound(_message(text) or path)
        if resp.status == 409:
            raise Conflict(_message(text) or "conflict")
        if not 200 <= resp.status <= 299:
            raise ApiError(resp.status, f"{resp.reason}: {_message(text)}", text)
        return json.loads(text) if text else {}

    # reads -------------------------------------------------------------------------------

    def _runs(self, namespace: Optional[str]) -> str:
        if namespace:
            return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        return f"/apis/{GROUP}/{VERSION}/{PLURAL}"

    def get_run(self, namespace: str, name: str) -> Optional[Obj]:
        try:
            return self.request("GET", f"{self._runs(namespace)}/{name}")
        except NotFound:
            return None

    def list_runs(self, namespace: Optional[str]) -> Listing:
        return _listing(self._list_pages(self._runs(namespace), []), f"{GROUP}/{VERSION}", "SelfAlignmentRun")

    def list_stage_jobs(self, namespace: Optional[str]) -> Listing:
        """Every Job labelled sheepdog.dev/run (of one namespace, or all): the resync's re-list."""
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs" if namespace else "/apis/batch/v1/jobs"
        return _listing(self._list_pages(path, [("labelSelector", "sheepdog.dev/run")]), "batch/v1", "Job")

    def list_stage_pods(self, namespace: Optional[str]) -> Listing:
        """Every pod labelled sheepdog.dev/run: the resync's re-list (deletions a watch missed)."""
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        return _listing(self._list_pages(path, [("labelSelector", "sheepdog.dev/run")]), "v1", "Pod")

    def list_failed_create_events(self, namespace: Optional[str]) -> Listing:
        """The FailedCreate Events of Jobs the operator watches: the resync's re-list."""
        path = f"/api/v1/namespaces/{namespace}/events" if namespace else "/api/v1/events"
        return _listing(self._list_pages(path, [("fieldSelector", FAILED_CREATE_EVENTS)]), "v1", "Event")

    def _list_pages(self, path: str, query: list[tuple[str, str]]) -> Obj:
        """A LIST read in pages of LIST_PAGE_SIZE (limit/continue), joined: the API server never
        builds one response of every object, and all pages come from one snapshot, whose
        resourceVersion (the first page's) the result keeps."""
        items: list[Obj] = []
        first: Optional[Obj] = None
        token = ""
        while first is None or token:
            page = self.request("GET", path, query=query + [("limit", str(LIST_PAGE_SIZE))]
                                + ([("continue", token)] if token else []))
            first = first or page
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
        return {"items": items, "metadata": {"resourceVersion": (first.get("metadata") or {}).get("resourceVersion")}}

    def list_pods(self, namespace: str, job_names: Iterable[str]) -> list[Obj]:
        names = sorted(set(job_names))
        if not names:
            return []
        # One LIST for all the Jobs that need their pods read (set-based selector).
        selector = f"batch.kubernetes.io/job-name in ({','.join(names)})"
        out = self.request("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)])
        return out.get("items") or []

    def list_pod_events(self, namespace: str, pod: str) -> list[Obj]:
        """The Events about one pod (FailedMount, FailedAttachVolume: pod_events.py)."""
        out = self.request("GET", f"/api/v1/namespaces/{namespace}/events", query=[
            ("fieldSelector", f"involvedObject.kind=Pod,involvedObject.name={pod}"), ("limit", str(LIST_PAGE_SIZE))])
        return list(out.get("items") or [])

    def get_job(self, namespace: str, name: str) -> Optional[Obj]:
        try:
            return self.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        except NotFound:
            return None

    # writes ------------------------------------------------------------------------------

    def patch_run(self, namespace: str, name: str, patch: Obj) -> Obj:
        """A merge patch of the run itself (its metadata: `sheepdog retry`'s annotation, the
        deleteDataOnDelete finalizer)."""
        return self.request("PATCH", f"{self._runs(namespace)}/{name}", body=patch,
                            content_type="application/merge-patch+json")

    def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        """Job.spec.suspend: true deletes its pods (not counted as failures), false resumes it."""
        self.request("PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
                     body={"spec": {"suspend": suspend}}, content_type="application/merge-patch+json")

    # Kueue's Workloads (kueue_workloads.py: how a queued Job is suspended) --------------------

    def list_job_workloads(self, namespace: str, job_uid: str) -> Optional[list[Obj]]:
        """The Workloads Kueue made for the Job of uid `job_uid`; None when Kueue is not installed."""
        try:
            out = self.request("GET", f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads",
                               query=[("labelSelector", f"kueue.x-k8s.io/job-uid={job_uid}")])
        except NotFound:
            return None
        return list(out.get("items") or [])

    def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        """Workload.spec.active: false evicts the Workload and keeps it out of the queue (Kueue
        suspends its Job), true queues it again."""
        self.request("PATCH", f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads/{name}",
                     body={"spec": {"active": active}}, content_type="application/merge-patch+json")

    # leases (leader election) --------------------------------------------------------------

    def _lease(self, namespace: str, name: str = "") -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases" + (f"/{name}" if name else "")

    def get_lease(self, namespace: str, name: str) -> Optional[Obj]:
        try:
            return self.request("GET", self._lease(namespace, name))
        except NotFound:
            return None

    def create_lease(self, namespace: str, name: str, spec: Obj) -> Optional[Obj]:
        """The created Lease, or None when another replica created it first."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        try:
            return self.request("POST", self._lease(namespace), body=body)
        except Conflict:
            return None

    def replace_lease(self, lease: Obj, spec: Obj) -> Optional[Obj]:
        """Write `spec` over the Lease as read (its resourceVersion): None when it changed since."""
        meta = lease["metadata"]
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                             "resourceVersion": meta["resourceVersion"]}, "spec": spec}
        try:
            return self.request("PUT", self._lease(meta["namespace"], meta["name"]), body=body)
        except Conflict:
            return None

    def delete_run(self, namespace: str, name: str, uid: str) -> bool:
        """Delete the run of that uid (its Jobs go through their ownerReferences); False when it
        was gone already or is another run of the same name."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                "preconditions": {"uid": uid}}
        try:
            self.request("DELETE", f"{self._runs(namespace)}/{name}", body=body)
        except (NotFound, Conflict):
            return False
        return True

    def delete_job(self, namespace: str, name: str, uid: Optional[str] = None) -> bool:
        """Delete a Job and, in the background, its pods; only the Job of that uid when given
        (a Job re-created under the name is not touched). False when it was gone already."""
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", body=body)
        except (NotFound, Conflict):
            return False
        return True

    def create(self, namespace: str, obj: Obj) -> Optional[Obj]:
        """Create a Job, a Service, a ConfigMap or a NetworkPolicy: the created object, or None when one of
        that name already exists (409): never a duplicate."""
        path = {
            "Job": f"/apis/batch/v1/namespaces/{namespace}/jobs",
            "Service": f"/api/v1/namespaces/{namespace}/services",
            "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps",
            "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
        }[obj["kind"]]
        try:
            return self.request("POST", path, body=obj)
        except Conflict:
            return None

    def dry_run_create(self, namespace: str, obj: Obj) -> None:
        """Create a Job with dryRun=All: the API server validates and admits it (webhooks,
        policies, quota) and stores nothing. Raises as create would; 409 (the name is taken:
        it passed validation) returns."""
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        try:
            self.request("POST", path, body=obj, query=[("dryRun", "All")])
        except Conflict:
            return

    def replace_run_status(self, run: Obj, status: Obj) -> Obj:
        """Make the run's status exactly `status`: a merge patch of the status subresource
        that nulls what the new status drops, conditional on the resourceVersion we read (a
        run changed since then -> Conflict, and the reconcile is retried on fresh data)."""
        meta = run["metadata"]
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": replacing_merge_patch(run.get("status") or {}, status) if run.get("status") else status,
        }
        return self.request(
            "PATCH", f"{self._runs(meta['namespace'])}/{meta['name']}/status", body=body,
            content_type="application/merge-patch+json",
        )

    def create_event(self, namespace: str, event: Obj) -> bool:
        """Post an Event: False when one of its name exists already (it was posted before)."""
        try:
            self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)
        except Conflict:
            return False
        return True


def _listing(out: Obj, api_version: str, kind: str) -> Listing:
    items = Listing(out.get("items") or [])
    for it in items:  # LIST items carry no apiVersion/kind
        it.setdefault("apiVersion", api_version)
        it.setdefault("kind", kind)
    items.resource_version = (out.get("metadata") or {}).get("resourceVersion")
    return items


def error_status(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, the API server's message) of a failed request; status 0 without an answer."""
    status = getattr(exc, "status", None)
    if isinstance(exc, Conflict):
        return 409, str(exc)
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(status, int):
        body = getattr(exc, "body", None)
        return status, (_message(body) if isinstance(body, str) and body else "") or str(getattr(exc, "reason", exc))
    return 0, f"{type(exc).__name__}: {exc}"


def _message(text: str) -> str:
    try:
        return json.loads(text).get("message") or ""
    except Exception:  # noqa: BLE001
        return text[:300]
