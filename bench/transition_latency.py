"""Stage-transition latency of the operator on a real control plane (kwok completes the pods).

    .venv/bin/python bench/transition_latency.py [--runs 100] [--iterations 3] [--nodes 4]

Starts tests/cluster's ControlPlane (etcd, kube-apiserver, controller-manager, scheduler, kwok
with fake nodes), the SelfAlignmentRun CRD, a PVC, and `sheepdog operator` as a subprocess
(INFO logging, --test-pod-annotations so kwok writes each stage's summary as the termination
message, exactly like tests/operator). Then: 1 run alone, then N runs created at once.

Latency of a transition = arrival (at this bench's own Job watch) of the ADDED event of the next
stage's Job - arrival of the event in which the previous Job's Complete condition appeared. Both
timestamps come from the same watch stream and the same clock, so the watch's own delivery lag
cancels out and the second resolution of status.completionTime does not matter.

API requests per transition: apiserver_request_total (kube-apiserver /metrics, all clients:
operator, Job controller, scheduler, kwok, this bench's two watches) summed before and after the
N-run phase, divided by its transitions; the share on sheepdog.dev resources (only the
operator and the bench's run watch touch those) is reported on its own.

Operator peak RSS: VmHWM of the operator process (/proc/<pid>/status) at the end.
The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.cluster.controlplane import ControlPlane  # noqa: E402
from tests.cluster.fixture import Cluster  # noqa: E402
from tests.cluster.kube import KubeClient  # noqa: E402
from tests.operator.conftest import CRD, OperatorProcess, run_manifest  # noqa: E402

STAGES = ("synthesize", "curate", "train")  # evaluation off (the default)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q * len(s) + 0.5)) - 1))  # nearest rank
    return s[k]


class JobWatch(threading.Thread):
    """Arrival times of each Job's ADDED event and of the event where it became Complete."""

    def __init__(self, kubeconfig: str, namespace: str):
        super().__init__(daemon=True)
        self.client = KubeClient(kubeconfig, timeout=60)
        self.path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        self.added: dict[str, float] = {}
        self.complete: dict[str, float] = {}
        self.inexact: set[str] = set()
        self.uids: dict[str, set[str]] = {}  # every uid seen per Job name (a re-created Job: 2)
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    listing = self.client.get(self.path)
                    rv = listing["metadata"]["resourceVersion"]
                    for o in listing["items"]:  # seen first in a relist: no exact arrival time
                        self.uids.setdefault(o["metadata"]["name"], set()).add(o["metadata"]["uid"])
                        if o["metadata"]["name"] not in self.added:
                            self.inexact.add(o["metadata"]["name"])
                            self.added[o["metadata"]["name"]] = time.monotonic()
                        conds = (o.get("status") or {}).get("conditions") or []
                        done = any(c["type"] == "Complete" and c["status"] == "True" for c in conds)
                        if done and o["metadata"]["name"] not in self.complete:
                            self.inexact.add(o["metadata"]["name"])
                            self.complete[o["metadata"]["name"]] = time.monotonic()
                    self.ready.set()
                for ev in self.client.watch(self.path, resource_version=rv, timeout_seconds=300):
                    t = time.monotonic()
                    obj = ev.get("object", {})
                    if ev["type"] == "ERROR":
                        rv = None
                        break
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    self.uids.setdefault(name, set()).add(obj["metadata"]["uid"])
                    if ev["type"] == "ADDED":
                        self.added.setdefault(name, t)
                    conds = (obj.get("status") or {}).get("conditions") or []
                    if any(c["type"] == "Complete" and c["status"] == "True" for c in conds):
                        self.complete.setdefault(name, t)
            except Exception as e:  # noqa: BLE001 - relist
                if not self.stop.is_set():
                    say(f"job watch: {e}; relisting")
                    rv = None
                    time.sleep(0.5)


class RunWatch(threading.Thread):
    """Phases of the runs (a watch, so that waiting adds no polling requests)."""

    def __init__(self, kubeconfig: str, namespace: str):
        super().__init__(daemon=True)
        self.client = KubeClient(kubeconfig, timeout=60)
        self.path = f"/apis/sheepdog.dev/v1alpha1/namespaces/{namespace}/selfalignmentruns"
        self.phase: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    listing = self.client.get(self.path)
                    rv = listing["metadata"]["resourceVersion"]
                    for o in listing["items"]:
                        self.phase[o["metadata"]["name"]] = (o.get("status") or {}).get("phase", "")
                for ev in self.client.watch(self.path, resource_version=rv, timeout_seconds=300):
                    obj = ev.get("object", {})
                    if ev["type"] == "ERROR":
                        rv = None
                        break
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    self.phase[obj["metadata"]["name"]] = (obj.get("status") or {}).get("phase", "")
            except Exception as e:  # noqa: BLE001
                if not self.stop.is_set():
                    say(f"run watch: {e}; relisting")
                    rv = None
                    time.sleep(0.5)

    def wait(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = 0.0
        while time.monotonic() < deadline:
            phases = [self.phase.get(n, "") for n in names]
            done = sum(p in ("Succeeded", "Failed") for p in phases)
            if time.monotonic() - last > 10:
                say(f"  {done}/{len(names)} runs finished")
                last = time.monotonic()
            if done == len(names):
                failed = [n for n in names if self.phase.get(n) == "Failed"]
                if failed:
                    raise SystemExit(f"runs failed: {failed[:5]}")
                return
            time.sleep(0.5)
        raise SystemExit(f"timed out: {sum(self.phase.get(n) in ('Succeeded', 'Failed') for n in names)}/{len(names)} done")


def transitions(watch: JobWatch, runs: list[str], iterations: int) -> list[float]:
    out = []
    for run in runs:
        seq = [f"{run}-i{n}-{s}" for n in range(1, iterations + 1) for s in STAGES]
        for prev, nxt in zip(seq, seq[1:]):
            if prev in watch.inexact or nxt in watch.inexact:
                say(f"  skipped {prev} -> {nxt}: seen in a relist, not at its event")
            elif prev in watch.complete and nxt in watch.added:
                out.append(watch.added[nxt] - watch.complete[prev])
            else:
                say(f"  missing transition {prev} -> {nxt}")
    return out


def api_requests(cluster: Cluster) -> tuple[float, float]:
    """(all requests, requests on sheepdog.dev resources) from apiserver_request_total."""
    from prometheus_client.parser import text_string_to_metric_families

    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    total = ours = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != "apiserver_request":
            continue
        for s in fam.samples:
            if s.name != "apiserver_request_total":
                continue
            total += s.value
            if s.labels.get("group") == "sheepdog.dev":
                ours += s.value
    return total, ours


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifest(name: str, namespace: str, iterations: int) -> dict:
    m = run_manifest(name, namespace, iterations=iterations)
    # gpus 0 everywhere: the fake nodes' GPUs would otherwise queue 100 runs behind 8 per node
    m["spec"]["stages"] = {"synthesize": {"gpus": 0, "tensorParallel": 1}, "curate": {}, "train": {"gpus": 0},
                           "evaluate": {"gpus": 0}}
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=4, help="kwok nodes (110 pods each)")
    ap.add_argument("--workers", type=int, default=None, help="operator --workers (default: its own)")
    ap.add_argument("--resync-seconds", type=float, default=60,
                    help="operator --resync-seconds (default 60, the operator's and the chart's; the tests run 10)")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()

    say(f"starting control plane ({args.nodes} kwok nodes)")
    cp = ControlPlane(nodes=args.nodes)
    op = None
    watches: list = []
    try:
        cp.start()
        cluster = Cluster(cp)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/selfalignmentruns.sheepdog.dev")
        cluster.wait_for("CRD discovery", lambda: cluster.kubectl("get", "selfalignmentruns", "-A", check=False).returncode == 0)
        ns = "bench"
        cluster.kubectl("create", "namespace", ns)
        cluster.wait_for("default ServiceAccount", lambda: cluster.kubectl(
            "get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0, interval=0.2)
        cluster.create_pvc(ns, "sheepdog-data")

        jobs, runs = JobWatch(str(cp.kubeconfig), ns), RunWatch(str(cp.kubeconfig), ns)
        watches = [jobs, runs]
        for w in watches:
            w.start()
        jobs.ready.wait(30)

        extra = ["--log-level", "INFO"]  # the tests' DEBUG logging costs CPU at 100 runs
        # the deployed resync interval, not the tests' 10 s: at 200 runs a 10 s resync is 20
        # reconciles a second of its own, competing with the transitions measured
        extra += ["--resync-seconds", f"{args.resync_seconds:g}"]
        if args.workers:
            extra += ["--workers", str(args.workers)]
        op = OperatorProcess(cluster, [ns], cp.state_dir / "operator.log", extra=tuple(extra))
        op.start()
        say(f"operator pid {op.proc.pid} live; log {op.log_path}")

        say("phase 1: one run")
        cluster.apply(manifest("solo", ns, args.iterations))
        runs.wait(["solo"], args.timeout)
        one = transitions(jobs, ["solo"], args.iterations)
        say(f"  1 run: {len(one)} transitions, p50 {pct(one, .5):.3f}s p99 {pct(one, .99):.3f}s max {max(one):.3f}s")

        time.sleep(2)
        before = api_requests(cluster)
        say(f"phase 2: {args.runs} runs at once")
        names = [f"r{i:03d}" for i in range(args.runs)]
        t0 = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "List", "items": [manifest(n, ns, args.iterations) for n in names]}))
        runs.wait(names, args.timeout)
        wall = time.monotonic() - t0
        time.sleep(2)
        after = api_requests(cluster)
        many = transitions(jobs, names, args.iterations)
        n_trans = len(many)
        say(f"  {args.runs} runs in {wall:.1f}s: {n_trans} transitions, p50 {pct(many, .5):.3f}s "
            f"p99 {pct(many, .99):.3f}s max {max(many):.3f}s mean {statistics.mean(many):.3f}s")
        rss = peak_rss_mb(op.proc.pid)
        result = {
            "runs": args.runs,
            "iterations": args.iterations,
            "transitions_1run": len(one),
            "p50_1run_s": round(pct(one, .5), 4),
            "p99_1run_s": round(pct(one, .99), 4),
            "transitions_100runs": n_trans,
            "p50_100runs_s": round(pct(many, .5), 4),
            "p99_100runs_s": round(pct(many, .99), 4),
            "max_100runs_s": round(max(many), 4),
            "wall_100runs_s": round(wall, 1),
            "api_requests_per_transition": round((after[0] - before[0]) / n_trans, 2),
            "sheepdog_api_requests_per_transition": round((after[1] - before[1]) / n_trans, 2),
            "operator_peak_rss_mb": round(rss, 1),
            "p99_under_1s_at_100_runs": pct(many, .99) < 1.0,
        }
        say(f"operator log: {op.log_path}")
        print(json.dumps(result), flush=True)
        return 0
    finally:
        for w in watches:
            w.stop.set()
        if op is not None:
            op.stop()
        cp.destroy()


if __name__ == "__main__":
    sys.exit(main())
