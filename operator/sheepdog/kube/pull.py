"""`sheepdog pull RUN -n NS --to DIR`: a cluster run's directory off its PVC, to this machine.

Nothing else reaches the claim from outside the cluster, so a short-lived pod mounts it
(read-only, the run's directory only), writes the directory as a gzipped tar in base64 to its
output, and ends; the CLI reads the pod's log through the API server (pods/log: what `kubectl
logs` reads) while it runs, then checks the archive and unpacks it. The pod is deleted
whatever happens. (exec would need a websocket client and a long-lived pod; a log stream is a
plain HTTP GET that every API server and kubelet serve.)

The pod is built like a stage pod where it matters: the run's curate stage's nodeSelector and
tolerations (a CPU pod that may mount the claim where the stages do), the stage pods' security
context (their user, so the files are readable; restricted Pod Security), small requests.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import posixpath
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sheepdog.kube.jobs import container_security_context, pod_security_context

MOUNT = "/data"
DIR_ENV = "SHEEPDOG_PULL_DIR"
# sh, tar, gzip and base64 are in busybox and in every image sheepdog ships. The directory comes
# in through the environment (never spliced into the script). "set -o pipefail" is not in every
# sh; a failed tar leaves a truncated archive, which the gzip check below refuses.
EXCLUDE_ENV = "SHEEPDOG_PULL_EXCLUDE"
# set -f: the exclude patterns reach tar as written, never expanded by the shell
SCRIPT = f'set -f; cd "${DIR_ENV}" && tar -cf - ${EXCLUDE_ENV} . | gzip -1 | base64'
# --no-models: the iterations' models and train checkpoints stay on the claim (the data, the
# reports and the logs come; `sheepdog export` takes a model away in its own format)
MODEL_PATTERNS = ("./i*/model", "./i*/train/checkpoints")
DEFAULT_IMAGE = "busybox:1.37"


class PullError(RuntimeError):
    pass


def run_dir(run: dict[str, Any]) -> tuple[str, str]:
    """(claim name, the run's directory relative to the claim's root), as the operator lays it out."""
    spec = run.get("spec") or {}
    storage = spec.get("storage") or {}
    sub = (storage.get("subPath") or "").strip("/") or f"runs/{run['metadata']['name']}"
    if sub.startswith("..") or "/../" in f"/{sub}/":
        raise PullError(f"spec.storage.subPath {sub!r} leaves the claim")
    return storage.get("claimName") or "sheepdog-data", sub


def pull_pod(run: dict[str, Any], pod_name: str, image: str, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    name = run["metadata"]["name"]
    claim, sub = run_dir(run)
    curate = ((run.get("spec") or {}).get("stages") or {}).get("curate") or {}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": [{
            "name": "pull",
            "image": image,
            "command": ["sh", "-c", SCRIPT],
            "env": [{"name": DIR_ENV, "value": posixpath.join(MOUNT, sub)},
                    {"name": EXCLUDE_ENV, "value": " ".join(f"--exclude={p}" for p in exclude)}],
            "volumeMounts": [{"name": "data", "mountPath": MOUNT, "readOnly": True}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            "securityContext": container_security_context(),
        }],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
    }
    if curate.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(curate["nodeSelector"])
    if curate.get("tolerations"):
        pod_spec["tolerations"] = list(curate["tolerations"])
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": {"app.kubernetes.io/name": "sheepdog",
                                                  "app.kubernetes.io/component": "pull",
                                                  "sheepdog.dev/pull": name}},
        "spec": pod_spec,
    }


def decode(text: str) -> bytes:
    """The pod's output -> the tar archive; PullError when it is not a whole gzipped archive."""
    try:
        packed = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PullError(f"the pull pod's output is not base64: {exc}; its start: {text[:200]!r}") from None
    try:
        return gzip.decompress(packed)
    except (OSError, EOFError) as exc:  # truncated or not gzip: tar failed or the log was cut
        raise PullError(f"the archive is incomplete ({exc}); is the run directory readable?") from None


def unpack(archive: bytes, dest: Path) -> list[str]:
    """Unpack under dest (tarfile's "data" filter: nothing outside dest, no devices, no links
    that leave it); the files' names, relative to dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        members = tar.getmembers()
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise PullError(f"the archive holds {exc}: refused") from None
    return sorted(m.name.removeprefix("./") for m in members if m.isfile())


def _pod_log(kube, namespace: str, pod: str, follow: bool) -> str:
    """The pod's output. follow: streamed while the pod runs, as `kubectl logs -f` (a kubelet
    rotates a container's log at 10 MiB; a reader that follows gets every rotated part)."""
    query = [("follow", "true")] if follow else None
    resp = kube.transport.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", query=query,
                                  headers={"Accept": "*/*"}, timeout=None if follow else kube.timeout)
    if not 200 <= resp.status <= 299:
        raise PullError(f"pods/{pod}/log: HTTP {resp.status}: {resp.data[:300]!r}")
    return resp.data.decode("ascii", "replace")


def pull(kube, run: dict[str, Any], dest: Path, *, image: str = DEFAULT_IMAGE, exclude: tuple[str, ...] = (),
         timeout: float = 600,
         poll: float = 1.0, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Copy the run's directory into dest; the files copied."""
    namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
    pod_name = f"{name[:40]}-pull-{int(time.time()) % 100000:05d}"
    # the user's own credentials create it (the operator never creates bare pods)
    kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pull_pod(run, pod_name, image, exclude))
    try:
        deadline = clock() + timeout
        status = _wait(kube, namespace, pod_name, ("Running", "Succeeded", "Failed"), deadline, poll, sleep, clock)
        streamed = _pod_log(kube, namespace, pod_name, follow=True)
        status = _wait(kube, namespace, pod_name, ("Succeeded", "Failed"), deadline, poll, sleep, clock)
        if status.get("phase") == "Failed":
            states = [c.get("state") or {} for c in status.get("containerStatuses") or []]
            message = "; ".join(str((s.get("terminated") or {}).get("message") or "") for s in states)
            raise PullError(f"pod {namespace}/{pod_name} failed: {message.strip() or streamed[-500:]}")
        try:
            archive = decode(streamed)
        except PullError:
            # a log server that answers a follow with what it has so far: read the whole log again
            archive = decode(_pod_log(kube, namespace, pod_name, follow=False))
        return unpack(archive, dest)
    finally:
        try:
            kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
        except Exception:  # noqa: BLE001 - the copy is what matters; a leftover pod ends on its own
            pass


def _wait(kube, namespace: str, pod: str, phases: tuple[str, ...], deadline: float, poll: float,
          sleep: Callable[[float], None], clock: Callable[[], float]) -> dict[str, Any]:
    while True:
        status = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}").get("status") or {}
        phase = status.get("phase") or "Pending"
        if phase in phases:
            return status
        if clock() > deadline:
            waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason")
                       for c in status.get("containerStatuses") or []]
            why = ", ".join(w for w in waiting if w) or status.get("reason") or "no reason given"
            raise PullError(f"pod {namespace}/{pod} still {phase} ({why}) after the timeout; can this "
                            "namespace mount the claim and pull the image (--image)?")
        sleep(poll)


def describe(files: list[str], dest: Path, limit: Optional[int] = 5) -> str:
    shown = ", ".join(files[:limit]) + (", ..." if limit and len(files) > limit else "")
    return f"{len(files)} files into {dest}" + (f": {shown}" if files else "")
