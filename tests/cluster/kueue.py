"""Kueue's controller, built from its Go module, run against the test control plane.

`KueueController(cluster).start()`:
  - builds `kueue` with `tests/cluster/build --only kueue` (cached in the control plane's bin
    dir; a cold build is long, see docs/testing.md) and finds the module's source directory
    (its CRDs and webhook manifests come from the same sigs.k8s.io/kueue@KUEUE_VERSION);
  - applies the CRDs as Kueue's `config/components/crd/bases` has them: without the conversion
    webhook patch (every object here is v1beta2, the storage version, so nothing converts);
  - issues a serving certificate for 127.0.0.1 from the test CA and registers Kueue's webhooks
    for batch/v1 Jobs and its own kinds with URL client configs (`https://127.0.0.1:<port>/...`,
    caBundle the test CA): there is no Service or kubelet in front of the process. The Job
    webhooks only see namespaces labelled KUEUE_NAMESPACE_LABEL, so that the rest of the suite,
    sharing the control plane, never passes through Kueue (and is not refused while it is
    stopped), and Kueue manages Jobs only there too (managedJobsNamespaceSelector);
  - runs the controller with leader election and internal certificate management off, only
    the batch/job integration, and the visibility server off.

Kueue v0.17 reads its metrics server's certificate from the fixed path /etc/kueue/metrics/certs
when internal certificate management is off, and exits without it. The process therefore runs
in a mount namespace of its own (`unshare --mount`) in which /etc is an overlay whose upper
layer, in the cluster's state dir, holds those files: the host's /etc is not touched.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from tests.cluster.controlplane import BUILD_SCRIPT, free_ports

KUEUE_VERSION = os.environ.get("KUEUE_VERSION", "v0.17.0")
KUEUE_MODULE = "sigs.k8s.io/kueue"
# Namespaces whose Jobs Kueue sees (webhooks) and manages.
KUEUE_NAMESPACE_LABEL = "sheepdog.test/kueue"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Kueue's webhooks kept: batch/v1 Jobs (the only integration enabled) and Kueue's own kinds.
# The others (pods, deployments, the Kubeflow and Ray kinds...) would send every matching object
# of the cluster to a server that has no handler for them.
WEBHOOK_PATH_PARTS = ("-batch-v1-job", "-kueue-x-k8s-io-")
WEBHOOK_CONFIG_PREFIX = "sheepdog-test-kueue-"


def _log(msg: str) -> None:
    print(f"kueue: {msg}", file=sys.stderr, flush=True)


def build_kueue() -> Path:
    """The kueue binary (built when missing or stale; a no-op when cached)."""
    res = subprocess.run([str(BUILD_SCRIPT), "--only", "kueue"], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "KUEUE_VERSION": KUEUE_VERSION})
    if res.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} --only kueue failed with exit code {res.returncode}")
    binary = Path(res.stdout.strip().splitlines()[-1]) / "kueue"
    if not binary.is_file():
        raise FileNotFoundError(f"{BUILD_SCRIPT} --only kueue made no {binary}")
    return binary


def module_dir() -> Path:
    """Where the Go module cache holds sigs.k8s.io/kueue@KUEUE_VERSION (downloaded by the build)."""
    res = subprocess.run(["go", "mod", "download", "-json", f"{KUEUE_MODULE}@{KUEUE_VERSION}"],
                         capture_output=True, text=True, check=True)
    return Path(json.loads(res.stdout)["Dir"])


def webhook_configurations(manifests: list[dict[str, Any]], port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's Mutating/ValidatingWebhookConfigurations (`config/components/webhook/manifests.yaml`)
    with only the webhooks of WEBHOOK_PATH_PARTS, each pointing at `https://127.0.0.1:port` and
    trusting `ca_bundle`; the Job webhooks limited to namespaces labelled KUEUE_NAMESPACE_LABEL."""
    out = []
    for doc in manifests:
        if not doc or doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        hooks = []
        for hook in doc.get("webhooks") or ():
            path = hook["clientConfig"]["service"]["path"]
            if not any(part in path for part in WEBHOOK_PATH_PARTS):
                continue
            hook = dict(hook)
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                    "caBundle": base64.b64encode(ca_bundle).decode()}
            if "-batch-v1-job" in path:
                hook["namespaceSelector"] = {"matchLabels": {KUEUE_NAMESPACE_LABEL: "true"}}
            hooks.append(hook)
        if not hooks:
            continue
        name = WEBHOOK_CONFIG_PREFIX + ("mutating" if doc["kind"].startswith("Mutating") else "validating")
        out.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": doc["kind"],
                    "metadata": {"name": name}, "webhooks": hooks})
    return out


def configuration(webhook_port: int, health_port: int, metrics_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's config.kueue.x-k8s.io/v1beta2 Configuration for the test process."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": "kueue-system",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": {"matchLabels": {KUEUE_NAMESPACE_LABEL: "true"}},
        "integrations": {"frameworks": ["batch/job"]},
        # The on-demand visibility API needs an APIService in front of it: not used here.
        "featureGates": {"VisibilityOnDemand": False},
        "clientConnection": {"qps": 50, "burst": 100},
    }


class KueueController:
    """One Kueue controller process for a test control plane (tests/cluster/fixture.py's `kueue`)."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.state = cluster.control_plane.state_dir / "kueue"
        self.log_path = cluster.control_plane.state_dir / "logs" / "kueue.log"
        self.proc: Optional[subprocess.Popen] = None
        self.webhook_port, self.health_port, self.metrics_port = free_ports(3)

    # ---- setup ----------------------------------------------------------------------------
    def _install_crds(self, src: Path) -> None:
        bases = src / "config" / "components" / "crd" / "bases"
        files = sorted(bases.glob("kueue.x-k8s.io_*.yaml"))
        if not files:
            raise FileNotFoundError(f"no Kueue CRDs in {bases}")
        args = []
        for f in files:
            args += ["-f", str(f)]
        # Server-side: the CRDs are larger than client-side apply's last-applied annotation allows.
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", *args, timeout=300)
        for f in files:
            name = f.stem.split("_", 1)[1] + ".kueue.x-k8s.io"
            self.cluster.wait_established(name)

    def _certificates(self) -> Path:
        cp = self.cluster.control_plane
        cp.issue_cert("kueue-webhook", "/CN=kueue-webhook", "serverAuth", "IP:127.0.0.1,DNS:localhost")
        cert_dir = self.state / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        for name, target in (("kueue-webhook.crt", "tls.crt"), ("kueue-webhook.key", "tls.key")):
            shutil.copyfile(cp.pki / name, cert_dir / target)
        # The metrics server's fixed path, as the upper layer of the process's /etc overlay.
        metrics = self.state / "etc-upper" / "kueue" / "metrics" / "certs"
        metrics.mkdir(parents=True, exist_ok=True)
        for target in ("tls.crt", "tls.key"):
            shutil.copyfile(cert_dir / target, metrics / target)
        (self.state / "etc-work").mkdir(exist_ok=True)
        return cert_dir

    def _register_webhooks(self, src: Path) -> None:
        import yaml

        with open(src / "config" / "components" / "webhook" / "manifests.yaml") as f:
            manifests = list(yaml.safe_load_all(f))
        ca = (self.cluster.control_plane.pki / "ca.crt").read_bytes()
        for cfg in webhook_configurations(manifests, self.webhook_port, ca):
            self.cluster.apply(cfg)

    def command(self, binary: Path, config: Path) -> list[str]:
        upper, work = self.state / "etc-upper", self.state / "etc-work"
        mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
        # unshare execs sh, and sh execs kueue: the pid is Kueue's own.
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f'{mount} && exec "$0" "$@"', str(binary), f"--config={config}", "--zap-log-level=info"]

    def start(self, timeout: float = 180) -> "KueueController":
        binary = build_kueue()
        src = module_dir()
        self.cluster.kubectl("create", "namespace", "kueue-system", check=False)
        self._install_crds(src)
        cert_dir = self._certificates()
        config = self.state / "config.yaml"
        config.write_text(json.dumps(configuration(self.webhook_port, self.health_port, self.metrics_port,
                                                   cert_dir), indent=2) + "\n")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.cluster.full_env()
        env["KUBECONFIG"] = str(self.cluster.control_plane.state_dir / "admin.kubeconfig")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(binary, config), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        self.cluster.extra_logs["kueue"] = self.log_path
        self._register_webhooks(src)
        self.cluster.wait_for("Kueue's webhook admits a ResourceFlavor", self._webhook_serves, timeout=timeout)
        _log(f"{KUEUE_VERSION} running (pid {self.proc.pid}, webhook 127.0.0.1:{self.webhook_port})")
        return self

    def _webhook_serves(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, \
            f"kueue exited ({self.proc.returncode if self.proc else None}):\n{self.log_tail()}"
        flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                  "metadata": {"name": "sheepdog-probe"}}
        res = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(flavor), check=False)
        return res.returncode == 0

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        # The webhook configurations go first: without the process they would refuse the
        # objects they match (failurePolicy Fail).
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            suffix = "mutating" if kind.startswith("mutating") else "validating"
            self.cluster.kubectl("delete", kind, WEBHOOK_CONFIG_PREFIX + suffix, "--ignore-not-found", check=False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # ---- queues ---------------------------------------------------------------------------
    def enable_namespace(self, namespace: str) -> None:
        """Kueue's webhooks and job reconciler take the Jobs of `namespace`."""
        self.cluster.kubectl("label", "namespace", namespace, f"{KUEUE_NAMESPACE_LABEL}=true", "--overwrite")

    def create_queues(self, namespace: str, name: str, quota: dict[str, str], flavor: str = "default") -> str:
        """A ResourceFlavor `flavor`, a ClusterQueue `name` with `quota` (resource -> nominal
        quota) and a LocalQueue `name` in `namespace` pointing at it; waits until the LocalQueue
        is Active (Kueue has seen all three). Returns the LocalQueue's name."""
        self.enable_namespace(namespace)
        self.cluster.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                            "metadata": {"name": flavor}})
        self.cluster.apply({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceGroups": [{
                    "coveredResources": list(quota),
                    "flavors": [{"name": flavor, "resources": [
                        {"name": r, "nominalQuota": q} for r, q in quota.items()]}],
                }],
            },
        })
        self.cluster.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                            "metadata": {"name": name, "namespace": namespace},
                            "spec": {"clusterQueue": name}})

        def active() -> bool:
            lq = self.cluster.get_json("localqueue", name, "-n", namespace)
            return any(c.get("type") == "Active" and c.get("status") == "True"
                       for c in (lq.get("status") or {}).get("conditions") or ())

        self.cluster.wait_for(f"LocalQueue {namespace}/{name} Active", active, timeout=60)
        return name

    def delete_cluster_queue(self, name: str) -> None:
        self.cluster.kubectl("delete", "clusterqueue", name, "--ignore-not-found", "--wait=false", check=False)

    def workloads(self, namespace: str) -> list[dict[str, Any]]:
        return self.cluster.get_json("workloads.kueue.x-k8s.io", "-n", namespace)["items"]

