"""`sheepdog operator`: Kopf, embedded, driving SelfAlignmentRuns.

    sheepdog operator [--namespace NS ...] [--metrics-port 8080] [--liveness-port 8081]
                      [--worker-image IMG] [--workers 16] [--resync-seconds 60]

All namespaces by default (Kopf clusterwide), or only the given ones. Credentials (transport.py,
for our requests and Kopf's watches alike): --kubeconfig or $KUBECONFIG when set, else the
in-cluster service account when in a pod, else ~/.kube/config.

Kopf runs standalone (no peering objects) with on.event handlers only (handlers.py): no
finalizers, no progress annotations. With --leader-election (the chart's default, two replicas)
only the replica holding a coordination.k8s.io Lease reconciles (leader.py); the other keeps its
watches and cache and takes over when the Lease goes unrenewed.
Its watch streams are bounded (server_timeout) and checked for silence (client_timeout,
inactivity_timeout), so a stalled stream is dropped and re-established instead of hanging
the operator; the periodic resync covers anything missed meanwhile.

Endpoints: Kopf's liveness probe on --liveness-port (GET /healthz), Prometheus metrics on
--metrics-port (GET /metrics): HTTPS for authorized bearer tokens only with --metrics-cert-dir
(metrics_auth.py), plain HTTP without it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import socket
import sys
from typing import Any, Mapping, Optional, Sequence

from sheepdog.logformat import FORMATS
from sheepdog.logformat import configure as configure_logging

log = logging.getLogger("sheepdog.operator")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sheepdog operator", description="Run the SelfAlignmentRun operator.")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable, or comma-separated); default: all")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (the default)")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("SHEEPDOG_METRICS_PORT", 8080)),
                   help="Prometheus /metrics port (0: off; default 8080)")
    p.add_argument("--metrics-address", default=os.environ.get("SHEEPDOG_METRICS_ADDRESS", "0.0.0.0"))
    p.add_argument("--metrics-cert-dir", default=os.environ.get("SHEEPDOG_METRICS_CERT_DIR") or None,
                   help="serve /metrics over HTTPS with tls.crt and tls.key of this directory (a "
                   "mounted kubernetes.io/tls Secret), only to bearer tokens allowed `get` on "
                   "/metrics (TokenReview, SubjectAccessReview; metrics_auth.py). Unset: plain "
                   "HTTP, no authentication (the chart sets it unless metrics.secure is false)")
    p.add_argument("--liveness-port", type=int, default=int(os.environ.get("SHEEPDOG_LIVENESS_PORT", 8081)),
                   help="liveness endpoint port, GET /healthz (0: off; default 8081)")
    p.add_argument("--liveness-address", default=os.environ.get("SHEEPDOG_LIVENESS_ADDRESS", "0.0.0.0"))
    p.add_argument("--worker-image", default=os.environ.get("SHEEPDOG_WORKER_IMAGE", ""),
                   help="default image of stage Jobs (a stage's own `image` wins; default: "
                   "ghcr.io/sheepdog-dev/sheepdog-worker:<version>)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("SHEEPDOG_WORKERS", 16)),
                   help="reconciles running at once (threads; default 16)")
    p.add_argument("--resync-seconds", type=float, default=float(os.environ.get("SHEEPDOG_RESYNC_SECONDS", 60)),
                   help="reconcile every run this often regardless of events (default 60)")
    p.add_argument("--watch-timeout", type=float, default=float(os.environ.get("SHEEPDOG_WATCH_TIMEOUT", 300)),
                   help="server-side limit of one watch request, seconds (default 300)")
    p.add_argument("--job-history", default=os.environ.get("SHEEPDOG_JOB_HISTORY", "2"),
                   help="keep the finished stage Jobs of this many latest iterations per run, older "
                   "ones are deleted once the run's status holds their outcome (`all`: keep every "
                   "Job; default 2: the running iteration and the one before, for kubectl logs)")
    p.add_argument("--event-ttl-seconds", type=float, default=float(os.environ.get("SHEEPDOG_EVENT_TTL_SECONDS", 3600)),
                   help="the API server's --event-ttl (default 1h): an Event owed by a crashed "
                   "process is posted again only while younger than this, never twice")
    p.add_argument("--leader-election", action="store_true",
                   default=os.environ.get("SHEEPDOG_LEADER_ELECTION") == "1",
                   help="reconcile only while holding a coordination.k8s.io Lease (for several "
                   "replicas; the chart turns it on)")
    p.add_argument("--leader-election-namespace", default=os.environ.get("POD_NAMESPACE", ""),
                   help="namespace of the Lease (default: $POD_NAMESPACE)")
    p.add_argument("--leader-election-id", default="sheepdog-operator", help="name of the Lease")
    p.add_argument("--log-level", default=os.environ.get("SHEEPDOG_LOG_LEVEL", "INFO"))
    p.add_argument("--log-format", choices=FORMATS, default=os.environ.get("SHEEPDOG_LOG_FORMAT", "text"),
                   help="text, or json: one JSON object per line (time, level, logger, message, ...)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    # Test-only (tests/cluster with kwok); see pod_passthrough.passthrough_annotations.
    p.add_argument("--test-pod-annotations", action="store_true",
                   default=os.environ.get("SHEEPDOG_TEST_POD_ANNOTATIONS") == "1", help=argparse.SUPPRESS)
    p.add_argument("--test-exit-after-status-write", default="", metavar="REASON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        from sheepdog.kube.job_cleanup import parse_keep

        args.job_history = parse_keep(args.job_history)
    except ValueError as exc:
        p.error(f"--job-history: {exc}")
    if args.leader_election and not args.leader_election_namespace:
        p.error("--leader-election needs --leader-election-namespace (or $POD_NAMESPACE)")
    args.namespaces = sorted({n.strip() for v in args.namespace for n in v.split(",") if n.strip()})
    if args.all_namespaces:
        args.namespaces = []
    return args


def configure_settings(settings: Any, args: argparse.Namespace) -> None:
    """Kopf settings (see the module docstring)."""
    from sheepdog.kube.client import FAILED_CREATE_EVENTS, LIST_PAGE_SIZE

    # Watch streams: the server ends each after watch-timeout; the client gives up on a stream
    # that has not finished 60 s after that; connecting must succeed within 15 s; a stream
    # silent for longer than the bookmark period plus jitter is dropped.
    settings.watching.server_timeout = int(args.watch_timeout)  # the API server wants an integer
    settings.watching.client_timeout = args.watch_timeout + 60
    settings.watching.connect_timeout = 15
    settings.watching.reconnect_backoff = 1.0
    settings.watching.inactivity_timeout = 90
    # Jobs and pods: only ours, filtered by the API server. The handlers' `labels=` filters are
    # client-side: without these selectors the first LIST and the watch of pods would carry every
    # pod of a shared cluster, spec and all, into the operator.
    settings.watching.label_selectors["batch", "jobs"] = "sheepdog.dev/run"
    settings.watching.label_selectors["", "v1", "pods"] = "sheepdog.dev/run"
    # The first LIST of each watched kind comes in pages, not as one response of every object.
    settings.watching.chunk_size = LIST_PAGE_SIZE
    # Events: only the Job controller's FailedCreate (why a stage Job has no pods; stuck.py),
    # watched into the cache instead of a LIST per reconcile of such a Job.
    settings.watching.field_selectors["", "v1", "events"] = FAILED_CREATE_EVENTS
    # Our own Events (events.py) say what happens; Kopf posts only its warnings and errors.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "sheepdog-operator"
    settings.posting.reporting_instance = socket.gethostname()[:128]
    # Sync handlers (login, probe) use Kopf's executor; reconciles use ours (same size).
    settings.execution.max_workers = max(4, args.workers)
    # Each run is handled by our own queue; Kopf's per-object workers idle out quickly.
    settings.queueing.idle_timeout = 10.0


async def run_operator(args: argparse.Namespace, stop_flag: Optional[asyncio.Event] = None) -> None:
    import kopf
    from sheepdog.kube.client import Kube
    from sheepdog.kube.handlers import Dispatcher, register
    from sheepdog.kube.metrics import Metrics
    from sheepdog.kube.metrics_auth import serve_metrics
    from sheepdog.kube.reconcile import Options, Reconciler
    from sheepdog.kube.transport import ConfigError, load_credentials

    try:
        credentials = load_credentials(args.kubeconfig)
    except ConfigError as exc:
        raise SystemExit(f"no credentials for the API server: {exc}") from None
    metrics = Metrics()
    metrics.start(args.namespaces)  # every series an alert or the dashboard reads, from the start
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="reconcile")
    kube = Kube(credentials, pool_size=args.workers + 4)
    if args.metrics_port:
        try:
            serve_metrics(metrics.registry, args.metrics_address, args.metrics_port, args.metrics_cert_dir,
                          api=lambda method, path, body: kube.request(method, path, body=body))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--metrics-cert-dir: {exc}") from None
        scheme = "https" if args.metrics_cert_dir else "http"
        log.info("metrics on %s://%s:%d/metrics%s", scheme, args.metrics_address, args.metrics_port,
                 " (bearer tokens allowed get /metrics only)" if args.metrics_cert_dir else "")
    options = Options(
        image_defaults=image_defaults(args),
        guardrails=guardrails(),
        test_pod_annotations=args.test_pod_annotations,
        instance=socket.gethostname()[:128],
        progress_interval=args.resync_seconds,  # one log read per running train per resync
        job_history=args.job_history,
        event_ttl=args.event_ttl_seconds,
        test_exit_after_status_write=args.test_exit_after_status_write,
        stage_cache=True,  # runs opt out with spec.stageCache: false (docs/stage-cache.md)
    )
    if args.test_pod_annotations:
        log.warning("test mode: copying sheepdog.test/* pod annotations from runs into their Jobs")
    reconciler = Reconciler(kube, metrics, options)
    dispatcher = Dispatcher(reconciler, executor)

    registry = kopf.OperatorRegistry()

    # Kopf's watches use the same credentials as our requests (never a client library's login:
    # see main()); Kopf calls this again after a 401, and the token is read afresh.
    @kopf.on.login(registry=registry)
    def login(**_: Any) -> Any:
        return credentials.connection_info()

    register(registry, dispatcher, args.resync_seconds)
    # SelfAlignmentSweeps: their own queue beside the runs', leading when the runs' does (sweeps.py)
    from sheepdog.kube import sweeps

    sweep_dispatcher, sweep_reconciler = sweeps.start(registry, kube, executor, dispatcher, options.instance)
    settings = kopf.OperatorSettings()
    configure_settings(settings, args)

    liveness = None
    if args.liveness_port:
        liveness = f"http://{args.liveness_address}:{args.liveness_port}/healthz"
    scope = f"namespaces {', '.join(args.namespaces)}" if args.namespaces else "all namespaces"
    log.info("sheepdog operator starting: %s, %d workers, resync every %gs", scope, args.workers, args.resync_seconds)

    resync = asyncio.create_task(
        dispatcher.resync_forever(args.namespaces, args.resync_seconds, concurrency=args.workers), name="resync"
    )
    tasks = [resync, asyncio.create_task(sweeps.resync_forever(sweep_dispatcher, sweep_reconciler, args.namespaces,
                                                               args.resync_seconds), name="sweep-resync")]
    if args.leader_election:
        from sheepdog.kube.leader import LeaderElector, exit_now

        elector = LeaderElector(kube, args.leader_election_namespace, args.leader_election_id)
        dispatcher.leading = lambda: elector.leading

        async def lead() -> None:
            dispatcher.lead(args.namespaces, args.workers)

        tasks.append(asyncio.create_task(elector.run(lead, exit_now), name="leader-election"))
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=not args.namespaces,
            namespaces=args.namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
        )
    finally:
        for task in reversed(tasks):  # the Lease is given up first
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        executor.shutdown(wait=False, cancel_futures=True)


def image_defaults(args: argparse.Namespace, environ: Optional[Mapping[str, str]] = None) -> Any:
    """Stage Job defaults: SHEEPDOG_WORKER_DEFAULTS (JSON, set by the Helm chart: image, GPU
    node selector, tolerations, pull settings, Kueue queue, the runs' NetworkPolicy), with
    --worker-image on top."""
    from sheepdog.kube.jobs import ImageDefaults

    raw = (os.environ if environ is None else environ).get("SHEEPDOG_WORKER_DEFAULTS", "").strip()
    try:
        mapping = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"SHEEPDOG_WORKER_DEFAULTS is not valid JSON: {exc}") from None
    if not isinstance(mapping, dict):
        raise SystemExit("SHEEPDOG_WORKER_DEFAULTS must be a JSON object")
    if args.worker_image:
        mapping["image"] = args.worker_image
    try:
        return ImageDefaults.coerce(mapping)
    except ValueError as exc:  # e.g. an egress CIDR that is no network
        raise SystemExit(f"SHEEPDOG_WORKER_DEFAULTS: {exc}") from None


def guardrails(environ: Optional[Mapping[str, str]] = None) -> Any:
    """The admin guardrails runs are checked against: SHEEPDOG_GUARDRAILS (JSON, the chart's
    `guardrails` values; sheepdog.guardrails). Unset: only hostPath volumes are refused."""
    from sheepdog.guardrails import Guardrails, GuardrailsError

    try:
        return Guardrails.coerce((os.environ if environ is None else environ).get("SHEEPDOG_GUARDRAILS"))
    except GuardrailsError as exc:
        raise SystemExit(f"SHEEPDOG_GUARDRAILS: {exc}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    from sheepdog.redaction import redact_logs

    # The operator talks to the API server through kube/transport.py only, but Kopf imports the
    # `kubernetes` package's models whenever it is installed (kopf/_cogs/helpers/thirdparty.py):
    # about 67 MB resident for nothing. A None entry in sys.modules makes `import kubernetes`
    # fail as if it were absent (the import system's documented behaviour), so Kopf skips it.
    # Here in the process's entry, not at module import: a test importing this module in-process
    # keeps its own use of the package.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format, sys.stderr)
    # a failing stage's message, an API error body: no credential reaches the log (redaction.py)
    redact_logs()
    # Kopf logs every handler call at INFO; its warnings are what matter.
    logging.getLogger("kopf").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("kopf.activities.startup").setLevel(logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # every liveness probe
    try:
        asyncio.run(run_operator(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
