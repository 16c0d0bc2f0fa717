"""Fixtures for the operator's cluster tests.

  crd               (session) the SelfAlignmentRun CRD applied to the test control plane
  operator_process  (function) `sheepdog operator` as a subprocess watching the test's namespace,
                    with a free metrics and liveness port, started and live; its log is added
                    to the report of a failing test. `.stop()`, `.kill()` (SIGKILL), `.start()`.
  make_run          (function) a tiny SelfAlignmentRun manifest (dict) for kwok: gpus 1, tiny
                    sizes, and per-stage termination messages (see RUN_SUMMARIES).

How kwok produces the stage summaries: the operator runs with `--test-pod-annotations`, which
copies the `sheepdog.test/*` pod annotations listed in the run's `sheepdog.test/pod-annotations`
annotation into each stage Job's pod template (sheepdog.kube.pod_passthrough.passthrough_annotations);
kwok's stages (tests/cluster/kwok/stages.yaml) turn `sheepdog.test/termination-message` into
the container's termination message and `sheepdog.test/fail: "true"` into a failed pod.
A production operator (no flag) never copies anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "sheepdog.dev_selfalignmentruns.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


class OperatorProcess:
    def __init__(self, cluster: Any, namespaces: list[str], log_path: Path, extra: tuple[str, ...] = ()):
        self.cluster = cluster
        self.namespaces = namespaces
        self.log_path = log_path
        self.extra = extra
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "sheepdog.kube.operator"]
        try:  # the real entry point once the CLI has it
            import sheepdog.cli  # noqa: F401

            cmd = [sys.executable, "-m", "sheepdog.cli", "operator"]
        except ImportError:
            pass
        for ns in self.namespaces:
            cmd += ["--namespace", ns]
        return cmd + [
            "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
            "--liveness-port", str(self.liveness_port), "--liveness-address", "127.0.0.1",
            "--worker-image", "registry.example/sheepdog-worker:test",
            "--resync-seconds", "10", "--test-pod-annotations", "--log-level", "DEBUG",
            # Tests read every Job a run created; the deletion of older iterations' Jobs (the
            # product's default, 2) has its own test (test_job_cleanup.py) and the chart's tests.
            "--job-history", "all", *self.extra,
        ]

    def start(self, timeout: float = 60) -> "OperatorProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = self.cluster.full_env()
        env["PYTHONUNBUFFERED"] = "1"
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"\n===== start {self.starts}: {' '.join(self.command())}\n")
        log.flush()
        self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                code, _ = http_get(self.liveness_url, timeout=2)
                if code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"operator not live after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def metrics(self) -> str:
        code, text = http_get(self.metrics_url)
        assert code == 200, text
        return text

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 200) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


AUDITED_SA = "sheepdog-audited"


@pytest.fixture
def audited_operator(request, cluster, crd, namespace, tmp_path):
    """A factory: `sheepdog operator` on the test's namespace as a ServiceAccount bound to
    cluster-admin, so that the API server's audit log (which records ServiceAccounts only)
    holds its every request under the user `.user`. Stopped at the end of the test."""
    from tests.chart.e2e import IdentityCluster, write_token_kubeconfig

    binding = f"{AUDITED_SA}-{namespace}"
    cluster.kubectl("create", "serviceaccount", AUDITED_SA, "-n", namespace)
    cluster.kubectl("create", "clusterrolebinding", binding, "--clusterrole=cluster-admin",
                    f"--serviceaccount={namespace}:{AUDITED_SA}")
    kubeconfig = write_token_kubeconfig(cluster, namespace, AUDITED_SA, tmp_path / "audited.kubeconfig")
    started: list[OperatorProcess] = []
    request.node.stash[_OPERATORS] = started

    def start(*extra: str) -> OperatorProcess:
        op = OperatorProcess(IdentityCluster(cluster, kubeconfig), [namespace], tmp_path / "operator.log", extra=extra)
        op.user = f"system:serviceaccount:{namespace}:{AUDITED_SA}"
        started.append(op)
        return op.start()

    try:
        yield start
    finally:
        for op in started:
            op.stop()
        cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def crd(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.wait_established("selfalignmentruns.sheepdog.dev")
    # discovery can lag the Established condition by a moment
    cluster.wait_for("SelfAlignmentRun discovery",
                     lambda: cluster.kubectl("get", "selfalignmentruns", "-A", check=False).returncode == 0,
                     timeout=30)
    return CRD


_OPERATORS = pytest.StashKey[list]()


@pytest.fixture
def operator_process(request, cluster, crd, namespace, tmp_path):
    op = OperatorProcess(cluster, [namespace], tmp_path / "operator.log")
    request.node.stash[_OPERATORS] = [op]
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for op in item.stash.get(_OPERATORS, []):
            report.sections.append((f"operator log ({op.log_path})", op.log_tail(300)))


# --- runs ---------------------------------------------------------------------------------------

GROUP_VERSION = "sheepdog.dev/v1alpha1"


def summary_for(stage: str, iteration: str = "${iteration}") -> dict[str, Any]:
    """What a stage writes to its termination message (docs/design.md), with figures that
    differ per stage; `${iteration}` is filled in by the operator's test pass-through."""
    base = {"stage": stage, "ok": True, "skipped": False, "seconds": 1.0}
    return {
        "synthesize": {**base, "generated": 20, "assessed": 18, "parseFailures": 1, "meanQuality": 7.5,
                       "meanFollowing": 8.25, "modelLoads": 1, "engine": "vllm"},
        "curate": {**base, "kept": 9, "keepRate": 0.5, "dropped": {"rules": 3, "score": 6}},
        "train": {**base, "trainLoss": 1.25, "evalLoss": 1.5, "samples": 9},
        "evaluate": {**base, "evaluation": {"ifeval-smoke.promptStrict": 0.25}},
    }[stage]


def summaries_annotation(extra: Optional[dict[str, dict[str, str]]] = None) -> str:
    table: dict[str, dict[str, str]] = {}
    for stage in ("synthesize", "curate", "train", "evaluate"):
        s = summary_for(stage)
        text = json.dumps(s, separators=(",", ":"))
        # "iteration": ${iteration} (a number once substituted)
        text = text[:-1] + ',"iteration":${iteration}}'
        table[stage] = {"sheepdog.test/termination-message": text}
    for selector, annotations in (extra or {}).items():
        table.setdefault(selector, {}).update(annotations)
    return json.dumps(table)


def run_manifest(name: str, namespace: str, iterations: int = 3, extra_annotations: Optional[dict] = None,
                 **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"base": "models/tiny"},
        "iterations": iterations,
        "synthesis": {"dataSize": 20, "maxTokens": 64},
        "training": {"maxSamples": 20, "epochs": 1},
        "stages": {
            "synthesize": {"gpus": 1, "tensorParallel": 1},
            "curate": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
            "train": {"gpus": 1},
            "evaluate": {"gpus": 1},
        },
        "retries": 2,
        # Off: the tests' runs share one spec, and each expects its own Job per stage; the stage
        # cache's own tests turn it on (test_stage_cache_cluster.py).
        "stageCache": False,
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "SelfAlignmentRun",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"sheepdog.test/pod-annotations": summaries_annotation(extra_annotations)},
        },
        "spec": spec,
    }


@pytest.fixture
def make_run():
    return run_manifest


def get_run(cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get_json("selfalignmentrun", name, "-n", namespace)


def stage_jobs(cluster, namespace: str, run: Optional[str] = None) -> list[dict[str, Any]]:
    selector = f"sheepdog.dev/run={run}" if run else "sheepdog.dev/run"
    return cluster.get_json("jobs", "-n", namespace, "-l", selector)["items"]


def wait_phase(cluster, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
    def check():
        st = get_run(cluster, namespace, name).get("status") or {}
        return st if st.get("phase") in phases else None

    return cluster.wait_for(f"run {name} phase in {phases}", check, timeout=timeout, interval=0.5)


def events_of(cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get_json("events", "-n", namespace, "--field-selector",
                             f"involvedObject.name={name},involvedObject.kind=SelfAlignmentRun")["items"]
    return sorted(items, key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")


@pytest.fixture
def executor_node(cluster, namespace, tmp_path, monkeypatch):
    """A pod-executor node of this test's own (tests/cluster/pod_executor.py: the pods steered to
    it run as local processes). Yields (its label, for a stage's nodeSelector with
    tests.cluster.pod_executor.TOLERATION; the local directory of the claim `sheepdog-data`)."""
    from tests.cluster.fixture import PodExecutorProcess

    volume = tmp_path / "volumes" / "sheepdog-data"
    volume.mkdir(parents=True)
    # the Jobs run `python` from PATH: the venv's (sheepdog_jobs importable, as in the worker image)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    label = {"sheepdog.test/executor": namespace}
    ex = PodExecutorProcess(cluster, f"ex-{namespace}", volume.parent, labels=label)
    try:
        yield label, volume
    finally:
        ex.stop()


@pytest.fixture
def storage(cluster, namespace):
    """The run's volume: PVC `sheepdog-data` in the test's namespace, pre-bound to a PV (the
    scheduler does not place a pod whose claim is unbound; nothing real is mounted under kwok)."""
    pv = f"sheepdog-{namespace}"
    cluster.apply({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{pv}"},
            "claimRef": {"namespace": namespace, "name": "sheepdog-data"},
        },
    })
    cluster.apply({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "sheepdog-data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })
    cluster.wait_for("PVC sheepdog-data bound", lambda: cluster.get_json(
        "pvc", "sheepdog-data", "-n", namespace).get("status", {}).get("phase") == "Bound", timeout=60)
    yield "sheepdog-data"
    cluster.kubectl("delete", "pv", pv, "--wait=false", "--ignore-not-found", check=False)


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels: str) -> list[float]:
    """Values of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
