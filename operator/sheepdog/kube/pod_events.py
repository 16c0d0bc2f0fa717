"""The Events of stage pods that stay ContainerCreating: why a pod cannot mount its volumes.

A pod whose Secret volume does not exist, or whose ReadWriteOnce claim another node holds
(Multi-Attach), sits Pending with its containers waiting "ContainerCreating" while it holds its
GPUs; nothing in the pod says why, only the kubelet's FailedMount (or the attach-detach
controller's FailedAttachVolume) Events do. The operator does not watch pods' Events (on a
shared cluster that stream is every workload's); it reads the Events of one pod, a LIST by
field selector, only for a stage pod that has been ContainerCreating for stuck.MOUNT_GRACE, and
at most once per `interval` (the resync interval: the pod's status does not change while its
mount fails, so the resync is what reconciles it), and stuck.pod_stuck turns them into
VolumeMountFailing with the kubelet's message.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Optional

from sheepdog.kube import stuck
from sheepdog.kube.jobs import JOB_NAME_LABEL

log = logging.getLogger("sheepdog.reconcile")

Obj = dict[str, Any]


class PodEventsReader:
    """Thread-safe enough for the reconciler: one run's reconcile at a time touches its pods."""

    def __init__(self, list_events: Optional[Callable[[str, str], list[Obj]]], interval: float,
                 clock: Callable[[], float] = time.monotonic):
        self.list_events = list_events
        self.interval = interval
        self.clock = clock
        self._read: dict[tuple[str, str], tuple[float, list[Obj]]] = {}  # (ns, pod) -> (when, Events)

    def merge(self, namespace: str, pods: list[Mapping[str, Any]], events: Mapping[str, list],
              now: str) -> dict[str, list]:
        """`events` (Job name -> its Events) with the Events of its pods that have been
        ContainerCreating for MOUNT_GRACE added, read when due."""
        out = {k: list(v) for k, v in events.items()}
        for pod in pods:
            seconds = stuck.creating_for(pod, now)
            if seconds is None or seconds < stuck.MOUNT_GRACE or self.list_events is None:
                continue
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            job = labels.get(JOB_NAME_LABEL) or labels.get("job-name")
            if job:
                out.setdefault(job, []).extend(self._events(namespace, meta["name"]))
        return out

    def _events(self, namespace: str, pod: str) -> list[Obj]:
        key = (namespace, pod)
        held = self._read.get(key)
        if held is not None and self.clock() - held[0] < self.interval:
            return held[1]
        try:
            found = self.list_events(namespace, pod)
        except Exception as e:  # noqa: BLE001 - the pod stays as it was seen; the next resync asks again
            log.debug("%s/%s: could not read the pod's Events: %s", namespace, pod, e)
            found = held[1] if held is not None else []
        self._read[key] = (self.clock(), found)
        return found

    def forget(self, namespace: str, pod: str) -> None:
        """The pod is no longer being created (or is gone): nothing of it is kept."""
        self._read.pop((namespace, pod), None)
