"""spec.storage.deleteDataOnDelete in a cluster: the run's finalizer, and the cleanup Job that
removes its directory from the volume when the run is deleted (planner/data_cleanup_policy.py
decides each step; this module reads the cluster and acts).

The cleanup Job `<run>-delete-data-<uid8>` runs `python -m sheepdog_jobs delete-run-data` in
the curate stage's image (CPU only, the worker image by default) with the run's claim at /data,
under the same restricted pod and container security as a stage. It has no ownerReference:
its run is going, and the garbage collector would remove it with the run (a foreground
deletion would remove it before it ran). It is labelled with the run's name (so its events
reach the run's reconcile, like a stage Job's) and uid, and it removes itself an hour after it
finished (ttlSecondsAfterFinished), leaving its pod's log to read meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from pydantic import ValidationError

from sheepdog.api.spec import RunSpec
from sheepdog.kube import jobs as kjobs
from sheepdog.kube.client import Conflict
from sheepdog.kube.events import run_event
from sheepdog.kube.observe import job_state
from sheepdog.kube.ownership import live_pods, owned_by
from sheepdog.planner.data_cleanup_policy import CLEANUP_TIMEOUT, FINALIZER, finalizers_wanted, on_delete
from sheepdog.stage_config import kube_layout
from sheepdog.timestamps import parse_time

log = logging.getLogger("sheepdog.operator")

COMPONENT = "delete-data"
LABEL_RUN_UID = "sheepdog.dev/run-uid"
FINISHED_TTL = 3600  # seconds a finished cleanup Job (and its pod's log) stays
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def cleanup_job_name(run_name: str, uid: str) -> str:
    """Per run object, not per name: a deleted run's cleanup Job may still be there when a new
    run of the same name is deleted in turn."""
    return f"{run_name}-delete-data-{uid[:8]}"


def build_cleanup_job(run: Mapping[str, Any], spec: RunSpec, image_defaults: Any = None) -> dict[str, Any]:
    meta = run["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    images = kjobs.ImageDefaults.coerce(image_defaults)
    run_dir = kube_layout(name, spec).run_dir
    lab = {
        kjobs.LABEL_RUN: name,
        LABEL_RUN_UID: uid,
        "app.kubernetes.io/name": "sheepdog-worker",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": "sheepdog",
        "app.kubernetes.io/managed-by": "sheepdog-operator",
    }
    container: dict[str, Any] = {
        "name": kjobs.CONTAINER_NAME,
        "image": images.for_stage("curate", spec.stages.curate.image),
        "command": [kjobs.PYTHON, "-m", "sheepdog_jobs", "delete-run-data", "--run-dir", run_dir, "--uid", uid],
        "env": [{"name": "HOME", "value": kjobs.HOME_DIR}, {"name": "TMPDIR", "value": "/tmp"}],
        "resources": {k: dict(v) for k, v in RESOURCES.items()},
        "securityContext": kjobs.container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [m for m in kjobs.volume_mounts() if m["name"] in ("data", "home", "tmp")],
    }
    if images.pull_policy:
        container["imagePullPolicy"] = images.pull_policy
    pod_volumes = [v for v in kjobs.volumes(spec) if v["name"] in ("data", "home", "tmp")]
    pod = kjobs.base_pod_spec(spec, images, container, pod_volumes)
    curate = spec.stages.curate
    if curate.node_selector:
        pod["nodeSelector"] = dict(curate.node_selector)
    if curate.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in curate.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": cleanup_job_name(name, uid), "namespace": namespace, "labels": lab},
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": int(CLEANUP_TIMEOUT),
            "ttlSecondsAfterFinished": FINISHED_TTL,
            "podFailurePolicy": {"rules": [kjobs.fail_job_rule()]},  # refused (not this run's): no retry
            "template": {"metadata": {"labels": dict(lab)}, "spec": pod},
        },
    }


def ensure_finalizer(kube: Any, cache: Any, run: Mapping[str, Any], spec: RunSpec) -> Optional[dict[str, Any]]:
    """Add the finalizer to a run with deleteDataOnDelete (remove it from one without): the run
    as patched (the cache's from now on, so the status write that follows is not a conflict),
    or None when it needed nothing. Conditional on the version read (a Conflict: retried)."""
    meta = run["metadata"]
    new = finalizers_wanted(meta.get("finalizers") or [], spec.storage.delete_data_on_delete,
                            bool(meta.get("deletionTimestamp")))
    if new is None:
        return None
    patched = _set_finalizers(kube, cache, run, new)
    log.info("%s/%s: finalizer %s %s", meta["namespace"], meta["name"], FINALIZER,
             "added" if FINALIZER in new else "removed")
    return patched


def _set_finalizers(kube: Any, cache: Any, run: Mapping[str, Any], finalizers: list[str]) -> Optional[dict[str, Any]]:
    """A merge patch of metadata.finalizers, conditional on the resourceVersion read: a 409 says
    the cached run is stale (forgotten, so that the retried reconcile GETs it)."""
    meta = run["metadata"]
    try:
        patched = kube.patch_run(meta["namespace"], meta["name"], {"metadata": {
            "finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}})
    except Conflict:
        cache.invalidate_run(meta["namespace"], meta["name"])
        raise
    if isinstance(patched, dict) and patched.get("metadata"):
        cache.put_run(patched)
        return patched
    return None


def deleting(kube: Any, cache: Any, run: Mapping[str, Any], image_defaults: Any, now: str,
             instance: str = "") -> Optional[float]:
    """One step for a run being deleted; the seconds after which to look again (None: nothing
    left to do, or a Job or pod event will tell)."""
    meta = run["metadata"]
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    finalizers = meta.get("finalizers") or []
    if FINALIZER not in finalizers:
        return None
    try:
        spec: Optional[RunSpec] = RunSpec.model_validate(run.get("spec") or {})
    except ValidationError:
        spec = None
    run_dir = kube_layout(name, spec).run_dir if spec is not None else f"the directory of run {name}"
    own = [j for j in cache.jobs(ns, name) if (j.get("metadata") or {}).get("labels", {}).get(LABEL_RUN_UID) == uid]
    stage_jobs = [j for j in cache.jobs(ns, name) if owned_by(j, uid)]
    job = "none" if not own else job_state(own[0])
    pods = [] if stage_jobs or own else [
        p for p in kube.list_stage_pods(ns)
        if (p.get("metadata") or {}).get("labels", {}).get(kjobs.LABEL_RUN) == name and stage_pod(p)]
    deleted_at, at = parse_time(meta["deletionTimestamp"]), parse_time(now)
    step = on_delete(deleted_at, at, finalizers, len(stage_jobs), len(live_pods(pods)), job, run_dir)
    if spec is None and step.action == "create_job":
        step = on_delete(deleted_at, at, finalizers, 0, 0, "failed", run_dir)  # no spec: no Job to build
    if step.action == "delete_stage_jobs":
        for j in stage_jobs:
            kube.delete_job(ns, j["metadata"]["name"], j["metadata"].get("uid"))
            cache.drop_job(ns, j["metadata"]["name"], j["metadata"].get("uid"))
        log.info("%s/%s: deleted; stopping its %d stage Jobs before its data goes", ns, name, len(stage_jobs))
    elif step.action == "create_job":
        created = kube.create(ns, build_cleanup_job(run, spec, image_defaults))
        if isinstance(created, dict):
            cache.put_job(created)
        log.info("%s/%s: deleted; cleanup Job %s removes %s", ns, name, cleanup_job_name(name, uid), run_dir)
    elif step.action == "release":
        kind, reason, message = step.event
        try:
            kube.create_event(ns, run_event(run, kind, reason, message, instance))
        except Exception as e:  # noqa: BLE001 - the run must still go; the log keeps what happened
            log.warning("%s/%s: could not post %s: %s", ns, name, reason, e)
        _set_finalizers(kube, cache, run, [f for f in finalizers if f != FINALIZER])
        (log.info if kind == "Normal" else log.warning)("%s/%s: %s; finalizer removed", ns, name, message)
    return step.recheck_after


def stage_pod(pod: Mapping[str, Any]) -> bool:
    """A pod labelled with the run's name that is not the cleanup Job's own. Names are unique
    while the run exists, so such a pod is this run's or a deleted namesake's: both write into
    the same directory, and the cleanup waits for both."""
    return (pod.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/component") != COMPONENT
