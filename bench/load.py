"""Load: many concurrent runs on many fake GPU nodes, on a real control plane (kwok runs the pods).

    .venv/bin/python bench/load.py [--runs 200] [--nodes 50] [--iterations 3]
                                   [--finished-runs 2000] [--foreign-pods 10000] [--job-history 2]

Same set-up as bench/transition_latency.py (whose watches and helpers it reuses): tests/cluster's
ControlPlane (etcd, kube-apiserver, controller-manager, scheduler, kwok with --nodes fake nodes
of 8 GPUs each), the SelfAlignmentRun CRD, a PVC, and `sheepdog operator` as a subprocess (INFO
logging, --test-pod-annotations so that kwok writes each stage's summary as the termination
message, exactly like tests/operator). The runs are tests/operator's run_manifest as it is:
1 GPU for synthesize and train, evaluation off, so 3 Jobs per iteration. All --runs runs are
created at once (one `kubectl create`); the load phase lasts until every run has finished.

Figures (all over the load phase, from creating the runs until the last one finished):
  - stage-transition latency p50/p99/max: bench/transition_latency.py's definition (arrival of
    the next stage's Job ADDED event - arrival of the event where the previous Job became
    Complete, both on this bench's own Job watch);
  - API requests per second, all clients: apiserver_request_total (no client label) summed
    before/after; the share on sheepdog.dev resources (the operator, plus this bench's one run
    watch); and the operator's own requests, exactly: the operator runs under its own client
    certificate (user sheepdog-operator, bound to cluster-admin) matched by a FlowSchema of its
    own on the `exempt` priority level (what its system:masters admin identity in the tests gets),
    so apiserver_flowcontrol_dispatched_requests_total{flow_schema="sheepdog-operator"} counts
    every request it sent (the operator's own /metrics export no request counter);
  - operator CPU: utime+stime of /proc/<pid>/stat before/after -> CPU-seconds and average cores;
    peak RSS: VmHWM at the end;
  - no lost status update: after all runs finished, every run is Succeeded with exactly
    --iterations records 1..N, each with the figures kwok wrote through the termination messages
    (tests/operator/conftest.py summary_for), every stage Succeeded with its Job and summary;
    any deviation counts in `lost_updates`. Exactly one Job per stage and iteration: a Job name
    seen with a second uid (re-created), a Job of a run that is not one of its expected stage
    Jobs, or a missing one, counts in `duplicate_jobs` (missing ones in `lost_updates`).
A shared cluster's history and neighbours, before the load phase (issue 24):
  - --finished-runs N runs that finished earlier, in the same namespace: created, then their
    status written as a Succeeded 3-iteration run's (the operator lists and caches them and must
    not reconcile them). Their Jobs are not simulated: a Job cannot be made Complete without
    running its pods, and with the default --job-history 2 a finished run keeps at most 6
    Jobs, which the cache holds without their pod templates;
  - --foreign-pods N pods of other workloads, in namespace `others`, with a scheduler name no
    scheduler serves (they stay Pending and cost the scheduler nothing): an operator that
    watched every pod would list and stream them all.
  - operator_peak_rss_mib: the operator's peak RSS (VmHWM) at the end.
The operator runs at the product's --job-history (default 2), so older iterations' Jobs are
deleted during the load; a Job counts as missing only if the watch never saw it.
The exit status is non-zero when any run failed or did not finish, or lost_updates or
duplicate_jobs is non-zero. The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transition_latency import (  # noqa: E402  (also puts the repository on sys.path)
    STAGES, JobWatch, RunWatch, pct, peak_rss_mb, say, transitions,
)
from tests.cluster.controlplane import ControlPlane, _openssl  # noqa: E402
from tests.cluster.fixture import Cluster  # noqa: E402
from tests.operator.conftest import CRD, OperatorProcess, metric_samples, run_manifest, summary_for  # noqa: E402

OPERATOR_USER = "sheepdog-operator"
GPUS_PER_NODE = 8  # tests/cluster/controlplane.py fake_gpu_node
PODS_PER_NODE = 110

# status.iterations[] record field <- summary field, per stage (tests/operator/test_operator_runs.py)
RECORD_FIGURES = {
    "synthesize": ("generated", "assessed", "parseFailures", "meanQuality", "meanFollowing"),
    "curate": ("kept", "keepRate"),
    "train": ("trainLoss",),
}


# --- the operator's own identity, so that the apiserver counts its requests apart ----------------

def operator_kubeconfig(cp: ControlPlane, cluster: Cluster) -> Path:
    """A client certificate for user sheepdog-operator (cluster-admin through a binding) and a
    FlowSchema for it on the exempt priority level; returns its kubeconfig."""
    pki = cp.pki
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-new", *ec, "-keyout", f"{OPERATOR_USER}.key", "-out", f"{OPERATOR_USER}.csr",
             "-subj", f"/O=sheepdog-bench/CN={OPERATOR_USER}", cwd=pki)
    (pki / f"{OPERATOR_USER}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", f"{OPERATOR_USER}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-out", f"{OPERATOR_USER}.crt", "-extfile", f"{OPERATOR_USER}.ext", cwd=pki)
    path = cp.state_dir / f"{OPERATOR_USER}.kubeconfig"
    cp._write_kubeconfig(path, OPERATOR_USER)
    cluster.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": OPERATOR_USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
    })
    cluster.apply({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": {"name": OPERATOR_USER},
        "spec": {
            "matchingPrecedence": 500,
            "priorityLevelConfiguration": {"name": "exempt"},
            "rules": [{
                "subjects": [{"kind": "User", "user": {"name": OPERATOR_USER}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                   "clusterScope": True, "namespaces": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    })
    return path


class _OperatorEnv:
    """What OperatorProcess needs of a Cluster (full_env), with the operator's own kubeconfig."""

    def __init__(self, cluster: Cluster, kubeconfig: Path):
        self.cluster, self.kubeconfig = cluster, kubeconfig

    def full_env(self) -> dict[str, str]:
        env = self.cluster.full_env()
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env


# --- measurements ---------------------------------------------------------------------------------

def apiserver_counts(cluster: Cluster) -> dict[str, dict]:
    """apiserver_request_total by (group, resource, verb) and the flowcontrol dispatch counts by
    flow schema, from kube-apiserver's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    requests: dict[tuple[str, str, str], float] = {}
    dispatched: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "apiserver_request_total":
                key = (s.labels.get("group") or "core", s.labels.get("resource") or "-", s.labels.get("verb", ""))
                requests[key] = requests.get(key, 0.0) + s.value
            elif s.name == "apiserver_flowcontrol_dispatched_requests_total":
                fs = s.labels.get("flow_schema", "")
                dispatched[fs] = dispatched.get(fs, 0.0) + s.value
    return {"requests": requests, "dispatched": dispatched}


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15 of stat(5)


class PendingPods(threading.Thread):
    """Samples the number of Pending pods (queued for GPUs or not yet scheduled) every few seconds."""

    def __init__(self, cluster: Cluster, namespace: str, every: float = 5.0):
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.every = cluster, namespace, every
        self.max_pending = self.max_unschedulable = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                pods = self.cluster.get_json("pods", "-n", self.namespace, "--field-selector", "status.phase=Pending")["items"]
            except Exception:  # noqa: BLE001 - a missed sample
                continue
            unsched = sum(any(c.get("reason") == "Unschedulable" for c in (p.get("status") or {}).get("conditions") or [])
                          for p in pods)
            self.max_pending = max(self.max_pending, len(pods))
            self.max_unschedulable = max(self.max_unschedulable, unsched)


# --- correctness ------------------------------------------------------------------------------------

def check_runs(cluster: Cluster, namespace: str, names: list[str], iterations: int,
               job_uids: dict[str, set[str]]) -> tuple[list[str], list[str], int]:
    """(lost-update violations, duplicate-Job violations, records with attempts > 1)."""
    runs = {r["metadata"]["name"]: r for r in cluster.get_json("selfalignmentruns", "-n", namespace)["items"]}
    jobs: dict[str, list[str]] = {}
    for j in cluster.get_json("jobs", "-n", namespace, "-l", "sheepdog.dev/run")["items"]:
        jobs.setdefault(j["metadata"]["labels"]["sheepdog.dev/run"], []).append(j["metadata"]["name"])
    summaries = {s: summary_for(s) for s in STAGES}
    lost: list[str] = []
    dup: list[str] = []
    retried = 0
    for name in names:
        run = runs.get(name)
        st = (run or {}).get("status") or {}
        if st.get("phase") != "Succeeded":
            lost.append(f"{name}: phase {st.get('phase')!r}")
        recs = st.get("iterations") or []
        if [r.get("iteration") for r in recs] != list(range(1, iterations + 1)):
            lost.append(f"{name}: iteration records {[r.get('iteration') for r in recs]}")
        for r in recs:
            n = r.get("iteration")
            for stage in STAGES:
                for fig in RECORD_FIGURES[stage]:
                    if r.get(fig) != summaries[stage][fig]:
                        lost.append(f"{name} i{n}: {fig} {r.get(fig)!r} != {summaries[stage][fig]!r}")
                srec = (r.get("stages") or {}).get(stage) or {}
                summ = srec.get("summary") or {}
                if srec.get("phase") != "Succeeded" or srec.get("job") != f"{name}-i{n}-{stage}" \
                        or summ.get("stage") != stage or summ.get("iteration") != n:
                    lost.append(f"{name} i{n} {stage}: stage record {json.dumps(srec)[:200]}")
                if (srec.get("attempts") or 1) > 1:
                    retried += 1
            if not (r.get("startedAt") and r.get("finishedAt")):
                lost.append(f"{name} i{n}: startedAt/finishedAt missing")
        expected = {f"{name}-i{n}-{s}" for n in range(1, iterations + 1) for s in STAGES}
        have = set(jobs.get(name, [])) | {j for j in job_uids if j.startswith(f"{name}-i")}
        for j in sorted(have - expected):
            dup.append(f"{name}: unexpected Job {j}")
        for j in sorted(expected - have):
            lost.append(f"{name}: Job {j} never created")
        for j in sorted(expected):
            if len(job_uids.get(j, ())) > 1:
                dup.append(f"{name}: Job {j} created {len(job_uids[j])} times (uids {sorted(job_uids[j])})")
    return lost, dup, retried


def operator_figures(op: OperatorProcess) -> dict[str, float]:
    samples = metric_samples(op.metrics())
    out = {"reconciles": 0.0, "jobs_created": 0.0, "conflicts": 0.0, "reconcile_errors": 0.0}
    for (name, labels), v in samples.items():
        lab = dict(labels)
        if name == "sheepdog_reconcile_duration_seconds_count":
            out["reconciles"] += v
        elif name == "sheepdog_reconcile_duration_seconds_sum":
            out["reconcile_seconds"] = out.get("reconcile_seconds", 0.0) + v
        elif name == "sheepdog_jobs_created_total":
            out["jobs_created"] += v
        elif name == "sheepdog_reconcile_errors_total":
            out["reconcile_errors"] += v
            if lab.get("reason") == "Conflict":
                out["conflicts"] += v
    return out


# --- a shared cluster's history and neighbours ---------------------------------------------------

def finished_status(iterations: int = 3) -> dict:
    """The status of a run that Succeeded long ago (what the operator would have written)."""
    at = "2026-01-01T00:00:00Z"
    summaries = {s: summary_for(s) for s in STAGES}
    recs = []
    for n in range(1, iterations + 1):
        rec = {"iteration": n, "startedAt": at, "finishedAt": at, "stages": {}}
        for stage in STAGES:
            rec.update({f: summaries[stage][f] for f in RECORD_FIGURES[stage]})
            rec["stages"][stage] = {"phase": "Succeeded", "job": f"x-i{n}-{stage}", "attempts": 1,
                                    "startedAt": at, "finishedAt": at}
        recs.append(rec)
    return {"phase": "Succeeded", "reason": "Completed", "message": "done", "iteration": iterations,
            "observedGeneration": 1, "iterations": recs,
            "conditions": [{"type": t, "status": v, "reason": "Completed", "message": "", "lastTransitionTime": at}
                           for t, v in (("Ready", "True"), ("Progressing", "False"))]}


def create_history(cluster: Cluster, namespace: str, finished_runs: int, foreign_pods: int) -> None:
    """--finished-runs and --foreign-pods (see the module docstring), in parallel requests."""
    import concurrent.futures

    from kubernetes import client, config

    api = config.new_client_from_config(str(cluster.kubeconfig))
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    status = finished_status()

    def one_run(i: int) -> None:
        body = run_manifest(f"h{i:04d}", namespace, iterations=3)
        custom.create_namespaced_custom_object("sheepdog.dev", "v1alpha1", namespace, "selfalignmentruns", body)
        custom.patch_namespaced_custom_object_status("sheepdog.dev", "v1alpha1", namespace, "selfalignmentruns",
                                                     f"h{i:04d}", {"status": status})

    def one_pod(i: int) -> None:
        core.create_namespaced_pod("others", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"other-{i:05d}", "labels": {"app": "someone-else"},
                         "annotations": {"note": "x" * 512}},
            "spec": {"schedulerName": "nobody", "containers": [{
                "name": "c", "image": "registry.example/other:1", "command": ["sleep", "infinity"],
                "env": [{"name": f"E{k}", "value": "y" * 64} for k in range(8)]}]}})

    t0 = time.monotonic()
    if foreign_pods:
        cluster.kubectl("create", "namespace", "others")
        cluster.wait_for("default ServiceAccount in others", lambda: cluster.kubectl(
            "get", "serviceaccount", "default", "-n", "others", check=False).returncode == 0, interval=0.2)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one_pod, range(foreign_pods)))
        list(pool.map(one_run, range(finished_runs)))
    say(f"history: {finished_runs} finished runs, {foreign_pods} foreign pods in {time.monotonic() - t0:.1f}s")


# --- main -------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=50, help=f"kwok nodes ({GPUS_PER_NODE} GPUs, {PODS_PER_NODE} pods each)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="operator --workers (default: its own)")
    ap.add_argument("--resync-seconds", type=float, default=60,
                    help="operator --resync-seconds (default 60, the operator's and the chart's; the tests run 10)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for all runs to finish")
    ap.add_argument("--finished-runs", type=int, default=0, help="runs that finished before the load (history)")
    ap.add_argument("--foreign-pods", type=int, default=0, help="pods of other workloads in the cluster")
    ap.add_argument("--job-history", default="2", help="operator --job-history (default 2, the product's)")
    args = ap.parse_args()

    gpu_capacity = args.nodes * GPUS_PER_NODE
    gpus_at_once = args.runs  # one stage Job per run at a time; synthesize/train ask for 1 GPU
    say(f"{args.runs} runs x {args.iterations} iterations on {args.nodes} nodes: {gpu_capacity} GPUs, "
        f"{args.nodes * PODS_PER_NODE} pods for at most {gpus_at_once} GPU pods at once"
        + ("" if gpus_at_once <= gpu_capacity else " -> GPU stages queue"))
    say(f"starting control plane ({args.nodes} kwok nodes)")
    t_setup = time.monotonic()
    cp = ControlPlane(nodes=args.nodes)
    op = None
    threads: list = []
    try:
        cp.start()
        cluster = Cluster(cp)
        n_nodes = len(cluster.get_json("nodes", "-l", "sheepdog.dev/gpu-node=true")["items"])
        say(f"control plane up after {time.monotonic() - t_setup:.1f}s with {n_nodes} Ready GPU nodes")
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        cluster.wait_established("selfalignmentruns.sheepdog.dev")  # kubectl wait fails on a CRD without conditions yet
        cluster.wait_for("CRD discovery", lambda: cluster.kubectl("get", "selfalignmentruns", "-A", check=False).returncode == 0)
        ns = "bench"
        cluster.kubectl("create", "namespace", ns)
        cluster.wait_for("default ServiceAccount", lambda: cluster.kubectl(
            "get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0, interval=0.2)
        cluster.create_pvc(ns, "sheepdog-data")
        kubeconfig = operator_kubeconfig(cp, cluster)
        create_history(cluster, ns, args.finished_runs, args.foreign_pods)

        jobs, runs = JobWatch(str(cp.kubeconfig), ns), RunWatch(str(cp.kubeconfig), ns)
        pending = PendingPods(cluster, ns)
        threads = [jobs, runs, pending]
        for t in threads:
            t.start()
        jobs.ready.wait(30)

        extra = ["--log-level", "INFO"]  # the tests' DEBUG logging costs CPU at this scale
        # the deployed resync interval, not the tests' 10 s: at 200 runs a 10 s resync is 20
        # reconciles a second of its own, competing with the transitions measured
        extra += ["--resync-seconds", f"{args.resync_seconds:g}", "--job-history", args.job_history]
        if args.workers:
            extra += ["--workers", str(args.workers)]
        op = OperatorProcess(_OperatorEnv(cluster, kubeconfig), [ns], cp.state_dir / "operator.log", extra=tuple(extra))
        op.start(timeout=600)  # 2000 listed runs on a loaded machine can take over a minute
        pid = op.proc.pid
        say(f"operator pid {pid} live as user {OPERATOR_USER}; log {op.log_path}")

        time.sleep(2)
        names = [f"r{i:03d}" for i in range(args.runs)]
        before = apiserver_counts(cluster)
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        say(f"load: creating {args.runs} runs at once")
        cluster.kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "List", "items": [run_manifest(n, ns, iterations=args.iterations) for n in names]}),
            timeout=600)
        say(f"  created in {time.monotonic() - t0:.1f}s")
        deadline = t0 + args.timeout
        last = 0.0
        while time.monotonic() < deadline:
            phases = [runs.phase.get(n, "") for n in names]
            done = sum(p in ("Succeeded", "Failed") for p in phases)
            if time.monotonic() - last > 15:
                say(f"  {done}/{len(names)} runs finished, {len(jobs.added)} Jobs, operator CPU "
                    f"{cpu_seconds(pid) - cpu0:.1f}s, {pending.max_pending} max pending pods so far")
                last = time.monotonic()
            if done == len(names):
                break
            if op.proc.poll() is not None:
                say(f"operator exited with {op.proc.returncode}")
                break
            time.sleep(0.5)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0 if op.proc.poll() is None else float("nan")
        after = apiserver_counts(cluster)
        rss = peak_rss_mb(pid) if op.proc.poll() is None else float("nan")
        finished = sum(runs.phase.get(n) in ("Succeeded", "Failed") for n in names)
        failed = [n for n in names if runs.phase.get(n) == "Failed"]
        say(f"load phase: {finished}/{len(names)} finished ({len(failed)} failed) in {wall:.1f}s")

        reqs = diff(after["requests"], before["requests"])
        disp = diff(after["dispatched"], before["dispatched"])
        total = sum(reqs.values())
        ours = sum(v for (g, _, _), v in reqs.items() if g == "sheepdog.dev")
        op_reqs = disp.get(OPERATOR_USER)
        say(f"API requests in the load phase: {total:.0f} ({total / wall:.1f}/s); sheepdog.dev {ours:.0f}; "
            f"operator's own (flow schema {OPERATOR_USER}) {op_reqs}")
        by_resource: dict[str, float] = {}
        for (g, r, v), n in reqs.items():
            by_resource[f"{g}/{r} {v}"] = by_resource.get(f"{g}/{r} {v}", 0.0) + n
        for k, n in sorted(by_resource.items(), key=lambda kv: -kv[1])[:15]:
            say(f"    {n:8.0f}  {k}")
        say("  dispatched by flow schema: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(disp.items(), key=lambda kv: -kv[1])))

        lat = transitions(jobs, names, args.iterations)
        if lat:
            say(f"transitions: {len(lat)}, p50 {pct(lat, .5):.3f}s p99 {pct(lat, .99):.3f}s max {max(lat):.3f}s "
                f"mean {statistics.mean(lat):.3f}s")
        lost, dup, retried = check_runs(cluster, ns, names, args.iterations, jobs.uids)
        for v in (lost + dup)[:20]:
            say(f"  VIOLATION {v}")
        say(f"lost updates: {len(lost)}, duplicate Jobs: {len(dup)}, stage records with attempts > 1: {retried}")
        say(f"operator peak RSS {rss:.1f} MiB, CPU {cpu:.1f} s")
        try:  # a busy operator may answer /metrics late; the figures above stand without it
            figs = operator_figures(op) if op.proc.poll() is None else {}
        except OSError as exc:
            say(f"operator /metrics: {exc}")
            figs = {}
        log = op.log()
        tracebacks = log.count("Traceback")
        say(f"operator: {figs}; log: {tracebacks} tracebacks, {log.count('conflict (')} conflicts logged, "
            f"{log.count('created Job')} 'created Job' lines; pending pods max {pending.max_pending} "
            f"(unschedulable max {pending.max_unschedulable})")
        say(f"operator log: {op.log_path}")

        n_trans = len(lat)
        result = {
            "runs": args.runs,
            "nodes": args.nodes,
            "iterations": args.iterations,
            "finished_runs": finished,
            "failed_runs": len(failed),
            "transitions": n_trans,
            "latency_p50_s": round(pct(lat, .5), 4),
            "latency_p99_s": round(pct(lat, .99), 4),
            "latency_max_s": round(max(lat), 4) if lat else None,
            "api_requests_per_s": round(total / wall, 1),
            "sheepdog_api_requests_per_s": round(ours / wall, 1),
            "operator_api_requests_per_s": round(op_reqs / wall, 1) if op_reqs is not None else None,
            "api_requests_per_transition": round(total / n_trans, 2) if n_trans else None,
            "operator_api_requests_per_transition": round(op_reqs / n_trans, 2) if n_trans and op_reqs is not None else None,
            "operator_cpu_seconds": round(cpu, 1),
            "operator_cpu_cores_avg": round(cpu / wall, 3),
            "finished_runs_in_history": args.finished_runs,
            "foreign_pods": args.foreign_pods,
            "operator_peak_rss_mib": round(rss, 1),
            "operator_reconciles": int(figs.get("reconciles", 0)),
            "operator_conflicts": int(figs.get("conflicts", 0)),
            "operator_reconcile_errors": int(figs.get("reconcile_errors", 0)),
            "operator_tracebacks": tracebacks,
            "gpu_capacity": gpu_capacity,
            "max_pending_pods": pending.max_pending,
            "max_unschedulable_pods": pending.max_unschedulable,
            "stage_records_retried": retried,
            "lost_updates": len(lost),
            "duplicate_jobs": len(dup),
            "wall_s": round(wall, 1),
        }
        print(json.dumps(result), flush=True)
        ok = finished == len(names) and not failed and not lost and not dup
        return 0 if ok else 1
    finally:
        for t in threads:
            t.stop.set()
        if op is not None:
            op.stop()
        cp.destroy()


if __name__ == "__main__":
    sys.exit(main())
