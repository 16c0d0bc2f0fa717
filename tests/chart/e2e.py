"""The chart installed for real into the test control plane, and the operator run with the
chart's ServiceAccount identity: the helpers behind test_install.py and
tests/metrics/test_prometheus.py.

`sheepdog operator` runs as a local process (kwok's pods run nothing), but with the arguments
and environment of the release's Deployment (plus only the test-only `--test-pod-annotations`),
and it authenticates as the release's ServiceAccount: a token from the TokenRequest API
(`kubectl create token`) in a kubeconfig of its own. Whatever the chart's RBAC does not allow,
the operator cannot do, so a run that completes proves the RBAC sufficient.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from tests.chart.helm import CHART, helm, one

CRD_NAME = "selfalignmentruns.sheepdog.dev"

HERE = Path(__file__).resolve().parent
MONITORING_CRDS = HERE / "monitoring-crds.yaml"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create_namespace(cluster: Any, name: str, labels: Optional[dict[str, str]] = None) -> str:
    cluster.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": dict(labels or {})}})
    cluster.wait_for(f"ServiceAccount {name}/default", lambda: cluster.kubectl(
        "get", "serviceaccount", "default", "-n", name, check=False).returncode == 0, timeout=60, interval=0.2)
    return name


def delete_namespace(cluster: Any, name: str) -> None:
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def apply_monitoring_crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(MONITORING_CRDS))
    for name in ("servicemonitors", "prometheusrules"):
        cluster.wait_established(f"{name}.monitoring.coreos.com")


def apply_chart_crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    wait_crd_served(cluster)


def wait_crd_served(cluster: Any) -> None:
    cluster.wait_established(CRD_NAME)
    cluster.wait_for("SelfAlignmentRun discovery", lambda: cluster.kubectl(
        "get", "selfalignmentruns", "-A", check=False).returncode == 0, timeout=30)


def remove_crd(cluster: Any) -> None:
    """Deletes the SelfAlignmentRun CRD (every run goes with it), so that the next `helm
    install` creates it from the chart's crds/: Helm skips a CRD that already exists."""
    cluster.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", "--timeout=120s")
    cluster.wait_for(f"CRD {CRD_NAME} gone", lambda: cluster.kubectl(
        "get", "crd", CRD_NAME, check=False).returncode != 0, timeout=60)


def crd_managers(cluster: Any) -> set[str]:
    """Who wrote the CRD object (its managedFields managers): {"helm"} when `helm install`
    created it from the chart's crds/ and nothing applied it since."""
    crd = cluster.get_json("crd", CRD_NAME, "--show-managed-fields")
    return {m["manager"] for m in crd["metadata"].get("managedFields") or ()
            if not m.get("subresource")}  # the API server's own status writes are not the object


def cluster_helm(cluster: Any, *args: str, input: Optional[str] = None, check: bool = True):
    return helm(*args, input=input, check=check, env={"KUBECONFIG": str(cluster.kubeconfig)})


def storage(cluster: Any, namespace: str, claim: str = "sheepdog-data") -> str:
    """A claim pre-bound to a PV (the scheduler places no pod whose claim is unbound; kwok mounts
    nothing)."""
    pv = f"pv-{namespace}"
    cluster.apply({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": f"/tmp/{pv}"},
                 "claimRef": {"namespace": namespace, "name": claim}},
    })
    cluster.apply({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })
    cluster.wait_for(f"PVC {namespace}/{claim} bound", lambda: cluster.get_json(
        "pvc", claim, "-n", namespace).get("status", {}).get("phase") == "Bound", timeout=60)
    return claim


def write_token_kubeconfig(cluster: Any, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
    token = create_token(cluster, namespace, service_account, duration="2h")
    admin = json.loads(Path(cluster.kubeconfig).read_text())
    (cl,) = admin["clusters"]
    user = f"system:serviceaccount:{namespace}:{service_account}"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cl],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cl["name"], "user": user}}],
        "current-context": "sa",
    }, indent=2))
    path.chmod(0o600)
    return path


class IdentityCluster:
    """The `cluster` fixture seen through another kubeconfig (for OperatorProcess: Kopf's login
    reads $KUBECONFIG, so the environment carries the ServiceAccount's), plus the environment
    of the operator's container."""

    def __init__(self, cluster: Any, kubeconfig: Path, env: Optional[dict[str, str]] = None):
        self._cluster = cluster
        self.kubeconfig = kubeconfig
        self.env = dict(env or {})

    def full_env(self) -> dict[str, str]:
        env = self._cluster.full_env()
        env.update(self.env)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env


def can_i(cluster: Any, user: str, verb: str, resource: str, namespace: Optional[str] = None,
          subresource: Optional[str] = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args += [f"--subresource={subresource}"]
    res = cluster.kubectl(*args, check=False)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), res.stdout + res.stderr
    return answer == "yes"


@dataclass
class Release:
    name: str
    namespace: str
    values: dict[str, Any]
    install_output: str
    manifests: list[dict[str, Any]]
    service_account: str = ""
    kubeconfig: Optional[Path] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def get(self, kind: str) -> dict[str, Any]:
        return one(self.manifests, kind)


@contextmanager
def installed_release(cluster: Any, tmp: Path, name: str, values: dict[str, Any]) -> Iterator[Release]:
    """`helm install` of the chart into a fresh namespace enforcing Pod Security "restricted"
    (so the operator's own pod is admitted under it by the real ReplicaSet controller), a
    kubeconfig for its ServiceAccount; uninstalled afterwards. The operator's metrics and
    liveness ports are free ports of this machine (run_operator_as runs the Deployment's
    command here, beside other tests)."""
    from tests.operator.conftest import free_port

    ports = {"metricsPort": free_port(), "livenessPort": free_port()}
    values = {**values, "operator": {**values.get("operator", {}), **ports}}
    ns = create_namespace(cluster, unique(f"{name}-system"), RESTRICTED)
    try:
        res = cluster_helm(cluster, "install", name, str(CHART), "--namespace", ns, "--values", "-",
                           "--wait", "--timeout", "3m", input=yaml.safe_dump(values))
        manifest = cluster_helm(cluster, "get", "manifest", name, "--namespace", ns).stdout
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        rel = Release(name=name, namespace=ns, values=values, install_output=res.stdout, manifests=docs)
        rel.service_account = one(docs, "ServiceAccount")["metadata"]["name"]
        rel.kubeconfig = write_token_kubeconfig(cluster, ns, rel.service_account, tmp / f"{name}.kubeconfig")
        yield rel
    finally:
        cluster_helm(cluster, "uninstall", name, "--namespace", ns, "--wait", "--timeout", "2m", check=False)
        delete_namespace(cluster, ns)


def deployment_container(cluster: Any, release: Release) -> dict[str, Any]:
    """The operator container of the release's Deployment as the API server stores it (the
    chart's template as Helm rendered it)."""
    name = release.get("Deployment")["metadata"]["name"]
    dep = cluster.get_json("deployment", name, "-n", release.namespace)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container


def deployment_env(container: dict[str, Any], namespace: str, pod: str) -> dict[str, str]:
    """The container's environment; the downward-API fields it uses resolved as the kubelet
    would for pod `pod` in `namespace`."""
    fields = {"metadata.namespace": namespace, "metadata.name": pod}
    env = {}
    for e in container.get("env") or ():
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in fields, f"the Deployment reads {path}: resolve it here too"
            env[e["name"]] = fields[path]
    return env


def run_operator_as(cluster: Any, release: Release, log_path: Path, namespaces: list[str]):
    """`sheepdog operator` (the image's ENTRYPOINT) run here with the arguments and environment
    of the release's Deployment, authenticated as its ServiceAccount, plus only the test-only
    `--test-pod-annotations` (kwok finishes the stage pods by their annotations).
    `namespaces` must be what the Deployment watches: checked against its --namespace args."""
    from tests.operator.conftest import OperatorProcess

    assert release.kubeconfig is not None
    container = deployment_container(cluster, release)
    args = list(container["args"])
    assert sorted(a.split("=", 1)[1] for a in args if a.startswith("--namespace=")) == sorted(namespaces), args
    env = deployment_env(container, release.namespace, f"{release.name}-sheepdog-local")

    class DeploymentOperator(SecureMetrics, OperatorProcess):
        def command(self) -> list[str]:
            return [sys.executable, "-m", "sheepdog.cli", "operator", *args, "--test-pod-annotations"]

    op = DeploymentOperator(IdentityCluster(cluster, release.kubeconfig, env), namespaces, log_path)
    op.metrics_port = _flag(args, "--metrics-port")
    op.liveness_port = _flag(args, "--liveness-port")
    cert_dirs = [i for i, a in enumerate(args) if a.startswith("--metrics-cert-dir=")]
    if cert_dirs:
        # The Deployment mounts the metrics TLS Secret there; here the same Secret's files are
        # copied to a directory of this machine (the only argument that differs).
        (i,) = cert_dirs
        local = metrics_tls_dir(cluster, release, log_path.parent / f"{release.name}-metrics-tls")
        args[i] = f"--metrics-cert-dir={local}"
        op.metrics_tls = local
        op.metrics_server_name = f"{release.get('Service')['metadata']['name']}.{release.namespace}.svc"
    return op


class SecureMetrics:
    """What a client of the operator's HTTPS /metrics needs (set by run_operator_as when the
    Deployment passes --metrics-cert-dir): the Secret's files, the name its certificate is for
    (the metrics Service's), and the bearer token `metrics()` presents."""

    metrics_tls: Optional[Path] = None
    metrics_server_name: str = ""
    metrics_token: Optional[str] = None

    def scrape(self, token: Optional[str] = None, path: str = "/metrics") -> tuple[int, str]:
        """GET path with `token` (None: no Authorization header), over HTTPS verified with the
        Secret's ca.crt for the Service's name, or plain HTTP when the release serves that."""
        if self.metrics_tls is None:
            return http_get(f"http://127.0.0.1:{self.metrics_port}{path}")  # type: ignore[attr-defined]
        return https_get("127.0.0.1", self.metrics_port, path, self.metrics_server_name,  # type: ignore[attr-defined]
                         self.metrics_tls / "ca.crt", token)

    def metrics(self) -> str:
        code, text = self.scrape(self.metrics_token)
        assert code == 200, f"{code}: {text}"
        return text


def metrics_tls_dir(cluster: Any, release: Release, directory: Path) -> Path:
    """The files of the Secret the release's Deployment mounts for --metrics-cert-dir."""
    import base64

    dep = cluster.get_json("deployment", release.get("Deployment")["metadata"]["name"], "-n", release.namespace)
    (vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "metrics-tls"]
    secret = cluster.get_json("secret", vol["secret"]["secretName"], "-n", release.namespace)
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (directory / key).write_bytes(base64.b64decode(secret["data"][key]))
    (directory / "tls.key").chmod(0o600)
    return directory


def https_get(host: str, port: int, path: str, server_name: str, cafile: Path,
              token: Optional[str] = None, timeout: float = 10) -> tuple[int, str]:
    """GET over TLS to host:port, verifying the certificate with `cafile` for `server_name`
    (the Service's DNS name: the operator runs here, on 127.0.0.1, not behind its Service)."""
    import http.client
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile))

    class Connection(http.client.HTTPSConnection):
        def connect(self) -> None:
            raw = socket.create_connection((self.host, self.port), self.timeout)
            self.sock = ctx.wrap_socket(raw, server_hostname=server_name)

    conn = Connection(host, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def http_get(url: str) -> tuple[int, str]:
    from tests.operator.conftest import http_get as get

    return get(url)


def create_token(cluster: Any, namespace: str, service_account: str, duration: str = "1h") -> str:
    """A TokenRequest token of the ServiceAccount (`kubectl create token`)."""
    return cluster.kubectl("create", "token", service_account, "-n", namespace, f"--duration={duration}").stdout.strip()


def _flag(args: list[str], flag: str) -> int:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    return int(value)


def wait_phase(cluster: Any, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 300) -> dict:
    def check():
        st = cluster.get_json("selfalignmentrun", name, "-n", namespace).get("status") or {}
        return st if st.get("phase") in phases else None

    return cluster.wait_for(f"run {namespace}/{name} in {phases}", check, timeout=timeout, interval=1)


def good_run(name: str, namespace: str, iterations: int = 2, duration: Optional[str] = None) -> dict[str, Any]:
    """A run kwok completes: every stage's pod succeeds with the stage's summary; evaluation on.
    `duration` (a Go duration) keeps each stage's pod running that long."""
    from tests.operator.conftest import run_manifest

    extra = {"*": {"sheepdog.test/duration": duration}} if duration else None
    return run_manifest(name, namespace, iterations=iterations, evaluation={"enabled": True}, retries=1,
                        extra_annotations=extra)


def failing_run(name: str, namespace: str) -> dict[str, Any]:
    """A run whose train pods always fail: one retry, then the Job fails and the run with it."""
    from tests.operator.conftest import run_manifest

    return run_manifest(name, namespace, iterations=1, retries=1,
                        extra_annotations={"train": {"sheepdog.test/fail": "true"}})


# A 403 as a status, not the digits of a timestamp's milliseconds ("15:09:35,403 INFO ..." made
# this test fail on a log line that reported a Job created).
_STATUS_403 = re.compile(r"(?<![\d,.:])403(?![\d])")


def forbidden_lines(log: str) -> list[str]:
    """Operator log lines reporting a refused API call."""
    return [line for line in log.splitlines()
            if _STATUS_403.search(line) or "Forbidden" in line or "forbidden" in line]

