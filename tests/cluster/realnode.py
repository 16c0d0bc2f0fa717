"""One real node beside the kwok ones: a kubelet and containerd that run pods in containers (runc).

    node = RealNode(cp)                 # cp: a started ControlPlane
    node.start()                        # records the host, sets it up, waits for the Node Ready
    node.import_image(archive)          # ctr -n k8s.io images import (an OCI or docker archive)
    node.stop()                         # stops everything and restores the host

The node is named `real-node-0`, labelled `sheepdog.dev/real-node=true` and tainted
`sheepdog.dev/real-node=true:NoSchedule`, so only pods that tolerate the taint land there (the
kwok-based tests keep their fake nodes). Its kubelet authenticates with a client certificate
for `system:node:real-node-0` (the Node authorizer and NodeRestriction apply), serves on the
host's address (the API server reaches it for logs and exec with its kubelet client
certificate) and uses cgroupfs on the host's cgroup v1 hierarchies (`failCgroupV1: false`).

A kubelet and containerd change the host (mounts, /run/netns, a bridge, iptables chains,
kubepods cgroups, files under /var/lib, /run and /var/log, three kernel settings). Before
changing anything, start() saves a snapshot of all of these (tests/cluster/hoststate.py) in
/run/sheepdog-real-node/record.json; stop() restores it and removes the record. A record left
by a crash (its owner or its processes gone) is restored by the next start(), or by
`tests/cluster/down`. One real node per host: a second start() waits for the first to stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import hoststate
from tests.cluster.controlplane import BUILD_SCRIPT, SERVICE_IP, ControlPlane, _pid_alive, free_ports
from tests.cluster.kube import ApiError, KubeClient
from tests.cluster.ociimage import write_oci_archive

NODE_NAME = "real-node-0"
LABEL = "sheepdog.dev/real-node"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
# Pods for the real node carry these (test_real_node.py, the cluster demo).
TOLERATION = {"key": LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
NODE_SELECTOR = {LABEL: "true"}

HOST_DIR = Path(os.environ.get("SHEEPDOG_REAL_NODE_HOST_DIR", "/run/sheepdog-real-node"))
BRIDGE = "sheepdog0"
POD_SUBNET = "10.85.0.0/24"
GATEWAY = "10.85.0.1/24"  # the bridge's address: host-local's default gateway, the subnet's first
# The `kubernetes` Service (default namespace): the kubelet gives every pod
# KUBERNETES_SERVICE_HOST/PORT = this address and port, which in-cluster clients dial.
API_SERVICE_PORT = 443
PAUSE_IMAGE = "localhost/sheepdog/pause:1"
RUNC = "/usr/sbin/runc"
IMPORT_TIMEOUT = 1800.0  # seconds for one `ctr images import` (import_image)
# Built by tests/cluster/build into the control plane's bin dir.
NODE_BINARIES = ["kubelet", "containerd", "ctr", "containerd-shim-runc-v2",
                 "cni/bridge", "cni/loopback", "cni/host-local", "cni/portmap",
                 "node/sheepdog-pause", "node/sheepdog-probe"]
# A lock for the host, held while a node starts or stops: an abstract unix socket, so a crash
# releases it and it leaves no file behind.
_LOCK_NAME = "\0sheepdog-real-node-lock"


def _log(msg: str) -> None:
    print(f"realnode: {msg}", file=sys.stderr, flush=True)


class HostLock:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def __enter__(self) -> "HostLock":
        deadline = time.monotonic() + self.timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(_LOCK_NAME)
                self.sock = s
                return self
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise TimeoutError("another process has been starting or stopping the real node "
                                       f"for over {self.timeout:.0f}s") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def host_ip() -> str:
    """The address of the interface that holds the default route (the kubelet refuses a
    loopback node IP). No packet is sent: connecting a UDP socket only picks the route."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))  # TEST-NET-1: never routed anywhere real
        return s.getsockname()[0]
    except OSError as e:
        raise RuntimeError(f"no default route: the real node needs a non-loopback address ({e})") from e
    finally:
        s.close()


def missing_binaries(bin_dir: Path) -> list[str]:
    return [b for b in NODE_BINARIES if not (bin_dir / b).is_file()]


def ensure_binaries(bin_dir: Path, build: bool = True) -> None:
    """Build the node's binaries (tests/cluster/build) when any is missing in bin_dir."""
    missing = missing_binaries(bin_dir)
    if not missing:
        return
    if not build:
        raise FileNotFoundError(f"real node binaries missing in {bin_dir}: {', '.join(missing)} (run {BUILD_SCRIPT})")
    _log(f"missing in {bin_dir}: {', '.join(missing)}: running {BUILD_SCRIPT}")
    res = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.DEVNULL)
    if res.returncode != 0 or missing_binaries(bin_dir):
        raise RuntimeError(f"{BUILD_SCRIPT} failed (exit {res.returncode}) or did not build into {bin_dir}")


def _kill(pid: int | None, hint: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; only if pid still runs a command mentioning hint."""
    if not pid or not _pid_alive(pid, hint):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, hint) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid, hint):
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid, hint):
            time.sleep(0.05)


def pids_with(fragment: str) -> list[int]:
    """Processes whose command line contains fragment (the shims name their containerd socket)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmd:
            out.append(int(d))
    return out


def _record_path() -> Path:
    return HOST_DIR / "record.json"


def read_record() -> dict | None:
    try:
        return json.loads(_record_path().read_text())
    except FileNotFoundError:
        return None


def _write_record(rec: dict) -> None:
    HOST_DIR.mkdir(parents=True, exist_ok=True)
    tmp = _record_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(_record_path())


def record_is_live(rec: dict) -> bool:
    """True while the node of `rec` is in use: its owner process (if any) and its kubelet and
    containerd run. Anything else is what a crash left."""
    owner = rec.get("owner_pid")
    if owner and not _pid_alive(owner, ""):
        return False
    pids = rec.get("pids", {})
    return all(_pid_alive(pids.get(c, 0), c) for c in ("kubelet", "containerd"))


def teardown(rec: dict) -> list[str]:
    """Stop the processes of `rec` and restore the host from its snapshot; returns what could
    not be undone. Used by stop() and, for a record a crash left, by the next start() or down."""
    pids = rec.get("pids", {})
    # The kubelet first (no more requests), then containerd (no more shims started), then the
    # shims (they outlive containerd), then what runs in the pods' cgroups (containers outlive
    # their shim); only then are mounts and network namespaces free to go.
    _kill(pids.get("kubelet"), "kubelet", timeout=10)
    _kill(pids.get("containerd"), "containerd", timeout=10)
    for pid in pids_with(f"-address {rec['containerd_socket']}"):
        _kill(pid, "containerd-shim", timeout=2)
    old_cgroups = set(rec["snapshot"].get("cgroups", []))
    for d in hoststate.cgroup_dirs():
        if d not in old_cgroups:
            hoststate.kill_cgroup(d)
    node_dir = rec["node_dir"]
    problems = hoststate.restore(rec["snapshot"], [node_dir], BRIDGE)
    if not problems:
        shutil.rmtree(node_dir, ignore_errors=True)
        try:
            _record_path().unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(HOST_DIR, ignore_errors=True)  # the shims' socket dir with it
    return problems


def clean_stale() -> dict | None:
    """Call holding the HostLock. Restores the host from a record a crash left (and removes
    it); returns the record of a live node that still holds the host, else None."""
    rec = read_record()
    if rec is None:
        return None
    if record_is_live(rec):
        return rec
    _log(f"restoring the host from a record a crash left ({rec.get('node_dir')})")
    problems = teardown(rec)
    if problems:
        raise RuntimeError("could not restore the host after an earlier real node:\n  " + "\n  ".join(problems))
    return None


class RealNode:
    def __init__(self, cp: ControlPlane, owner_pid: int | None = None):
        self.cp = cp
        self.bin_dir = cp.bin_dir
        self.dir = cp.state_dir / "real-node"
        self.owner_pid = owner_pid
        self.procs: dict[str, subprocess.Popen] = {}
        self.record: dict | None = None

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def logs(self) -> dict[str, Path]:
        # Beside the control plane's logs, not in the node dir: they outlive the node's teardown.
        return {c: self.cp.state_dir / "logs" / f"real-node-{c}.log" for c in ("containerd", "kubelet")}

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / "ctr"), "--address", str(self.containerd_socket), "-n", "k8s.io", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    # ---- configuration -------------------------------------------------------------------------
    def _containerd_config(self) -> str:
        d = self.dir / "containerd"
        return f"""version = 4
root = "{d / 'root'}"
state = "{d / 'state'}"
imports = []  # not the host's /etc/containerd/conf.d
# NRI (its socket would be /var/run/nri) is not used here.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[plugins."io.containerd.server.v1.grpc"]
  address = "{self.containerd_socket}"
[plugins."io.containerd.server.v1.ttrpc"]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.shim.v1.manager"]
  # Instead of /run/containerd/s. At most 42 characters (unix socket paths are short), so not
  # in the state dir.
  socket_dir = "{HOST_DIR / 's'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  # The test machines' root lacks CAP_SYS_RESOURCE: without this, setting the pause container's
  # oom_score_adj below containerd's own fails and the sandbox dies.
  restrict_oom_score_adj = true
  cdi_spec_dirs = ["{d / 'cdi'}"]
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{self.bin_dir / 'cni'}"]
    conf_dir = "{self.dir / 'cni-conf'}"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{d / 'runc'}"
        SystemdCgroup = false
"""

    def _cni_config(self) -> dict:
        return {
            "cniVersion": "1.0.0",
            "name": "sheepdog-real-node",
            "plugins": [
                {
                    "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _kubelet_config(self, ip: str, port: int, healthz: int) -> dict:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The test machines mount cgroup v1 controllers (plus an empty v2 hierarchy);
            # Kubernetes 1.35+ refuses v1 unless told otherwise.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            "staticPodPath": "",
            "failSwapOn": False,
            # Check the kernel settings (set before start, restored after) instead of writing them.
            "protectKernelDefaults": True,
            "address": ip,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cp.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "registerWithTaints": [TAINT],
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 30,
            # A shared test machine: its free memory and disk say nothing about this node.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            # No image garbage collection: imported images cannot be pulled again.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "10s",
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "logging": {"format": "text"},
        }

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 180.0, wait_for_host: float = 600.0, images: list[Path] = ()) -> None:
        """Start the node; `images` (archives) are imported before the kubelet starts, so that
        containerd's CRI image cache holds them before any pod can be bound here."""
        ensure_binaries(self.bin_dir, build=os.environ.get("SHEEPDOG_CLUSTER_BUILD", "1") != "0")
        if not Path(RUNC).is_file():
            raise FileNotFoundError(f"{RUNC} is missing: install Debian's runc (scripts/setup-debian)")
        t0 = time.monotonic()
        deadline = t0 + wait_for_host
        told = False
        while True:
            # The lock is held only to look and to start, never while waiting: the node being
            # waited for needs it to stop.
            with HostLock(timeout=max(1.0, deadline - time.monotonic())):
                live = clean_stale()
                if live is None:
                    self._start_locked(timeout, images)
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"a real node is running on this host (state {live.get('state_dir')}); stop it with "
                    f"tests/cluster/down --state-dir {live.get('state_dir')}")
            if not told:
                told = True
                _log(f"waiting up to {wait_for_host:.0f}s for the real node of {live.get('state_dir')} "
                     "to stop (one real node per host)")
            time.sleep(1)
        _log(f"node {NODE_NAME} Ready after {time.monotonic() - t0:.1f}s")

    def _start_locked(self, timeout: float, images) -> None:
        """The start proper, holding the HostLock, with the host free."""
        if self.dir.exists():  # a crash of this very state dir, its record already restored
            shutil.rmtree(self.dir, ignore_errors=True)
        self.record = {
            "state_dir": str(self.cp.state_dir),
            "node_dir": str(self.dir),
            "containerd_socket": str(self.containerd_socket),
            "owner_pid": self.owner_pid,
            "pids": {},
            "snapshot": hoststate.snapshot(),
        }
        # Written before the first change: whatever happens next, a record exists to undo it.
        _write_record(self.record)
        try:
            self._start(timeout, images)
        except BaseException:
            _log("start failed: restoring the host")
            for c in ("kubelet", "containerd"):
                _log(f"---- {self.logs[c]} (tail)\n{_tail(self.logs[c], 20)}")
            self._teardown()
            raise

    def _start(self, timeout: float, images) -> None:
        d = self.dir
        for sub in ("containerd", "cni-conf", "cni-ipam", "kubelet", "kubelet-pki", "pod-logs",
                    "volume-plugins", "images"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        hoststate.write_sysctls(hoststate.KUBELET_SYSCTLS)
        self.logs["kubelet"].parent.mkdir(parents=True, exist_ok=True)
        (d / "containerd" / "config.toml").write_text(self._containerd_config())
        (d / "cni-conf" / "10-sheepdog.conflist").write_text(json.dumps(self._cni_config(), indent=1))
        self._route_api_service()
        self._spawn("containerd", [str(self.bin_dir / "containerd"), "--config", str(d / "containerd" / "config.toml")])
        self._wait("containerd", lambda: self.ctr("version", check=False, timeout=10).returncode == 0, timeout)
        self._check_cri()
        for archive in [self._pause_archive(), *images]:
            self.import_image(archive)
        # A Node of this name left by a crash still says Ready (for 40 s, until the node
        # lifecycle controller notices): the wait below must see the new kubelet's status, and
        # the crashed node's pods must not be run again.
        self._forget_node()
        ip = host_ip()
        port, healthz = free_ports(2)
        (d / "kubelet-config.json").write_text(json.dumps(self._kubelet_config(ip, port, healthz), indent=1))
        kubeconfig = self._node_kubeconfig()
        self._spawn("kubelet", [
            str(self.bin_dir / "kubelet"),
            f"--config={d / 'kubelet-config.json'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={d / 'kubelet'}",
            f"--cert-dir={d / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={ip}",
            f"--node-labels={LABEL}=true",
            "--v=2",
        ])
        client = KubeClient(str(self.cp.kubeconfig), timeout=10)

        def ready() -> bool:
            node = client.get(f"/api/v1/nodes/{NODE_NAME}")
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))

        self._wait(f"node {NODE_NAME} Ready", ready, timeout)

    def _route_api_service(self) -> None:
        """Pods reach the API server at the `kubernetes` Service's address, as on any cluster,
        with no kube-proxy: one DNAT rule sends what a pod on the bridge sends to
        SERVICE_IP:443 to the API server on 127.0.0.1 (it listens on loopback only; the serving
        certificate names SERVICE_IP). Loopback is no valid destination or source for packets
        of another interface unless that interface has route_localnet, so the bridge is made
        here (the CNI bridge plugin adopts it, with the same gateway address) and gets it; the
        setting goes with the bridge. Only packets arriving on the bridge match: nothing from
        off this machine reaches the API server. The rule and the bridge are undone with the
        rest of the host's state (hoststate.restore)."""
        ip = ["ip"]
        for args in (["link", "add", BRIDGE, "type", "bridge"], ["addr", "add", GATEWAY, "dev", BRIDGE],
                     ["link", "set", BRIDGE, "up"]):
            res = subprocess.run(ip + args, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")
        rule = ["-t", "nat", "-A", "PREROUTING", "-i", BRIDGE, "-d", f"{SERVICE_IP}/32", "-p", "tcp",
                "--dport", str(API_SERVICE_PORT), "-m", "comment", "--comment", "sheepdog real node: kubernetes Service",
                "-j", "DNAT", "--to-destination", f"127.0.0.1:{self.cp.ports['kube-apiserver']}"]
        res = subprocess.run(["iptables", *rule], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"iptables {' '.join(rule)} failed: {res.stderr.strip()}")

    def _check_cri(self) -> None:
        """containerd serves even when a plugin failed to load; the kubelet then only says the
        CRI service is unknown. Name the plugin that failed instead."""
        failed = [line.split() for line in self.ctr("plugins", "ls").stdout.splitlines()
                  if line.split()[-1:] == ["error"]]
        names = {f"{p[0]} {p[1]}" for p in failed if len(p) >= 2}
        crucial = {n for n in names if "cri" in n or "shim" in n or "runtime" in n or "overlayfs" in n}
        if crucial:
            raise RuntimeError(f"containerd plugins failed to load: {', '.join(sorted(crucial))}; see "
                               f"{self.logs['containerd']}:\n{_tail(self.logs['containerd'], 20)}")

    def _node_kubeconfig(self) -> Path:
        cp = self.cp
        cp.issue_cert("node-" + NODE_NAME, f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
        path = self.dir / "kubelet.kubeconfig"
        cp._write_kubeconfig(path, "node-" + NODE_NAME)
        return path

    def _pause_archive(self) -> Path:
        out = self.dir / "images" / "pause.tar"
        data = (self.bin_dir / "node" / "sheepdog-pause").read_bytes()
        write_oci_archive(out, PAUSE_IMAGE, {"/pause": (data, 0o755)}, ["/pause"], user="65535:65535")
        return out

    def import_image(self, archive: str | Path) -> None:
        """Import an image archive (OCI layout or docker save format) into the CRI namespace.
        After start(), containerd's CRI learns of it from an event a moment later: a pod bound
        in between fails with ErrImageNeverPull and the kubelet retries it with back-off, so
        pass images to start() where possible."""
        # No ctr's default 300 s: the CPU worker's 3.6 GB archive (7.8 GB unpacked) took 201 s
        # on a loaded machine and over 300 s on one at load 27.
        self.ctr("images", "import", str(archive), timeout=IMPORT_TIMEOUT)
        self._digest_refs()

    def _digest_refs(self) -> None:
        """Give each tagged image a `repo@digest` name too. Pulled images have one; imported ones
        only have their tag, and then the CRI reports no repo digest and the kubelet puts the bare
        config digest in a container's imageID. With it, imageID is `repo@sha256:<manifest>`,
        the digest a registry would serve the same image under."""
        refs = {}
        for line in self.ctr("images", "ls").stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                refs[parts[0]] = parts[2]
        for ref, digest in refs.items():
            if ref.startswith("sha256:") or "@" in ref:
                continue
            repo, _, tag = ref.rpartition(":")
            if not repo or "/" in tag:
                continue
            if f"{repo}@{digest}" not in refs:
                self.ctr("images", "tag", ref, f"{repo}@{digest}")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = self.logs[name]
        with open(log, "ab") as f:
            f.write(f"==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            f.flush()
            env = dict(os.environ)
            # The kubelet and the CNI plugins call iptables, mount, ip; runc is found by path.
            env["PATH"] = f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    cwd=self.dir, env=env, start_new_session=True)
        self.procs[name] = proc
        assert self.record is not None
        self.record["pids"][name] = proc.pid
        _write_record(self.record)

    def _wait(self, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}; "
                                       f"see {self.logs[name]}:\n{_tail(self.logs[name], 30)}")
            try:
                if check():
                    return
            except (OSError, ApiError, subprocess.SubprocessError) as e:
                last = e
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last})")

    def is_running(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def stop(self) -> list[str]:
        """Stop the node and restore the host; returns what could not be undone (empty when
        clean). Also removes the Node and the pods bound to it from the API server."""
        with HostLock(timeout=120):
            return self._teardown()

    def _teardown(self) -> list[str]:
        rec = self.record or read_record()
        if rec is None or rec.get("node_dir") != str(self.dir):
            return []
        problems = teardown(rec)
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        self.procs.clear()
        self.record = None
        self._forget_node()
        return problems

    def _forget_node(self) -> None:
        """Pods bound to the stopped node would otherwise wait for the pod GC (and be run again by
        a later real node of the same name); the Node object goes too."""
        try:
            client = KubeClient(str(self.cp.kubeconfig), timeout=10)
            pods = client.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}")["items"]
            for pod in pods:
                m = pod["metadata"]
                try:
                    client.delete(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                                  {"gracePeriodSeconds": 0})
                except ApiError as e:
                    if e.status != 404:
                        raise
            client.delete(f"/api/v1/nodes/{NODE_NAME}")
        except ApiError as e:
            if e.status != 404:
                _log(f"could not remove node {NODE_NAME} from the API server: {e}")
        except OSError:
            pass  # the API server is down already: nothing to tidy there


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
