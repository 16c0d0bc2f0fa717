"""The chart's operator Deployment run for real, and a run of it in containers: `helm install`
of charts/sheepdog with the images scripts/build-images makes, its pods steered to the real node
(tests/cluster/realnode.py), where they run in containers (containerd, runc) under Pod Security
"restricted". One node start and one release serve both tests (the CPU worker image's import
into the node's containerd is most of the module's set-up).

1. The operator reaches the API server the way it does on any cluster, as its ServiceAccount
   through the `kubernetes` Service (the real node routes that address to the API server:
   RealNode._route_api_service), takes the leader Lease, and its /metrics answers through the
   API server's service proxy (refused there: no credential is forwarded) and to an authorized
   token. Uninstalling and stopping the node leaves the host as it was.
2. examples/quickstart.yaml, made small (real_run.SMALL: one iteration, tiny sizes, `engine:
   auto` as shipped), Succeeds with every stage Job's pod in the CPU worker image on the real
   node: what `make cluster-demo` runs, in make test's budget (the full quickstart is
   tests/chart/test_real_node_run.py, bulk).

The images are built, or reused from buildah's layer cache, by scripts/build-images; the
operator's OCI archive is kept in the image cache and rewritten only when the image changed (a
new commit changes its revision label), the CPU worker's (several GB) goes to a temporary
directory (or SHEEPDOG_WORKER_ARCHIVE_DIR) and is deleted once imported. Needs root, buildah,
debootstrap and the real node's binaries.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.chart import real_run
from tests.chart.e2e import RESTRICTED, create_namespace, delete_namespace, installed_release, unique, wait_phase
from tests.cluster import realnode
from tests.operator.test_end_to_end import tiny_model  # noqa: F401 (a fixture)

# The first build on a machine makes the Debian base (debootstrap), the operator's venv and the
# CPU worker's (vLLM's CPU build, torch, DeepSpeed); the set-up then imports the worker image
# (3.6 GB) into the node: all of it inside the first test's timeout.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(3600)]

REPOSITORY = real_run.OPERATOR_REPOSITORY


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """(operator archive, worker archive): the operator's kept in the image cache, where
    tests/images/test_build_images.py keeps it too (one copy, rewritten when the image changed);
    the worker's in a temporary directory unless SHEEPDOG_WORKER_ARCHIVE_DIR names one."""
    if os.geteuid() != 0:
        pytest.skip("the real node and buildah's storage need root")
    missing = [t for t in ("buildah", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.fail(f"needs {' '.join(missing)}: run scripts/setup-debian", pytrace=False)
    operator = real_run.build_image("operator", real_run.IMAGE_CACHE, timeout=1500)
    tmp = tmp_path_factory.mktemp("worker-image")
    out, keep = real_run.worker_archive_dir(tmp)
    worker = real_run.build_image("worker-cpu", out)
    facts = {"operator": real_run.archive_facts(operator), "worker": real_run.archive_facts(worker)}
    yield operator, worker, keep, facts
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def release(cluster, archives, tmp_path_factory):
    """The real node up with both images imported, and the chart installed with them: 2
    operator replicas with leader election (the default), in a namespace enforcing "restricted"
    (`helm install --wait` returns once both are Ready). Uninstalled, the node stopped and the
    host checked at the end (real_run.real_node_up)."""
    operator, worker, keep, _ = archives
    timings: dict[str, float] = {}
    with real_run.real_node_up(cluster, [operator, worker], timings):
        if not keep:
            worker.unlink()  # several GB, in containerd's store now
        t1 = time.monotonic()
        with installed_release(cluster, tmp_path_factory.mktemp("release"), "sdreal",
                               real_run.chart_values(replicas=2)) as rel:
            timings["helm install --wait"] = time.monotonic() - t1
            rel.extra["selector"] = ",".join(f"{k}={v}" for k, v in
                                    rel.get("Deployment")["spec"]["selector"]["matchLabels"].items())
            rel.extra["timings"] = timings
            try:
                yield rel
            finally:  # real_run.metrics_reader_token's binding (cluster-scoped)
                cluster.kubectl("delete", "clusterrolebinding", f"{rel.namespace}-scraper", "--ignore-not-found",
                                check=False)


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def print_operator_logs(cluster, namespace: str, selector: str) -> None:
    """The operator pods' logs (the last container and the one before) for a failure report:
    they go with the node."""
    for pod in cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]:
        name = pod["metadata"]["name"]
        for extra in ((), ("--previous",)):
            res = cluster.kubectl("logs", "-n", namespace, name, "--tail=60", *extra, check=False)
            print(f"----- {name} {' '.join(extra)}\n{res.stdout}{res.stderr}")


def test_the_charts_operator_runs_on_the_real_node_and_leads(cluster, release, archives):
    digest, image_user = archives[3]["operator"]
    uid, _, gid = image_user.partition(":")
    try:
        check_release(cluster, release, release.extra["selector"], digest, uid, gid, release.extra["timings"])
    except BaseException:
        print_operator_logs(cluster, release.namespace, release.extra["selector"])
        raise


def check_release(cluster, rel, selector: str, digest: str, uid: str, gid: str, timings: dict) -> None:
    """What the test asserts of the running release (the node up, the release installed)."""
    ns = rel.namespace
    # helm's --wait already waited for the Deployment; waited for here too, pod by pod, so that
    # this does not depend on what helm's readiness check counts.
    pods = cluster.wait_for("both operator pods Ready", lambda: (
        p := cluster.get_json("pods", "-n", ns, "-l", selector)["items"]) and len(p) == 2
        and all(ready(x) for x in p) and p, timeout=120)
    names = {p["metadata"]["name"] for p in pods}
    for pod in pods:
        spec, status = pod["spec"], pod["status"]
        assert spec["nodeName"] == realnode.NODE_NAME
        (cs,) = status["containerStatuses"]
        # The imported image, by the manifest digest a registry would serve it under.
        assert cs["imageID"] == f"{REPOSITORY}@{digest}", cs
        assert cs["restartCount"] == 0, cs
        sc = spec["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    ns_labels = cluster.get_json("namespace", ns)["metadata"]["labels"]
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"

    # Inside a container (API server -> kubelet -> containerd): the image's user, a
    # read-only root, and the ServiceAccount's in-cluster address.
    code = ("import os\n"
            "try:\n    open('/x', 'w')\nexcept OSError as e:\n    root = 'read-only' if e.errno == 30 else str(e)\n"
            "else:\n    root = 'writable'\n"
            "print(os.getuid(), os.getgid(), root, os.environ['KUBERNETES_SERVICE_HOST'],"
            " os.environ['KUBERNETES_SERVICE_PORT'])")
    out = cluster.kubectl("exec", "-n", ns, sorted(names)[0], "-c", "operator", "--",
                          "python", "-c", code).stdout.split()
    assert out == [uid, gid, "read-only", "10.96.0.1", str(realnode.API_SERVICE_PORT)], out

    # The operator talked to the API server from its pod: one replica holds the Lease.
    lease_name = rel.get("Deployment")["metadata"]["name"]
    t2 = time.monotonic()
    holder = cluster.wait_for("a replica to hold the leader Lease", lambda: cluster.get_json(
        "lease", lease_name, "-n", ns).get("spec", {}).get("holderIdentity"), timeout=120)
    timings["Lease taken, after install"] = time.monotonic() - t2
    # leader.identity(): the pod's host name (its name), an underscore, a random suffix.
    assert holder.rsplit("_", 1)[0] in names, (holder, names)

    # Its metrics (HTTPS for authorized tokens: metrics.secure, the chart's default). Through
    # the API server's service proxy (no kube-proxy here: the API server dials an endpoint's
    # pod IP on the bridge itself), which authenticates its caller and forwards no credential:
    # the operator refuses the request.
    service = rel.get("Service")["metadata"]["name"]
    answers: list = []  # the last answer goes into the failure's message

    def proxied():
        r = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/services/https:{service}:metrics/proxy/metrics",
                            check=False)
        answers[:] = [(r.returncode, r.stdout[:300], r.stderr[:600])]
        # a 401 through the proxy: kubectl says "Unauthorized", or (1.37) "the server has asked
        # for the client to provide credentials"
        return r if r.returncode != 0 and ("Unauthorized" in r.stderr or "provide credentials" in r.stderr) else None

    try:
        refused = cluster.wait_for("the operator's HTTPS metrics through its Service", proxied, timeout=60)
    except BaseException as exc:  # noqa: BLE001 - pytest.fail; re-raised with what the proxy answered
        raise AssertionError(f"{exc}; last answer (rc, stdout, stderr): {answers}") from exc
    assert "sheepdog_" not in refused.stdout
    # With the token of a ServiceAccount bound to the chart's metrics-reader role, from inside
    # the operator's pod (its image's Python), verifying the certificate with the Secret's CA
    # for the Service's name: the operator's TokenReview and SubjectAccessReview, for real.
    fullname = rel.get("Deployment")["metadata"]["name"]
    token = real_run.metrics_reader_token(cluster, ns, fullname)
    tls = cluster.get_json("secret", f"{fullname}-metrics-tls", "-n", ns)
    fetch = ("import base64, http.client, socket, ssl, sys\n"
             "ctx = ssl.create_default_context(cadata=base64.b64decode(sys.argv[1]).decode())\n"
             "sock = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[3]))), server_hostname=sys.argv[2])\n"
             "conn = http.client.HTTPConnection('127.0.0.1')\nconn.sock = sock\n"
             "conn.request('GET', '/metrics', headers={'Authorization': 'Bearer ' + sys.argv[4]})\n"
             "r = conn.getresponse()\nprint(r.status)\nprint(r.read().decode())")
    out = cluster.kubectl("exec", "-n", ns, holder.rsplit("_", 1)[0], "-c", "operator", "--", "python", "-c", fetch,
                          tls["data"]["ca.crt"], f"{service}.{ns}.svc", str(rel.values["operator"]["metricsPort"]),
                          token).stdout
    status, _, metrics = out.partition("\n")
    assert status == "200", out[:2000]
    series = {line.split("{")[0].split()[0] for line in metrics.splitlines()
              if line and not line.startswith("#")}
    # Present from the start in either replica (Metrics.start), before any run.
    assert {"sheepdog_jobs_created_total", "sheepdog_runs_stuck"} <= series, sorted(series)[:60]
    # The standby did not take over meanwhile.
    assert cluster.get_json("lease", lease_name, "-n", ns)["spec"]["holderIdentity"] == holder


def test_a_small_quickstart_succeeds_in_worker_containers_on_the_real_node(cluster, release, archives, tmp_path,
                                                                             tiny_model):  # noqa: F811
    """examples/quickstart.yaml with real_run.SMALL applied, as `make cluster-demo` applies the
    quickstart: its claim a hostPath PersistentVolume holding the tiny model, every stage
    steered to the real node; the chart's operator (the leader of the two replicas) creates
    the Jobs, whose pods run the stage programs in the CPU worker image."""
    facts = archives[3]
    w_digest, w_user = facts["worker"]
    worker_id = f"{real_run.WORKER_REPOSITORY}@{w_digest}"
    run = "quickstart"
    manifest = real_run.on_real_node(real_run.quickstart(real_run.SMALL))
    assert manifest["metadata"]["name"] == run and manifest["spec"]["engine"] == "auto"
    claim = real_run.fill_claim(tmp_path / "volume", w_user, model=Path(tiny_model).resolve())
    ns = create_namespace(cluster, unique("realrun"), RESTRICTED)
    try:
        for obj in real_run.storage_objects(ns, claim):
            cluster.apply(obj)
        t0 = time.monotonic()
        cluster.apply(manifest, namespace=ns)
        status = wait_phase(cluster, ns, run, ("Succeeded", "Failed"), timeout=2400)
        print(f"\nrun applied -> {status['phase']} in {time.monotonic() - t0:.1f}s")
        real_run.check_run(cluster, ns, run, 1, status, claim, worker_id, w_user)
        # The operator: both replicas Ready, never restarted, in the operator image.
        op_id = f"{REPOSITORY}@{facts['operator'][0]}"
        for pod in cluster.get_json("pods", "-n", release.namespace, "-l", release.extra["selector"])["items"]:
            (cs,) = pod["status"]["containerStatuses"]
            assert ready(pod) and pod["spec"]["nodeName"] == realnode.NODE_NAME, pod["metadata"]["name"]
            assert (cs["imageID"], cs["restartCount"]) == (op_id, 0), cs
        # Its metrics, scraped through its Service as Prometheus would: the run's transitions.
        fullname = release.get("Deployment")["metadata"]["name"]
        texts = real_run.scrape_metrics(cluster, release.namespace, release.get("Service")["metadata"]["name"],
                                        real_run.metrics_ca(cluster, release.namespace, fullname),
                                        real_run.metrics_reader_token(cluster, release.namespace, fullname))
        assert len(texts) == 2  # both replicas behind the Service
        real_run.check_metrics(texts, ns, run, 1)
    except BaseException:
        real_run.print_stage_logs(cluster, ns, run)
        print_operator_logs(cluster, release.namespace, release.extra["selector"])
        raise
    finally:
        delete_namespace(cluster, ns)
