"""GPU cost of a stage Job: GPUs x running time of its pods. Pure: dicts in, a number out.

A pod's GPUs are what the Job builder wrote into the Job's `sheepdog.dev/gpus` annotation
(the stage's `gpus`), so the figure does not depend on the cluster's GPU resource name. A pod's
running time is from its container's start to its end (terminated.startedAt..finishedAt, or the
pod's startTime when the container never reported a start); a pod still running counts only
once it has ended. Every attempt counts, a failed one too: its GPUs were held all the same.

When the pods are gone (garbage-collected, or a Job of an older operator), the Job's own times
give the figure: startTime..completion x GPUs per pod x parallelism.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from sheepdog.kube.jobs import GPUS_ANNOTATION
from sheepdog.planner.gpu_cost_policy import gpu_seconds, seconds_between


def pod_gpus(job: Mapping[str, Any]) -> int:
    """GPUs per pod: the builder's annotation; for a Job without it (an older operator), the
    container limits of a resource named */gpu."""
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(GPUS_ANNOTATION)
    template = (job.get("spec") or {}).get("template") or {}
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        pass
    total = 0
    for c in (template.get("spec") or {}).get("containers") or ():
        for name, value in ((c.get("resources") or {}).get("limits") or {}).items():
            if name.endswith("/gpu") and str(value).isdigit():
                total += int(value)
    return total


def pod_running_seconds(pod: Mapping[str, Any]) -> Optional[float]:
    """Start to end of the pod's main container; None while it runs or when it never started."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return seconds_between(term.get("startedAt") or status.get("startTime"), term.get("finishedAt"))
    return None


def job_gpu_seconds(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]],
                    started_at: Optional[str], finished_at: Optional[str]) -> Optional[float]:
    """GPU-seconds of a finished Job; 0 for a CPU stage; None when no time is known."""
    gpus = pod_gpus(job)
    if gpus == 0:
        return 0.0
    times = [t for t in (pod_running_seconds(p) for p in pods) if t is not None]
    if times:
        return round(gpus * sum(times), 3)
    per_pod = gpu_seconds(gpus, started_at, finished_at)
    return None if per_pod is None else round(per_pod * int((job.get("spec") or {}).get("parallelism") or 1), 3)
