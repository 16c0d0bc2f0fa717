"""Why a running stage Job's pods do not run. Pure: Job, pod and Event dicts in, a Stuck out.

A Job without a terminal condition is "running" to the Job controller, but its pods may never
start. This module names the reason with Kubernetes' own message in it, in this order (the
first that holds wins, most specific first):

  NotAdmitted           the Job is suspended and carries a Kueue queue label: it waits for
                        Kueue to admit it (a run the user suspended is the planner's business)
  ImagePullFailing      a container waits with ErrImagePull / ImagePullBackOff / ...
  ContainerConfigError  a container waits with CreateContainerConfigError (a missing Secret,
                        ConfigMap or key) or CreateContainerError
  Unschedulable         a pod's PodScheduled condition is False/Unschedulable: the
                        scheduler's message ("0/2 nodes are available: 2 Insufficient ...")
  VolumeMountFailing    a pod being created (its containers wait with ContainerCreating) has
                        a FailedMount or FailedAttachVolume Event: the kubelet's (or the
                        attach-detach controller's) message (a missing Secret volume, a
                        Multi-Attach of a ReadWriteOnce claim another pod holds)
  ContainerCreatingTooLong  a pod has been ContainerCreating for CREATING_THRESHOLD without
                        such an Event (a large image being pulled shows the same)
  QuotaExceeded         no pod exists and the Job controller's latest FailedCreate Event is a
                        ResourceQuota's refusal ("exceeded quota"): waiting for capacity
  PodsNotCreated        no pod exists and the Job controller's latest FailedCreate Event says
                        why (Pod Security, an admission webhook or policy)

The pods' Events are read only for pods that have been ContainerCreating for MOUNT_GRACE
(sheepdog.kube.pod_events): every pod passes through ContainerCreating, and most leave it fast.

`since` is when the waiting began (the stuck pod's creation, else the Job's start): the
planner's pendingTimeout counts from it, and the stuck metric exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from sheepdog.kube.jobs import LABEL_QUEUE
from sheepdog.planner.reasons import Reason
from sheepdog.timestamps import parse_time

IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                        "RegistryUnavailable", "SignatureValidationFailed"})
CONTAINER_CONFIG = frozenset({"CreateContainerConfigError", "CreateContainerError"})
QUOTA_REFUSAL = "exceeded quota"
CREATING = "ContainerCreating"  # the kubelet's waiting reason while it mounts, pulls and creates
MOUNT_EVENTS = frozenset({"FailedMount", "FailedAttachVolume"})
MOUNT_GRACE = 30.0  # seconds ContainerCreating before a pod's Events are worth reading
CREATING_THRESHOLD = 900.0  # seconds ContainerCreating without an Event before it is stuck
EVENTS_RECHECK = 3.0  # seconds: look again for the FailedCreate of a Job without pods
MAX_MESSAGE = 512  # the status and the Event carry it; the API server's messages can be long


@dataclass(frozen=True)
class Stuck:
    reason: str  # a Reason
    message: str
    since: Optional[str] = None


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """One line of at most `limit` characters (status and Event messages stay readable)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _terminal(job: Mapping[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or ())


def suspended(job: Mapping[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def queued(job: Mapping[str, Any]) -> bool:
    """Kueue manages the Job (it was created suspended for Kueue to admit)."""
    return bool((_meta(job).get("labels") or {}).get(LABEL_QUEUE))


def _starting(job: Mapping[str, Any]) -> bool:
    return not _terminal(job) and not suspended(job)


def needs_pods(job: Mapping[str, Any]) -> bool:
    """A running Job with a pod that is not ready yet: its pods tell whether it is stuck."""
    st = job.get("status") or {}
    return _starting(job) and int(st.get("active") or 0) > int(st.get("ready") or 0)


def _ending(job: Mapping[str, Any]) -> bool:
    """Its pods have done their work and the Job controller is about to say so: no pod is
    missing (a pod that just succeeded, SuccessCriteriaMet or FailureTarget before Complete
    or Failed). Reading Events then would cost a request at every stage transition."""
    st = job.get("status") or {}
    uncounted = st.get("uncountedTerminatedPods") or {}
    ending = any(c.get("type") in ("SuccessCriteriaMet", "FailureTarget") and c.get("status") == "True"
                 for c in st.get("conditions") or ())
    return ending or int(st.get("succeeded") or 0) > 0 or any(uncounted.get(k) for k in ("succeeded", "failed"))


def needs_events(job: Mapping[str, Any]) -> bool:
    """A running Job without any pod: only its FailedCreate Events can tell why."""
    st = job.get("status") or {}
    return (_starting(job) and not _ending(job) and int(st.get("active") or 0) == 0
            and int(st.get("terminating") or 0) == 0)


def recheck_events(job: Mapping[str, Any], known_stuck: bool) -> bool:
    """Look for a FailedCreate again soon: a first attempt without pods and no reason known.
    (After failed attempts the Job controller's own backoff explains a pause without pods.)"""
    st = job.get("status") or {}
    return needs_events(job) and not known_stuck and int(st.get("failed") or 0) == 0


def _waiting(pod: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    st = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in st.get(key) or ():
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_PULL | CONTAINER_CONFIG:
                return waiting["reason"], waiting.get("message") or ""
    return None


def _unschedulable(pod: Mapping[str, Any]) -> Optional[str]:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return c.get("message") or "Unschedulable"
    return None


def creating(pod: Mapping[str, Any]) -> bool:
    """A pending pod whose containers the kubelet is still creating (mounting its volumes,
    pulling its image): it may be stuck, which only its Events or the time can tell."""
    st = pod.get("status") or {}
    if st.get("phase") not in (None, "Pending") or _meta(pod).get("deletionTimestamp"):
        return False
    return any(((cs.get("state") or {}).get("waiting") or {}).get("reason") == CREATING
               for key in ("initContainerStatuses", "containerStatuses") for cs in st.get(key) or ())


def creating_for(pod: Mapping[str, Any], now: Optional[str]) -> Optional[float]:
    """Seconds since the pod was created, while it is being created; None otherwise."""
    start, at = parse_time(_meta(pod).get("creationTimestamp")), parse_time(now)
    if not creating(pod) or start is None or at is None:
        return None
    return (at - start).total_seconds()


def _mount_failure(pod: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The latest FailedMount / FailedAttachVolume Event about this pod."""
    name = _meta(pod).get("name")
    found = [e for e in events if e.get("reason") in MOUNT_EVENTS
             and (e.get("involvedObject") or {}).get("kind") == "Pod"
             and (e.get("involvedObject") or {}).get("name") == name]
    return max(found, key=_event_time) if found else None


def pod_stuck(pod: Mapping[str, Any], events: Iterable[Mapping[str, Any]] = (),
              now: Optional[str] = None) -> Optional[Stuck]:
    """Why this pod does not run, or None (running, finished, or just starting). `events`:
    Events about it (read for a pod being created, pod_events.py); `now`: for the time it has
    been ContainerCreating."""
    if (pod.get("status") or {}).get("phase") not in (None, "Pending") or _meta(pod).get("deletionTimestamp"):
        return None
    name, since = _meta(pod).get("name"), _meta(pod).get("creationTimestamp")
    waiting = _waiting(pod)
    if waiting is not None:
        kind, message = waiting
        reason = Reason.IMAGE_PULL_FAILING if kind in IMAGE_PULL else Reason.CONTAINER_CONFIG_ERROR
        return Stuck(reason, clip(f"pod {name}: {kind}: {message}" if message else f"pod {name}: {kind}"), since)
    message = _unschedulable(pod)
    if message is not None:
        return Stuck(Reason.UNSCHEDULABLE, clip(f"pod {name}: {message}"), since)
    if creating(pod):
        failure = _mount_failure(pod, events)
        if failure is not None:
            return Stuck(Reason.VOLUME_MOUNT_FAILING,
                         clip(f"pod {name}: {failure.get('reason')}: {failure.get('message') or ''}"), since)
        seconds = creating_for(pod, now)
        if seconds is not None and seconds >= CREATING_THRESHOLD:
            return Stuck(Reason.CONTAINER_CREATING_TOO_LONG,
                         f"pod {name}: ContainerCreating for {int(seconds // 60)} min, and no FailedMount or "
                         "FailedAttachVolume Event says why (a large image may still be pulling)", since)
    return None


def pod_signature(pod: Mapping[str, Any]) -> Optional[str]:
    """What a pod event can change of its Job's stuck state (None: the pod is not stuck)."""
    s = pod_stuck(pod)
    return None if s is None else f"{s.reason}: {s.message}"


def _event_time(event: Mapping[str, Any]) -> str:
    return event.get("lastTimestamp") or event.get("eventTime") or _meta(event).get("creationTimestamp") or ""


def job_stuck(
    job: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]] = (),
    events: Iterable[Mapping[str, Any]] = (),
    now: Optional[str] = None,
) -> Optional[Stuck]:
    """Why the running Job `job` does not run its pods (see the module docstring); None when
    nothing is known to be wrong. `pods`: the Job's pods; `events`: Events about the Job and
    its pods; `now`: the reconcile's time."""
    events = list(events)
    if _terminal(job):
        return None
    name = _meta(job).get("name")
    st = job.get("status") or {}
    if suspended(job):
        if not queued(job):
            return None  # the run's own suspend (or one it lifts): not a stuck state
        queue = (_meta(job).get("labels") or {}).get(LABEL_QUEUE)
        since = next((c.get("lastTransitionTime") for c in st.get("conditions") or ()
                      if c.get("type") == "Suspended" and c.get("status") == "True"), None)
        return Stuck(Reason.NOT_ADMITTED,
                     f"Job {name} is suspended until Kueue admits it (LocalQueue {queue})",
                     since or _meta(job).get("creationTimestamp"))
    found = [s for s in (pod_stuck(p, events, now) for p in pods) if s is not None]
    order = (Reason.IMAGE_PULL_FAILING, Reason.CONTAINER_CONFIG_ERROR, Reason.UNSCHEDULABLE,
             Reason.VOLUME_MOUNT_FAILING, Reason.CONTAINER_CREATING_TOO_LONG)
    for reason in order:
        of_reason = [s for s in found if s.reason == reason]
        if of_reason:
            return min(of_reason, key=lambda s: s.since or "")
    if int(st.get("active") or 0) == 0:
        failed = [e for e in events if e.get("reason") == "FailedCreate"]
        if failed:
            latest = max(failed, key=_event_time)
            message = latest.get("message") or "FailedCreate"
            # the ResourceQuota admission plugin's words: "... is forbidden: exceeded quota: <name>, ..."
            reason = Reason.QUOTA_EXCEEDED if QUOTA_REFUSAL in message else Reason.PODS_NOT_CREATED
            return Stuck(reason, clip(f"Job {name}: {message}"),
                         st.get("startTime") or _meta(job).get("creationTimestamp"))
    return None
