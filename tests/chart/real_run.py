"""A SelfAlignmentRun in containers on the real node: the pieces shared by
tests/chart/test_real_node_run.py and `make cluster-demo` (tests/cluster/demo).

- the images: scripts/build-images makes (or reuses from buildah's layer cache) the operator
  and CPU worker images and writes them as OCI archives; the operator's archive (about 110 MB)
  is kept in the image cache, the worker's (several GB) goes to a temporary directory and is
  deleted once the node has imported it;
- the run's storage: a ReadWriteMany PersistentVolume of type hostPath (a directory on this
  host, which is the real node) holding models/<the tiny model> and seeds/, owned by the worker
  image's user, pre-bound to the claim `sheepdog-data` of the run's namespace;
- the chart's values: the operator from the operator image on the real node, the stage Jobs
  from the CPU worker image (never pulled: the node has them imported);
- the run steered to the real node: every stage gets its node selector and toleration (the
  node is tainted so that the kwok tests' pods never land there).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from tests.chart.helm import CHART, ROOT
from tests.cluster import hoststate, realnode

BUILD = ROOT / "scripts" / "build-images"
CACHE = Path(os.environ.get("SHEEPDOG_CACHE") or Path.home() / ".cache" / "sheepdog")
# Where tests/images/test_build_images.py and test_real_node_install.py keep the operator's
# archive too: one copy, rewritten when the image changed.
IMAGE_CACHE = CACHE / "images" / "oci"
VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
OPERATOR_REPOSITORY = "localhost/sheepdog-operator"
WORKER_REPOSITORY = "localhost/sheepdog-worker-cpu"
MODEL = CACHE / "models" / "smollm2-135m-instruct"
SEEDS = ROOT / "examples" / "seeds" / "quickstart.jsonl"
CLAIM = "sheepdog-data"
# The CPU worker's archive (about 3.6 GB) is temporary unless this names a directory to keep it
# in: then a later run whose image is unchanged skips the archive's write (buildah push
# compresses every layer: about 11 minutes on a loaded 2-core machine).
KEEP_WORKER_ARCHIVE = os.environ.get("SHEEPDOG_WORKER_ARCHIVE_DIR", "")


def worker_archive_dir(tmp: Path) -> tuple[Path, bool]:
    """(where to write the worker's archive, whether to keep it after the import)."""
    return (Path(KEEP_WORKER_ARCHIVE), True) if KEEP_WORKER_ARCHIVE else (tmp, False)


def log(msg: str) -> None:
    print(f"real-run: {msg}", flush=True)


def build_image(name: str, out: Path, timeout: float = 3600) -> Path:
    """scripts/build-images --only NAME --out OUT: the image built or reused, OUT/sheepdog-NAME.oci.tar
    written when missing or stale. Prints build-images' own lines (what was rebuilt)."""
    t0 = time.monotonic()
    res = subprocess.run([str(BUILD), "--only", name, "--out", str(out)], capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"scripts/build-images --only {name} failed:\n{res.stderr[-6000:]}")
    said = [line for line in res.stderr.splitlines() if line.startswith("build-images:")]
    log("\n".join(said) + f"\n{name} image built or reused in {time.monotonic() - t0:.1f}s")
    return out / f"sheepdog-{name}.oci.tar"


@contextmanager
def real_node_up(cluster: Any, images: list[Path], timings: dict[str, float]) -> Iterator[realnode.RealNode]:
    """The cluster's real node started with `images` imported before its kubelet (a pod bound
    earlier would meet ErrImageNeverPull), stopped at the end; then (when the body raised
    nothing) asserts that the stop undid everything and the host is as before. `timings`
    gets the start and the stop, printed at the end."""
    from tests.cluster.test_real_node import assert_host_restored

    cp = cluster.control_plane
    before = hoststate.snapshot()
    t0 = time.monotonic()
    node = cp.start_real_node(owner_pid=os.getpid(), images=images)
    timings["node Ready, images imported"] = time.monotonic() - t0
    cluster.extra_logs.update({f"real node {c}": p for c, p in node.logs.items()})
    try:
        yield node
    finally:
        t1 = time.monotonic()
        problems = cp.stop_real_node()
        timings["node stop and host restore"] = time.monotonic() - t1
        print("\n" + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    assert problems == []
    assert_host_restored(before, cp.state_dir / "real-node")


def archive_facts(path: Path) -> tuple[str, str]:
    """(manifest digest, configured user) of the one image in an OCI archive."""
    with tarfile.open(path) as tar:
        (desc,) = json.loads(tar.extractfile("index.json").read())["manifests"]
        manifest = json.loads(tar.extractfile("blobs/sha256/" + desc["digest"].split(":", 1)[1]).read())
        config = json.loads(tar.extractfile("blobs/sha256/" + manifest["config"]["digest"].split(":", 1)[1]).read())
    return desc["digest"], config["config"]["User"]


def fill_claim(path: Path, user: str, model: Path = MODEL, seeds: Path = SEEDS) -> Path:
    """The volume's directory: models/<model's name> (a copy: a link would point outside the
    mount) and seeds/quickstart.jsonl, all owned by the worker image's user `uid:gid` (a hostPath
    volume gets no fsGroup ownership change, and the stages write runs/ beside them)."""
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"no model at {model}: run `make model` (or scripts/setup-test)")
    uid, _, gid = user.partition(":")
    (path / "models").mkdir(parents=True, exist_ok=True)
    shutil.copytree(model, path / "models" / model.name, dirs_exist_ok=True)
    (path / "seeds").mkdir(exist_ok=True)
    shutil.copy(seeds, path / "seeds" / seeds.name)
    for p in [path, *path.rglob("*")]:
        os.chown(p, int(uid), int(gid or uid), follow_symlinks=False)
    path.chmod(0o755)
    return path


def storage_objects(namespace: str, path: Path, size: str = "20Gi") -> list[dict[str, Any]]:
    """A hostPath PersistentVolume at `path` (this host is the real node, so its kubelet
    bind-mounts the directory), pre-bound to the claim `sheepdog-data` of `namespace`; the
    claim itself. ReadWriteMany: every stage pod mounts it (on one node here)."""
    pv = f"{namespace}-{CLAIM}"
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain",
                  "hostPath": {"path": str(path), "type": "Directory"},
                  "claimRef": {"namespace": namespace, "name": CLAIM}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": size}}}},
    ]


def chart_values(replicas: int = 1) -> dict[str, Any]:
    """The operator from the operator image and the stages from the CPU worker image, both as
    imported (pullPolicy Never), the operator's pods on the real node."""
    return {
        "image": {"repository": OPERATOR_REPOSITORY, "tag": VERSION, "pullPolicy": "Never"},
        "operator": {
            "replicas": replicas,
            "nodeSelector": dict(realnode.NODE_SELECTOR),
            "tolerations": [dict(realnode.TOLERATION)],
        },
        "worker": {"image": {"repository": WORKER_REPOSITORY, "tag": VERSION, "pullPolicy": "Never"}},
    }


def on_real_node(manifest: dict[str, Any]) -> dict[str, Any]:
    """The run with every stage's pods steered to the real node (its label and toleration);
    nothing else changed."""
    out = copy.deepcopy(manifest)
    stages = out["spec"].setdefault("stages", {})
    for stage in ("synthesize", "curate", "train", "evaluate"):
        s = stages.setdefault(stage, {}) or {}
        stages[stage] = s
        s["nodeSelector"] = {**(s.get("nodeSelector") or {}), **realnode.NODE_SELECTOR}
        s["tolerations"] = [t for t in s.get("tolerations") or () if t != realnode.TOLERATION] + [dict(realnode.TOLERATION)]
    return out


def run_pods(cluster: Any, namespace: str, run: str) -> list[dict[str, Any]]:
    return cluster.get_json("pods", "-n", namespace, "-l", f"sheepdog.dev/run={run}")["items"]


def print_stage_logs(cluster: Any, namespace: str, run: str, tail: int = 40) -> None:
    """The stage pods' last lines, for a failure report (they go with the node)."""
    for pod in run_pods(cluster, namespace, run):
        name = pod["metadata"]["name"]
        res = cluster.kubectl("logs", "-n", namespace, name, f"--tail={tail}", check=False)
        print(f"----- {name} ({pod['status'].get('phase')})\n{res.stdout}{res.stderr}")
