"""Suspending and resuming a stage Job that Kueue manages, the way Kueue supports it.

A run with `spec.scheduling.queueName` gets Jobs labelled `kueue.x-k8s.io/queue-name`, created
suspended; Kueue makes a Workload for each (owned by the Job, labelled with the Job's uid) and
admits it by unsuspending the Job. Kueue's job reconciler unsuspends any suspended Job whose
Workload is admitted, so `Job.spec.suspend: true` cannot stop an admitted Job: Kueue gives it
its pods back (seen on the test control plane with Kueue v0.17.0, tests/operator/test_kueue.py).
The switch Kueue supports is `Workload.spec.active`: false evicts the Workload (Kueue suspends
the Job, its pods go, its quota is released) and keeps it out of the queue; true queues it
again, and Kueue unsuspends the Job once it is admitted again.

So a SuspendStage (the run's spec.suspend, a stage that timed out) of a queued Job sets its
Workload's spec.active; a Job without the queue label is suspended directly as before. A queued
Job whose Workload does not exist yet (Kueue has not seen the Job) is still suspended as created:
it gets `spec.suspend: true` (a no-op), and the next reconcile, which sees the Job unsuspended
if Kueue admits it meanwhile, deactivates the Workload then. Where Kueue is not installed the
Workload LIST answers 404 and the Job is suspended directly.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional

from sheepdog.kube.stuck import queued

log = logging.getLogger(__name__)

GROUP_VERSION = "kueue.x-k8s.io/v1beta2"
LABEL_JOB_UID = "kueue.x-k8s.io/job-uid"


def active(workload: Mapping[str, Any]) -> bool:
    """Kueue's reading of spec.active: absent means active."""
    return (workload.get("spec") or {}).get("active") is not False


def owned_by(workload: Mapping[str, Any], job_uid: str) -> bool:
    return any(ref.get("uid") == job_uid for ref in (workload.get("metadata") or {}).get("ownerReferences") or ())


def workload_changes(workloads: Iterable[Mapping[str, Any]], job_uid: str, suspend: bool) -> list[str]:
    """The names of the Job's Workloads whose spec.active must change for `suspend`."""
    return [w["metadata"]["name"] for w in workloads if owned_by(w, job_uid) and active(w) == suspend]


def set_suspended(kube: Any, namespace: str, name: str, suspend: bool, jobs: Iterable[Mapping[str, Any]]) -> str:
    """Carry out a SuspendStage on Job `name` (`jobs`: the run's Jobs as cached).
    Returns how: "job" (Job.spec.suspend) or "workload" (the Workload's spec.active)."""
    job: Optional[Mapping[str, Any]] = next(
        (j for j in jobs if (j.get("metadata") or {}).get("name") == name), None)
    uid = ((job or {}).get("metadata") or {}).get("uid")
    if job is None or not queued(job) or not uid:
        kube.suspend_job(namespace, name, suspend)
        return "job"
    workloads = kube.list_job_workloads(namespace, uid)
    if workloads is None or not any(owned_by(w, uid) for w in workloads):
        # Kueue is not installed (None) or has no Workload for the Job yet.
        if suspend:
            kube.suspend_job(namespace, name, True)
        return "job"
    for wl in workload_changes(workloads, uid, suspend):
        kube.set_workload_active(namespace, wl, not suspend)
        log.info("%s/%s: Workload %s spec.active=%s", namespace, name, wl, not suspend)
    return "workload"
