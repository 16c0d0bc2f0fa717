"""pytest plugin: one real control plane per test run (tests/conftest.py loads it).

Fixtures:
  cluster    (session) a running ControlPlane wrapper: .kubeconfig, .bin_dir, .env, .kubectl(...),
             .control_plane (for stop/start/restart of single components)
  namespace  (function) a fresh namespace, deleted after the test
  module_namespace  (module) the same, shared by a module's tests that leave nothing behind
  kueue      (session) Kueue's controller with its CRDs and webhooks (tests/cluster/kueue.py),
             started by the first test that asks for it: built and run only for those tests

Binaries come from tests/cluster/build (built when missing; SHEEPDOG_CLUSTER_BUILD=0 fails
instead). SHEEPDOG_CLUSTER_NODES sets the number of fake GPU nodes (default 2). When a test that
used the cluster fails, the tail of every component's log is added to its report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.cluster.controlplane import COMPONENTS, ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    def __init__(self, cp: ControlPlane):
        self.control_plane = cp
        self.extra_logs: dict[str, Path] = {}  # more logs for failure reports (pod executor...)

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def bin_dir(self) -> Path:
        return self.control_plane.bin_dir

    @property
    def env(self) -> dict[str, str]:
        return self.control_plane.env

    def full_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        return env

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / "kubectl"), *args]
        res = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=self.full_env(), timeout=timeout
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
            )
        return res

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Polls the CRD's Established condition. `kubectl wait --for=condition=...` fails at
        once when a just-created CRD has no conditions yet (seen about 1 session in 8)."""
        def established() -> bool:
            conds = self.get_json("crd", crd).get("status", {}).get("conditions", [])
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        self.wait_for(f"CRD {crd} Established", established, timeout=timeout)

    def apply(self, manifest: str | dict, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=text)

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 120, interval: float = 0.5) -> Any:
        """Polls predicate until it returns a truthy value (returned); fails the test on timeout."""
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last_exc = e
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")

    def create_pvc(self, namespace: str, name: str, size: str = "1Gi") -> None:
        """A PersistentVolumeClaim bound to a pre-made hostPath PersistentVolume (no provisioner
        here). The pod executor maps the claim to <volume-root>/<name> whatever the PV says."""
        pv = f"{namespace}-{name}"
        self.apply({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv, "labels": {"sheepdog.test/namespace": namespace}},
            "spec": {
                "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "hostPath": {"path": f"/tmp/sheepdog-pv/{pv}"},
                "claimRef": {"namespace": namespace, "name": name},
            },
        })
        self.apply({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                     "resources": {"requests": {"storage": size}}},
        })
        self.wait_for(f"PVC {namespace}/{name} Bound", lambda: self.get_json(
            "pvc", name, "-n", namespace).get("status", {}).get("phase") == "Bound")

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for c in COMPONENTS:
            parts.append(f"----- {c} ({self.control_plane.logs[c]}) -----\n{self.control_plane.log_tail(c, lines)}")
        for name, path in self.extra_logs.items():
            parts.append(f"----- {name} ({path}) -----\n{_tail(path, lines)}")
        return "\n".join(parts)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


_CLUSTER_KEY = pytest.StashKey[Cluster]()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest):
    build = os.environ.get("SHEEPDOG_CLUSTER_BUILD", "1") != "0"
    try:
        cp = ControlPlane(nodes=int(os.environ.get("SHEEPDOG_CLUSTER_NODES", "2")), build=build)
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        cp.start()
    except Exception as e:
        tails = "\n".join(f"----- {c} -----\n{cp.log_tail(c, 30)}" for c in COMPONENTS)
        cp.destroy()
        pytest.fail(f"control plane failed to start: {e}\n{tails}", pytrace=False)
    c = Cluster(cp)
    request.config.stash[_CLUSTER_KEY] = c
    try:
        yield c
    finally:
        del request.config.stash[_CLUSTER_KEY]
        if os.environ.get("SHEEPDOG_KEEP_CLUSTER"):
            cp.stop()
            print(f"\nkept control plane state in {cp.state_dir}")
        else:
            cp.destroy()


def _fresh_namespace(cluster: Cluster):
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    # Pods are only admitted once the namespace's default ServiceAccount exists.
    cluster.wait_for(
        f"ServiceAccount {name}/default",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=60,
        interval=0.2,
    )
    yield name
    cluster.control_plane.ensure_running()  # a test may have stopped a component
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    cluster.kubectl("delete", "pv", "-l", f"sheepdog.test/namespace={name}", "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: Cluster):
    yield from _fresh_namespace(cluster)


@pytest.fixture(scope="module")
def module_namespace(cluster: Cluster):
    """One namespace for a module's tests that leave nothing in it (server-side dry runs): a
    namespace's deletion costs the control plane about 0.4 CPU-s (the namespace controller
    lists and empties every resource type), measured 2026-12-02."""
    yield from _fresh_namespace(cluster)


class PodExecutorProcess:
    """A running `python -m tests.cluster.pod_executor` with its own node."""

    def __init__(self, cluster: Cluster, node: str, volume_root: Path, labels: dict[str, str] | None = None,
                 capacity: dict[str, str] | None = None):
        self.cluster, self.node, self.volume_root = cluster, node, volume_root
        self.log_path = cluster.control_plane.state_dir / "logs" / f"pod-executor-{node}.log"
        cmd = [sys.executable, "-m", "tests.cluster.pod_executor", "--kubeconfig", str(cluster.kubeconfig),
               "--node", node, "--volume-root", str(volume_root), "--keep-work",
               # per-pod dirs (output.log) stay for debugging, removed with the cluster state
               "--work-dir", str(cluster.control_plane.state_dir / f"pod-executor-{node}")]
        for k, v in (labels or {}).items():
            cmd += ["--label", f"{k}={v}"]
        for k, v in (capacity or {}).items():
            cmd += ["--capacity", f"{k}={v}"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=str(REPO_ROOT))
        cluster.extra_logs[f"pod-executor {node}"] = self.log_path

        def ready() -> bool:
            assert self.proc.poll() is None, f"pod executor exited:\n{_tail(self.log_path, 30)}"
            res = cluster.kubectl("get", "node", node, "-o", "json", check=False)
            if res.returncode != 0:
                return False
            conds = json.loads(res.stdout)["status"].get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        cluster.wait_for(f"pod executor node {node} Ready", ready, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.cluster.kubectl("delete", "node", self.node, "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def pod_executor(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    """A pod executor node named `executor-0` (label sheepdog.dev/pod-executor=true); steer pods
    to it with nodeSelector kubernetes.io/hostname=executor-0. PVC X lives in .volume_root / X."""
    ex = PodExecutorProcess(cluster, "executor-0", tmp_path_factory.mktemp("pod-volumes"))
    try:
        yield ex
    finally:
        ex.stop()


@pytest.fixture(scope="session")
def kueue(cluster: Cluster):
    """A running tests.cluster.kueue.KueueController; queues with `.create_queues(namespace, ...)`."""
    from tests.cluster.kueue import KueueController

    controller = KueueController(cluster)
    try:
        controller.start()
    except Exception as e:
        controller.stop()
        pytest.fail(f"Kueue failed to start: {e}\n{controller.log_tail()}", pytrace=False)
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture(autouse=True)
def _restore_control_plane(request: pytest.FixtureRequest):
    """After a test that used the cluster, restart any component it left stopped."""
    yield
    if "cluster" in request.fixturenames:
        c = request.config.stash.get(_CLUSTER_KEY, None)
        if c is not None:
            c.control_plane.ensure_running()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or "cluster" not in getattr(item, "fixturenames", ()):
        return
    c = item.config.stash.get(_CLUSTER_KEY, None)
    if c is not None:
        report.sections.append(("control plane logs (tail)", c.log_tails()))
