"""A running train stage's progress, read from the tail of rank 0's pod log.

Why the log and not an annotation the worker patches on its own pod: that would need `patch
pods` for the worker's ServiceAccount, and a compromised training container could then rewrite
any pod of the namespace (a pod's image is mutable through patch). `get pods/log` (what
`kubectl logs` uses) is read-only and the operator's alone; the stage pods keep no API token.

How it goes, per running train Job:
- the pod watch (Reconciler.pod_changed) tells which pod is rank 0 and running: the Job's only
  pod, or completion index 0 of a multi-node train's Indexed Job; no LIST for it;
- a reconcile reads that pod's log at most once per `interval` (the operator's resync
  interval; events can reconcile a run far more often): GET .../pods/<pod>/log with tailLines
  and limitBytes, so a read costs a few KB whatever the log's size;
- the last `sheepdog-progress {...}` line in it (sheepdog.progress) becomes the train
  observation's `progress`; the planner keeps it in stages.train.progress (progress_policy).
A read that fails (the pod not started yet, 404 after it ended, the kubelet unreachable, a
tail without a progress line) is no error of the run: the observation carries no reading and
the status keeps the last one.

The pure parts (which pod, when a read is due, the observation) are tested without a cluster;
the read itself goes through the API server's pods/log proxy to the node's kubelet.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping, Optional

from sheepdog.kube.jobs import COMPLETION_INDEX_ANNOTATION, JOB_NAME_LABEL, LABEL_STAGE
from sheepdog.planner.actions import StageObservation, stage_name
from sheepdog.progress import parse_progress_log

log = logging.getLogger("sheepdog.train_progress")

TAIL_LINES = 40  # progress lines come every ~10 s or 5% of the training; warnings may interleave
LIMIT_BYTES = 16384  # a log line is at most 16 KiB in the CRI format: one more can never flood us
READ_TIMEOUT = 5.0  # seconds; a reconcile's worker thread waits on it
# A read is due once this share of the interval has passed: resyncs start `interval` apart,
# but the reconciles they queue do not run at exactly the same offset, and a read that just
# missed would otherwise wait a whole second interval.
DUE_FRACTION = 0.9

# (namespace, pod, container) -> the log's tail (text); raises when it cannot be read
LogReader = Callable[[str, str, str], str]


def rank0_train_pod(pod: Mapping[str, Any]) -> Optional[tuple[str, str, str]]:
    """(Job name, pod name, container) of a running rank-0 train pod; None for any other pod."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    job = labels.get(JOB_NAME_LABEL) or labels.get("job-name")
    if labels.get(LABEL_STAGE) != "train" or not job or meta.get("deletionTimestamp"):
        return None
    if ((pod.get("status") or {}).get("phase")) != "Running":
        return None
    index = (meta.get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "0")
    if str(index) != "0":
        return None  # another node's ranks: rank 0 alone prints progress
    containers = (pod.get("spec") or {}).get("containers") or ()
    if not containers or not meta.get("name"):
        return None
    return job, meta["name"], containers[0]["name"]


class TrainProgressReader:
    """Which rank-0 pods run (from pod events) and when each was last read."""

    def __init__(self, read_log: Optional[LogReader], interval: float,
                 monotonic: Callable[[], float] = time.monotonic):
        self.read_log = read_log
        self.interval = interval
        self.monotonic = monotonic
        self._pods: dict[tuple[str, str], tuple[str, str]] = {}  # (ns, Job) -> (pod, container)
        self._last_read: dict[tuple[str, str], float] = {}  # (ns, Job) -> monotonic time
        self.reads = 0  # log requests made (tests, debugging)

    def pod_event(self, namespace: str, name: str, body: Optional[Mapping[str, Any]]) -> None:
        """A stage pod's watch event (body None: deleted)."""
        found = rank0_train_pod(body) if body is not None else None
        if found is not None:
            job, pod, container = found
            self._pods[(namespace, job)] = (pod, container)
            return
        for key, (pod, _) in list(self._pods.items()):
            if key[0] == namespace and pod == name:  # that pod stopped running (or went)
                del self._pods[key]  # its last read stays: a retry's new pod waits its turn too

    def due(self, namespace: str, job: str) -> bool:
        last = self._last_read.get((namespace, job))
        return last is None or self.monotonic() - last >= self.interval * DUE_FRACTION

    def observe(self, namespace: str, run: str, observed: list[StageObservation],
                now: str) -> list[StageObservation]:
        """The observations, a running train's with the progress read from its log when a
        read is due and its rank-0 pod runs; every other one as it was."""
        if self.read_log is None:
            return observed
        out = []
        for o in observed:
            if o.stage == "train" and o.state == "running":
                reading = self._read(namespace, stage_name(run, o.iteration, o.stage, o.retry), now)
                if reading is not None:
                    o = dataclasses.replace(o, progress=reading)
            elif o.stage == "train":  # finished: nothing will be read again
                self._last_read.pop((namespace, stage_name(run, o.iteration, o.stage, o.retry)), None)
            out.append(o)
        return out

    def _read(self, namespace: str, job: str, now: str) -> Optional[dict[str, Any]]:
        target = self._pods.get((namespace, job))
        if target is None or not self.due(namespace, job):
            return None
        pod, container = target
        self._last_read[(namespace, job)] = self.monotonic()
        self.reads += 1
        try:
            text = self.read_log(namespace, pod, container)
        except Exception as e:  # noqa: BLE001 - any failure keeps the last progress (module docstring)
            level = logging.WARNING if getattr(e, "status", None) == 403 else logging.DEBUG
            log.log(level, "%s/%s: log of %s not read (the last progress stays): %s", namespace, job, pod, e)
            return None
        record = parse_progress_log(text)
        return None if record is None else {**record, "observedAt": now}


class LogUnreadable(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


def pod_log_reader(kube: Any) -> Optional[LogReader]:
    """The log tail reader over the operator's API client (`Kube`); None for a client without
    one (the unit tests' fakes, which pass their own reader)."""
    transport = getattr(kube, "transport", None)
    if transport is None:
        return None

    def read(namespace: str, pod: str, container: str) -> str:
        resp = transport.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
            query=[("container", container), ("tailLines", str(TAIL_LINES)), ("limitBytes", str(LIMIT_BYTES))],
            # text/plain is what comes back, but the API server negotiates against its
            # serializers (JSON, YAML, protobuf) and answers 406 to an Accept of text/plain alone
            headers={"Accept": "*/*"}, timeout=READ_TIMEOUT,
        )
        text = resp.text
        if resp.status != 200:
            raise LogUnreadable(resp.status, text)
        return text

    return read
