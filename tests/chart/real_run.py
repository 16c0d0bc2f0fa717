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


# ---- the run and what it must show --------------------------------------------------------------
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
STAGES = ("synthesize", "curate", "train", "evaluate")
# The quickstart made as small as it honestly goes (make test's run in containers): one
# iteration, 2 instructions of at most 128 tokens from 6 requests, one epoch, two evaluation
# prompts of 16 tokens. Everything else, `engine: auto` included, is the quickstart's.
SMALL = {
    "iterations": 1,
    "synthesis": {"dataSize": 2, "maxTokens": 128, "maxRequests": 6},
    "training": {"epochs": 1, "warmupSteps": 0},
    "evaluation": {"limit": 2, "maxTokens": 16},
}


def overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` merged in, mapping by mapping (lists and scalars replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def quickstart(spec_overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """examples/quickstart.yaml as shipped, or with `spec_overlay` merged into its spec."""
    manifest = yaml.safe_load(QUICKSTART.read_text())
    if spec_overlay:
        manifest["spec"] = overlay(manifest["spec"], spec_overlay)
    return manifest


def metrics_endpoints(cluster: Any, release_ns: str, service: str) -> list[tuple[str, int]]:
    """(address, port) of every ready endpoint of the Service's `metrics` port (its EndpointSlices)."""
    slices = cluster.get_json("endpointslices", "-n", release_ns, "-l",
                              f"kubernetes.io/service-name={service}")["items"]
    targets = [(addr, port["port"]) for s in slices for port in s.get("ports") or () if port.get("name") == "metrics"
               for ep in s.get("endpoints") or () if (ep.get("conditions") or {}).get("ready")
               for addr in ep["addresses"]]
    if not targets:
        raise AssertionError(f"no ready endpoint behind Service {release_ns}/{service}: {slices}")
    return targets


def scrape_metrics(cluster: Any, release_ns: str, service: str, ca_pem: str, token: str) -> list[str]:
    """GET /metrics from every ready endpoint of the operator's metrics Service, as Prometheus
    scrapes a Service (its EndpointSlices, one scrape per endpoint): HTTPS verified with the
    chart's CA for the Service's DNS name, with `token` (a ServiceAccount allowed /metrics).
    This host is the real node, so the pod addresses on its bridge are reachable from here."""
    import http.client
    import socket
    import ssl

    targets = metrics_endpoints(cluster, release_ns, service)
    ctx = ssl.create_default_context(cadata=ca_pem)
    texts = []
    for addr, port in targets:
        sock = ctx.wrap_socket(socket.create_connection((addr, port), timeout=30),
                               server_hostname=f"{service}.{release_ns}.svc")
        conn = http.client.HTTPConnection(addr, port)
        conn.sock = sock
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
        res = conn.getresponse()
        body = res.read().decode()
        conn.close()
        if res.status != 200:
            raise AssertionError(f"{addr}:{port}/metrics answered {res.status}: {body[:500]}")
        texts.append(body)
    return texts


def metrics_reader_token(cluster: Any, release_ns: str, fullname: str, name: str = "scraper") -> str:
    """A token of a ServiceAccount `name` in the release's namespace bound to the chart's
    metrics-reader ClusterRole (what `metrics.readers` binds for a Prometheus)."""
    if cluster.kubectl("get", "serviceaccount", name, "-n", release_ns, check=False).returncode != 0:
        cluster.kubectl("create", "serviceaccount", name, "-n", release_ns)
    binding = f"{release_ns}-{name}"
    if cluster.kubectl("get", "clusterrolebinding", binding, check=False).returncode != 0:
        cluster.kubectl("create", "clusterrolebinding", binding, f"--clusterrole={fullname}-metrics-reader",
                        f"--serviceaccount={release_ns}:{name}")
    return cluster.kubectl("create", "token", name, "-n", release_ns).stdout.strip()


def metrics_ca(cluster: Any, release_ns: str, fullname: str) -> str:
    import base64

    tls = cluster.get_json("secret", f"{fullname}-metrics-tls", "-n", release_ns)
    return base64.b64decode(tls["data"]["ca.crt"]).decode()


def check_run(cluster: Any, ns: str, run: str, iterations: int, status: dict[str, Any], claim: Path,
              worker_id: str, worker_user: str) -> None:
    """What a run that Succeeded in containers on the real node must show: every stage Job that
    is still kept had one pod (no retry), on the real node, in the worker image (by imageID), as
    the image's non-root user, exit 0, read-only root; the stages' files on the claim are that
    user's; synthesize ran on vLLM (`engine: auto` in the CPU worker image); every stage record
    of the status names the real node and the worker's imageID."""
    uid, _, gid = worker_user.partition(":")
    assert status["phase"] == "Succeeded", status
    planned = [(0, "evaluate")] + [(i, s) for i in range(1, iterations + 1) for s in STAGES]
    jobs = cluster.get_json("jobs", "-n", ns, "-l", f"sheepdog.dev/run={run}")["items"]
    names = sorted(j["metadata"]["name"] for j in jobs)
    # older iterations' Jobs go once their outcome is in the status (operator.jobHistory)
    assert names and set(names) <= {f"{run}-i{i}-{s}" for i, s in planned}, names
    pods = run_pods(cluster, ns, run)
    assert sorted(p["metadata"]["labels"]["job-name"] for p in pods) == names, [p["metadata"]["name"] for p in pods]
    for p in pods:
        spec, st = p["spec"], p["status"]
        assert spec["nodeName"] == realnode.NODE_NAME, p["metadata"]["name"]
        assert st["phase"] == "Succeeded", st
        (cs,) = st["containerStatuses"]
        assert cs["imageID"] == worker_id, cs
        assert cs["state"]["terminated"]["exitCode"] == 0, cs
        assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    last = claim / "runs" / run / f"i{iterations}"
    assert (last / "model" / "config.json").is_file(), sorted(p.name for p in last.iterdir())
    assert (last / "model" / "config.json").stat().st_uid == int(uid)
    for i, stage in planned:
        manifest = claim / "runs" / run / f"i{i}" / stage / "_SUCCESS"
        assert manifest.is_file(), (i, stage)
        if stage == "synthesize":
            summary = json.loads(manifest.read_text())["summary"]
            assert summary["engine"] == "vllm", summary  # vLLM's CPU build, not a fall-back
    # Provenance: every stage record names the node and the image its pod ran with.
    records = [(r["iteration"], s, rec) for r in status["iterations"] for s, rec in r["stages"].items()]
    assert sorted((i, s) for i, s, _ in records) == sorted(planned)
    for i, s, rec in records:
        assert rec["phase"] == "Succeeded" and rec["attempts"] == 1, (i, s, rec)
        assert (rec.get("node"), rec.get("imageID")) == (realnode.NODE_NAME, worker_id), (i, s, rec)
        # the stage's summary, read from its pod's termination message (/dev/termination-log)
        assert (rec.get("summary") or {}).get("ok") is True, (i, s, rec)
        assert rec["summary"]["stage"] == s and rec["summary"]["iteration"] == i, (i, s, rec)
    # What each iteration produced, built from those summaries: M_0 evaluated first (iteration
    # 0), then per iteration the pairs generated and kept, the train loss, the model and the
    # evaluation panel.
    smoke = {"ifeval-smoke.promptStrict", "ifeval-smoke.instructionLoose"}
    m0, *recs = status["iterations"]
    assert m0["iteration"] == 0 and set(m0["evaluation"]) >= smoke, m0
    assert [r["iteration"] for r in recs] == list(range(1, iterations + 1))
    for r in recs:
        assert isinstance(r["generated"], int) and 0 < r["kept"] <= r["generated"], r
        assert isinstance(r["trainLoss"], (int, float)) and r["trainLoss"] > 0, r
        assert r["model"] == f"runs/{run}/i{r['iteration']}/model", r
        assert set(r["evaluation"]) >= smoke, r


def check_metrics(texts: list[str], ns: str, run: str, iterations: int) -> None:
    """The run's transitions in the operator's metrics, summed over the Service's endpoints (a
    standby replica reports zeros): each stage's Jobs created and finished succeeded, none
    failed, one StageSucceeded Event per stage Job, and the run's phase Succeeded."""
    from tests.operator.conftest import metric, metric_samples

    samples = [metric_samples(t) for t in texts]

    def total(name: str, **labels: str) -> float:
        return sum(sum(metric(s, name, **labels)) for s in samples)

    for stage in STAGES:
        jobs = float(iterations + (stage == "evaluate"))
        assert total("sheepdog_jobs_created_total", namespace=ns, stage=stage) == jobs, stage
        assert total("sheepdog_stage_duration_seconds_count", namespace=ns, stage=stage, result="succeeded") == jobs, stage
        assert total("sheepdog_job_failures_total", namespace=ns, stage=stage) == 0.0, stage
    assert total("sheepdog_events_total", namespace=ns, reason="StageSucceeded") == float(1 + 4 * iterations)
    # a gauge from the run's status (a standby replica may show it too)
    phase = [v for s in samples for v in metric(s, "sheepdog_run_phase", namespace=ns, run=run, phase="Succeeded")]
    assert phase and set(phase) == {1.0}, phase
