"""A real Kubernetes control plane as local processes on 127.0.0.1 (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok with fake GPU nodes).

    cp = ControlPlane(nodes=2)          # state in a fresh temp dir, binaries from tests/cluster/build
    cp.start()                          # all components, waits until ready
    cp.restart("kube-apiserver")        # same ports, same data
    cp.stop(); cp.destroy()

The state directory holds state.json (ports, pids), pki/, etcd data, kubeconfigs and one log file
per component (logs/<component>.log). `tests/cluster/up` and `down` wrap this class.

The API server's audit log (logs/audit.log, JSON lines, Metadata level) records every request
of a ServiceAccount outside kube-system, and nothing else: the operator runs as its chart's
ServiceAccount in the chart tests, and tests/chart/rbac_audit.py compares what it did with
what the chart grants. The controllers' and the admin's requests are not logged (small file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from tests.cluster.kube import ApiError, KubeClient

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build"
STAGES = HERE / "kwok" / "stages.yaml"

# Audit: Metadata (who, verb, resource, response code) for ServiceAccounts outside kube-system
# (the controller manager's own identities are kube-system ServiceAccounts); nothing for the
# rest. RequestReceived is dropped: each request is logged once, when it completes (a watch
# also when its response starts).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}

# Start order; stop runs in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
GPU_NODE_PREFIX = "gpu-node-"


def _log(msg: str) -> None:
    print(f"controlplane: {msg}", file=sys.stderr, flush=True)


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open until all are picked)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def find_bin_dir(build: bool = True) -> Path:
    """The bin dir of tests/cluster/build (building when `build` and any binary is missing)."""
    env_dir = os.environ.get("SHEEPDOG_CLUSTER_BIN")
    if env_dir:
        return Path(env_dir)
    out = subprocess.run([str(BUILD_SCRIPT), "--bin-dir"], check=True, capture_output=True, text=True)
    bin_dir = Path(out.stdout.strip().splitlines()[-1])
    needed = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"]
    if all((bin_dir / b).is_file() for b in needed):
        return bin_dir
    if not build:
        raise FileNotFoundError(
            f"control plane binaries missing in {bin_dir}: run tests/cluster/build first"
        )
    _log(f"binaries missing in {bin_dir}: running {BUILD_SCRIPT} (a cold build takes a long time)")
    res = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {res.returncode}")
    return Path(res.stdout.strip().splitlines()[-1])


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _pid_alive(pid: int, exe_hint: str) -> bool:
    """True when pid runs and its command line mentions exe_hint (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and exe_hint in cmdline


class ControlPlane:
    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        bin_dir: str | os.PathLike | None = None,
        nodes: int = 2,
        build: bool = True,
        real_node: bool = False,
    ):
        if state_dir is None:
            tmp = os.environ.get("TMPDIR", "/tmp")
            state_dir = tempfile.mkdtemp(prefix="sheepdog-cluster-", dir=tmp)
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = nodes
        self.real_node = real_node  # tests/cluster/realnode.py: a kubelet + containerd node
        self._real = None
        self._procs: dict[str, subprocess.Popen] = {}
        state = self._load_state()
        if state:
            self.ports = state["ports"]
            self.pids = state.get("pids", {})
            self.bin_dir = Path(bin_dir or state["bin_dir"])
            self.nodes = state.get("nodes", nodes)
            self.real_node = state.get("real_node", real_node)
        else:
            self.bin_dir = Path(bin_dir) if bin_dir else find_bin_dir(build=build)
            p = free_ports(6)
            self.ports = {
                "etcd-client": p[0],
                "etcd-peer": p[1],
                "kube-apiserver": p[2],
                "kube-controller-manager": p[3],
                "kube-scheduler": p[4],
                "etcd-metrics": p[5],
            }
            self.pids = {}
            self._save_state()

    # ---- paths -----------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs(self) -> dict[str, Path]:
        return {c: self.state_dir / "logs" / f"{c}.log" for c in COMPONENTS}

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _load_state(self) -> dict | None:
        try:
            return json.loads(self._state_file().read_text())
        except FileNotFoundError:
            return None

    def _save_state(self) -> None:
        data = {"ports": self.ports, "pids": self.pids, "bin_dir": str(self.bin_dir), "nodes": self.nodes,
                "real_node": self.real_node}
        tmp = self._state_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self._state_file())

    # ---- certificates and kubeconfigs -------------------------------------------------------
    def _ensure_pki(self) -> None:
        pki = self.pki
        if not (pki / "done").exists():
            pki.mkdir(parents=True, exist_ok=True)
            _openssl(
                "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
                "-subj", "/CN=sheepdog-test-ca",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                cwd=pki,
            )
            self.issue_cert(
                "apiserver", "/CN=kube-apiserver", "serverAuth",
                "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                f"DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:{SERVICE_IP}",
            )
            self.issue_cert("admin", "/O=system:masters/CN=sheepdog-admin", "clientAuth")
            self.issue_cert("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
            self.issue_cert("scheduler", "/CN=system:kube-scheduler", "clientAuth")
            self.issue_cert("kwok", "/O=system:masters/CN=kwok", "clientAuth")
            _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
            _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
            for name in ("admin", "controller-manager", "scheduler", "kwok"):
                self._write_kubeconfig(self.state_dir / f"{name}.kubeconfig", name)
            (pki / "done").write_text("ok\n")
        # The API server's client certificate for kubelets (logs, exec): a real node's kubelet
        # authenticates it against the test CA and authorizes it with a SubjectAccessReview.
        # Outside the "done" guard: a state dir made before it existed gets it too.
        self.issue_cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
                        "clientAuth")

    def issue_cert(self, name: str, subj: str, usage: str, san: str | None = None) -> None:
        """pki/<name>.crt and .key signed by the test CA (kept when they exist)."""
        pki = self.pki
        if (pki / f"{name}.crt").exists():
            return
        _openssl("req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=pki)
        ext = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        if san:
            ext.append(f"subjectAltName={san}")
        (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "3650", "-out", f"{name}.crt.tmp", "-extfile", f"{name}.ext",
            cwd=pki,
        )
        (pki / f"{name}.crt.tmp").replace(pki / f"{name}.crt")  # exists only once complete

    def _write_kubeconfig(self, path: Path, cert: str) -> None:
        # Absolute paths: the file is read by Go (client-go), kubectl, Kopf and our own client.
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sheepdog-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.pki / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": cert,
                    "user": {
                        "client-certificate": str(self.pki / f"{cert}.crt"),
                        "client-key": str(self.pki / f"{cert}.key"),
                    },
                }
            ],
            "contexts": [{"name": "sheepdog-test", "context": {"cluster": "sheepdog-test", "user": cert}}],
            "current-context": "sheepdog-test",
        }
        # JSON is valid YAML; avoids depending on the YAML emitter's layout.
        path.write_text(json.dumps(cfg, indent=2) + "\n")

    # ---- component command lines ------------------------------------------------------------
    def _command(self, component: str) -> list[str]:
        b, p, s, pki = self.bin_dir, self.ports, self.state_dir, self.pki
        if component == "etcd":
            client = f"http://127.0.0.1:{p['etcd-client']}"
            peer = f"http://127.0.0.1:{p['etcd-peer']}"
            return [
                str(b / "etcd"),
                "--name=sheepdog",
                f"--data-dir={s / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=sheepdog={peer}",
                f"--listen-metrics-urls=http://127.0.0.1:{p['etcd-metrics']}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ]
        if component == "kube-apiserver":
            return [
                str(b / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{p['etcd-client']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['kube-apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                # Published in kube-system/extension-apiserver-authentication for the delegated
                # authentication of controller-manager and scheduler; no front-proxy client
                # certificate is ever issued, so the header identities cannot be used.
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                "DefaultTolerationSeconds,PodSecurity,NodeRestriction,ResourceQuota,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # pods/log, exec and port-forward go to a node's kubelet at its InternalIP (the
                # pod executor's is 127.0.0.1; its Hostname, the default first choice, resolves
                # nowhere). No --kubelet-certificate-authority: the kubelet's certificate is not
                # verified, the stand-in's is self-signed (tests/cluster/pod_executor.py).
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=500",  # MB before a rotation; tests read audit.log only
                "--profiling=false",
                "--v=1",
            ]
        if component == "kube-controller-manager":
            kc = str(s / "controller-manager.kubeconfig")
            return [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['kube-controller-manager']}",
                f"--cert-dir={s / 'kube-controller-manager-certs'}",
                "--leader-elect=false",
                # Every default controller: job, garbage-collector, namespace, serviceaccount,
                # serviceaccount-token, ttl-after-finished, pod-garbage-collector, node-lifecycle...
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ]
        if component == "kube-scheduler":
            kc = str(s / "scheduler.kubeconfig")
            return [
                str(b / "kube-scheduler"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['kube-scheduler']}",
                f"--cert-dir={s / 'kube-scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ]
        if component == "kwok":
            return [
                str(b / "kwok"),
                f"--kubeconfig={s / 'kwok.kubeconfig'}",
                f"--config={STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                # Node and pod addresses are only strings in status: nothing listens there. The
                # node IP is loopback so that an API server proxy attempt (kubectl logs) stays
                # on this machine.
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.0/16",
            ]
        raise ValueError(f"unknown component {component!r}")

    def _audit_policy(self) -> Path:
        path = self.state_dir / "audit-policy.json"  # JSON is valid YAML
        path.write_text(json.dumps(AUDIT_POLICY, indent=2) + "\n")
        return path

    # ---- processes --------------------------------------------------------------------------
    def is_running(self, component: str) -> bool:
        proc = self._procs.get(component)
        if proc is not None:  # started by this process (its cmdline may not show the exec yet)
            return proc.poll() is None
        pid = self.pids.get(component)
        return bool(pid) and _pid_alive(pid, str(self.bin_dir / component))

    def _spawn(self, component: str) -> None:
        if self.is_running(component):
            return
        log_path = self.logs[component]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self._command(component)
        with open(log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            env = dict(os.environ)
            env["HOME"] = str(self.state_dir)  # kwok and kubectl keep caches under $HOME
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=env,
                start_new_session=True,
            )
        self._procs[component] = proc
        self.pids[component] = proc.pid
        self._save_state()

    def _check_alive(self, component: str) -> None:
        if not self.is_running(component):
            raise RuntimeError(f"{component} exited; see {self.logs[component]}:\n{self.log_tail(component)}")

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, component: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive(component)
            try:
                if check():
                    return
            except Exception as e:  # noqa: BLE001 - not ready yet
                last = e
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last})")

    def _client(self) -> KubeClient:
        return KubeClient(str(self.kubeconfig), timeout=10)

    def _etcd_healthy(self) -> bool:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['etcd-client']}/health", timeout=2) as r:
            return json.loads(r.read()).get("health") == "true"

    def _apiserver_ready(self) -> bool:
        return self._client().request("GET", "/readyz", raw=True).strip() == "ok"

    def _component_healthy(self, component: str) -> bool:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert from --cert-dir
        url = f"https://127.0.0.1:{self.ports[component]}/healthz"
        with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
            return r.read().decode().strip() == "ok"

    def _wait_component(self, component: str, timeout: float) -> None:
        if component == "etcd":
            self._wait("etcd /health", self._etcd_healthy, timeout, component)
        elif component == "kube-apiserver":
            self._wait("kube-apiserver /readyz", self._apiserver_ready, timeout, component)
        elif component in ("kube-controller-manager", "kube-scheduler"):
            self._wait(f"{component} /healthz", lambda: self._component_healthy(component), timeout, component)
        else:
            time.sleep(0.5)
            self._check_alive(component)

    def start(self, component: str | None = None, timeout: float = 180.0) -> None:
        """Start one component (same ports and data as before), or all of them and wait until
        the cluster is usable: /readyz ok, GPU nodes Ready, default ServiceAccount present."""
        if component is not None:
            if component not in COMPONENTS:
                raise ValueError(f"unknown component {component!r}; one of {COMPONENTS}")
            self._ensure_pki()
            self._spawn(component)
            self._wait_component(component, timeout)
            return
        t0 = time.monotonic()
        self._ensure_pki()
        for c in COMPONENTS:
            self._spawn(c)
            self._wait_component(c, timeout)
            _log(f"{c} up (pid {self.pids[c]}) after {time.monotonic() - t0:.1f}s")
        self.ensure_nodes()
        self.wait_ready(timeout)
        if self.real_node:
            self.start_real_node(timeout=timeout)
        _log(f"cluster ready after {time.monotonic() - t0:.1f}s")

    def start_real_node(self, timeout: float = 180.0, owner_pid: int | None = None, images=()):
        """Add the real node (tests/cluster/realnode.py) to the running cluster; returns it.
        owner_pid: a process whose death marks the node as abandoned (the test run); images:
        archives to import before its kubelet starts."""
        from tests.cluster.realnode import RealNode  # it imports this module

        if self._real is None or not self._real.is_running():
            self._real = RealNode(self, owner_pid=owner_pid)
            self._real.start(timeout=timeout, images=list(images))
        self.real_node = True
        self._save_state()
        return self._real

    def stop_real_node(self) -> list[str]:
        """Stop this cluster's real node, if it has one, and restore the host (also when another
        process started it: `down`). Returns what could not be undone."""
        from tests.cluster.realnode import RealNode, read_record

        if self._real is None:
            rec = read_record()
            if rec is None or rec.get("node_dir") != str(self.state_dir / "real-node"):
                return []  # not ours: no lock taken, another cluster's node may be starting
        node = self._real or RealNode(self)
        self._real = None
        return node.stop()

    def stop(self, component: str | None = None, timeout: float = 10.0) -> None:
        """Stop one component, or all in reverse start order: SIGTERM; a second SIGTERM after
        half the timeout (kube-apiserver's graceful shutdown can wait a long time for its
        clients' watches, and a second signal makes the Kubernetes components exit at once);
        SIGKILL after the timeout."""
        comps = [component] if component else list(reversed(COMPONENTS))
        if component is None:
            # First, while the API server still runs (its Node and pods are deleted).
            problems = self.stop_real_node()
            if problems:
                _log("the real node left changes on the host:\n  " + "\n  ".join(problems))
        for c in comps:
            if c not in COMPONENTS:
                raise ValueError(f"unknown component {c!r}")
            pid = self.pids.get(c)
            if pid and self.is_running(c):
                self._signal(pid, signal.SIGTERM)
                start = time.monotonic()
                second = False
                while self.is_running(c) and time.monotonic() - start < timeout:
                    if not second and time.monotonic() - start > timeout / 2:
                        self._signal(pid, signal.SIGTERM)
                        second = True
                    self._reap(c)
                    time.sleep(0.05)
                if self.is_running(c):
                    self._signal(pid, signal.SIGKILL)
                    while self.is_running(c):
                        self._reap(c)
                        time.sleep(0.05)
            self._reap(c)
            self.pids.pop(c, None)
            self._save_state()

    def kill(self, component: str) -> None:
        """SIGKILL a component (a crash, for reliability tests)."""
        pid = self.pids.get(component)
        if pid and self.is_running(component):
            self._signal(pid, signal.SIGKILL)
            while self.is_running(component):
                self._reap(component)
                time.sleep(0.05)
        self._reap(component)
        self.pids.pop(component, None)
        self._save_state()

    def ensure_running(self, timeout: float = 180.0) -> list[str]:
        """Start every component that is not running (after a test stopped or killed one);
        returns the ones started."""
        started = [c for c in COMPONENTS if not self.is_running(c)]
        for c in started:
            _log(f"{c} was not running: starting it again")
            self.start(c, timeout=timeout)
        if started:
            self.wait_ready(timeout)
        return started

    def restart(self, component: str, timeout: float = 180.0) -> None:
        self.stop(component)
        self.start(component, timeout=timeout)

    def _reap(self, component: str) -> None:
        proc = self._procs.get(component)
        if proc is not None and proc.poll() is not None:
            self._procs.pop(component, None)
            self.pids.pop(component, None)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def destroy(self) -> None:
        """Stop everything and remove the state directory."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # ---- nodes and readiness ----------------------------------------------------------------
    def node_names(self) -> list[str]:
        return [f"{GPU_NODE_PREFIX}{i}" for i in range(self.nodes)]

    def ensure_nodes(self) -> None:
        client = self._client()
        for name in self.node_names():
            try:
                client.get(f"/api/v1/nodes/{name}")
                continue
            except ApiError as e:
                if e.status != 404:
                    raise
            client.post("/api/v1/nodes", fake_gpu_node(name))

    def wait_ready(self, timeout: float = 180.0) -> None:
        client = self._client()

        def nodes_ready() -> bool:
            items = client.get("/api/v1/nodes?labelSelector=sheepdog.dev%2Fgpu-node%3Dtrue")["items"]
            ready = {
                n["metadata"]["name"]
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            }
            return set(self.node_names()) <= ready

        def default_sa() -> bool:
            client.get("/api/v1/namespaces/default/serviceaccounts/default")
            return True

        self._wait("kube-apiserver /readyz", self._apiserver_ready, timeout, "kube-apiserver")
        self._wait("fake GPU nodes Ready", nodes_ready, timeout, "kwok")
        self._wait("ServiceAccount default/default", default_sa, timeout, "kube-controller-manager")

    def log_tail(self, component: str, lines: int = 40) -> str:
        try:
            with open(self.logs[component], "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256 * 1024))
                data = f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(data[-lines:])

    def shell_exports(self) -> str:
        return (
            f"export KUBECONFIG={self.kubeconfig}\n"
            f"export PATH={self.bin_dir}:$PATH\n"
        )


def fake_gpu_node(name: str, gpus: int = 8, cpu: str = "64", memory: str = "512Gi") -> dict:
    resources = {"cpu": cpu, "memory": memory, "pods": "110", "nvidia.com/gpu": str(gpus), "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "sheepdog.dev/gpu-node": "true",
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }
