"""The chart's operator Deployment run for real: `helm install` of charts/sheepdog with the
operator image scripts/build-images makes, its pods steered to the real node
(tests/cluster/realnode.py), where they run in containers (containerd, runc) under Pod
Security "restricted". The operator reaches the API server the way it does on any cluster, as
its ServiceAccount through the `kubernetes` Service (the real node routes that address to the
API server: RealNode._route_api_service), takes the leader Lease, and its /metrics answers
through the API server's service proxy. Uninstalling and stopping the node leaves the host as
it was.

The image is built, or reused from buildah's layer cache, by scripts/build-images --only
operator; its OCI archive is rewritten only when the image changed (a new commit changes its
revision label). Needs root, buildah, debootstrap and the real node's binaries.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.chart import real_run
from tests.chart.e2e import installed_release
from tests.cluster import realnode

# The first build on a machine makes the Debian base (debootstrap) and the operator's venv.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1800)]

REPOSITORY = real_run.OPERATOR_REPOSITORY


@pytest.fixture(scope="module")
def operator_archive() -> Path:
    if os.geteuid() != 0:
        pytest.skip("the real node and buildah's storage need root")
    missing = [t for t in ("buildah", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.fail(f"needs {' '.join(missing)}: run scripts/setup-debian", pytrace=False)
    # Kept in the image cache, where tests/images/test_build_images.py keeps it too: one copy,
    # rewritten when the image changed.
    return real_run.build_image("operator", real_run.IMAGE_CACHE, timeout=1500)


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


def test_the_charts_operator_runs_on_the_real_node_and_leads(cluster, tmp_path, operator_archive):
    digest, image_user = real_run.archive_facts(operator_archive)
    uid, _, gid = image_user.partition(":")
    timings: dict[str, float] = {}
    # Imported before the kubelet starts (real_node_up).
    with real_run.real_node_up(cluster, [operator_archive], timings):
        # the operator image on the real node, 2 replicas with leader election (the default)
        values = real_run.chart_values(replicas=2)
        t1 = time.monotonic()
        # A namespace enforcing Pod Security "restricted"; `helm install --wait` returns once
        # both replicas are Ready.
        with installed_release(cluster, tmp_path, "sdreal", values) as rel:
            timings["helm install --wait"] = time.monotonic() - t1
            ns = rel.namespace
            selector = ",".join(f"{k}={v}" for k, v in
                                rel.get("Deployment")["spec"]["selector"]["matchLabels"].items())
            try:
                check_release(cluster, rel, selector, digest, uid, gid, timings)
            except BaseException:
                print_operator_logs(cluster, ns, selector)
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
    cluster.kubectl("create", "serviceaccount", "scraper", "-n", ns)
    cluster.kubectl("create", "clusterrolebinding", f"{ns}-scraper",
                    f"--clusterrole={rel.get('Deployment')['metadata']['name']}-metrics-reader",
                    f"--serviceaccount={ns}:scraper")
    try:
        token = cluster.kubectl("create", "token", "scraper", "-n", ns).stdout.strip()
        tls = cluster.get_json("secret", f"{rel.get('Deployment')['metadata']['name']}-metrics-tls", "-n", ns)
        fetch = ("import base64, http.client, socket, ssl, sys\n"
                 "ctx = ssl.create_default_context(cadata=base64.b64decode(sys.argv[1]).decode())\n"
                 "sock = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[3]))), server_hostname=sys.argv[2])\n"
                 "conn = http.client.HTTPConnection('127.0.0.1')\nconn.sock = sock\n"
                 "conn.request('GET', '/metrics', headers={'Authorization': 'Bearer ' + sys.argv[4]})\n"
                 "r = conn.getresponse()\nprint(r.status)\nprint(r.read().decode())")
        out = cluster.kubectl("exec", "-n", ns, holder.rsplit("_", 1)[0], "-c", "operator", "--", "python", "-c", fetch,
                              tls["data"]["ca.crt"], f"{service}.{ns}.svc", str(rel.values["operator"]["metricsPort"]),
                              token).stdout
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"{ns}-scraper", check=False)
    status, _, metrics = out.partition("\n")
    assert status == "200", out[:2000]
    series = {line.split("{")[0].split()[0] for line in metrics.splitlines()
              if line and not line.startswith("#")}
    # Present from the start in either replica (Metrics.start), before any run.
    assert {"sheepdog_jobs_created_total", "sheepdog_runs_stuck"} <= series, sorted(series)[:60]
    # The standby did not take over meanwhile.
    assert cluster.get_json("lease", lease_name, "-n", ns)["spec"]["holderIdentity"] == holder
