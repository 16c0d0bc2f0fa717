"""The operator's Kubernetes API calls, as plain JSON dicts (the official sync client underneath).

Reconciles run in worker threads (see reconcile.py), so a blocking client is right here; the
responses are read raw (`_preload_content=False`) and parsed with json: the client's model
classes are slow and the Job builders work on dicts anyway.

`Kube` is the only I/O surface of a reconcile. Tests substitute a fake with the same methods.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional, Protocol

from sheepdog.api.spec import GROUP, PLURAL, VERSION

Obj = dict[str, Any]


class Conflict(Exception):
    """409 on a write whose resourceVersion is stale: re-reconcile."""


class NotFound(Exception):
    pass


class KubeApi(Protocol):
    def get_run(self, namespace: str, name: str) -> Optional[Obj]: ...
    def list_runs(self, namespace: Optional[str]) -> list[Obj]: ...
    def list_jobs(self, namespace: str, run: str) -> list[Obj]: ...
    def list_pods(self, namespace: str, job_names: Iterable[str]) -> list[Obj]: ...
    def create(self, namespace: str, obj: Obj) -> bool: ...
    def replace_run_status(self, run: Obj, status: Obj) -> Obj: ...
    def create_event(self, namespace: str, event: Obj) -> None: ...


def load_config(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> None:
    """KUBECONFIG (or ~/.kube/config) when present, else the in-cluster service account."""
    from kubernetes import config

    path = kubeconfig or os.environ.get("KUBECONFIG")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if path or not in_cluster:
        config.load_kube_config(config_file=path, context=context)
    else:
        config.load_incluster_config()


class Kube:
    """KubeApi over kubernetes.client (sync). Thread-safe: urllib3's pool is."""

    def __init__(self, api_client: Any = None, pool_size: int = 32, request_timeout: float = 30.0):
        from kubernetes import client

        if api_client is None:
            cfg = client.Configuration.get_default_copy()
            cfg.connection_pool_maxsize = pool_size
            api_client = client.ApiClient(cfg)
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.timeout = request_timeout
        self._rest = client.rest.ApiException

    # helpers -----------------------------------------------------------------------------

    def _json(self, resp: Any) -> Obj:
        return json.loads(resp.data)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Obj:
        kwargs.setdefault("_preload_content", False)
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return self._json(fn(*args, **kwargs))
        except self._rest as e:
            if e.status == 404:
                raise NotFound(str(e.reason)) from e
            if e.status == 409:
                raise Conflict(_reason(e)) from e
            raise

    # reads -------------------------------------------------------------------------------

    def get_run(self, namespace: str, name: str) -> Optional[Obj]:
        try:
            return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        except NotFound:
            return None

    def list_runs(self, namespace: Optional[str]) -> list[Obj]:
        if namespace:
            out = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
        else:
            out = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        return out.get("items") or []

    def list_jobs(self, namespace: str, run: str) -> list[Obj]:
        out = self._call(
            self.batch.list_namespaced_job, namespace, label_selector=f"sheepdog.dev/run={run}"
        )
        return out.get("items") or []

    def list_pods(self, namespace: str, job_names: Iterable[str]) -> list[Obj]:
        names = sorted(set(job_names))
        if not names:
            return []
        # One LIST for all the Jobs that need their pods read (set-based selector).
        selector = f"batch.kubernetes.io/job-name in ({','.join(names)})"
        out = self._call(self.core.list_namespaced_pod, namespace, label_selector=selector)
        return out.get("items") or []

    # writes ------------------------------------------------------------------------------

    def create(self, namespace: str, obj: Obj) -> bool:
        """Create a Job or a Service. False when it already exists (409): never a duplicate."""
        kind = obj.get("kind")
        fn = {"Job": self.batch.create_namespaced_job, "Service": self.core.create_namespaced_service}[kind]
        try:
            self._call(fn, namespace, obj)
        except Conflict:
            return False
        return True

    def replace_run_status(self, run: Obj, status: Obj) -> Obj:
        """PUT the status subresource with the run's resourceVersion: the whole status is
        written as the planner computed it, and a run that changed since it was read (a user
        edit, another writer) fails with Conflict instead of being overwritten."""
        meta = run["metadata"]
        body = {
            "apiVersion": run.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": run.get("kind", "SelfAlignmentRun"),
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "resourceVersion": meta["resourceVersion"]},
            "spec": run.get("spec") or {},
            "status": status,
        }
        return self._call(
            self.custom.replace_namespaced_custom_object_status,
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body,
        )

    def create_event(self, namespace: str, event: Obj) -> None:
        self._call(self.core.create_namespaced_event, namespace, event)


def _reason(e: Any) -> str:
    try:
        return json.loads(e.body).get("message") or str(e.reason)
    except Exception:  # noqa: BLE001
        return str(getattr(e, "reason", e))
