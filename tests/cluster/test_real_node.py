"""The real node (tests/cluster/realnode.py): a kubelet and containerd beside the kwok nodes run a
Pod Security "restricted" pod in a container to completion, and stopping the node leaves the
host as it was. Needs root, runc and the node's binaries (tests/cluster/build)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import hoststate, realnode
from tests.cluster.ociimage import write_oci_archive

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.cluster

PROBE_IMAGE = "localhost/sheepdog/probe:1"
PROBE_USER = 65532
# scripts/build-images --only base (buildah's store): the Debian base the images build on.
BASE_IMAGE = "localhost/sheepdog-base:bookworm"
FIXED_MOUNT_ROOTS = ["/var/lib/kubelet", "/run/containerd", "/run/netns"]


@pytest.fixture(autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("the real node needs root (mounts, cgroups, network namespaces)")
    if not Path(realnode.RUNC).is_file():
        pytest.fail(f"{realnode.RUNC} is missing: run scripts/setup-debian", pytrace=False)


@pytest.fixture
def probe_archive(cluster, tmp_path) -> tuple[Path, str]:
    """An OCI archive of a one-file image (the static probe program, user 65532) and its digest."""
    realnode.ensure_binaries(cluster.bin_dir)
    data = (cluster.bin_dir / "node" / "sheepdog-probe").read_bytes()
    out = tmp_path / "probe.tar"
    digest = write_oci_archive(out, PROBE_IMAGE, {"/probe": (data, 0o755)}, ["/probe"],
                               user=f"{PROBE_USER}:{PROBE_USER}")
    return out, digest


def restricted_pod(name: str, image: str, args: list[str], user: int, restart: str = "Never",
                   command: list[str] | None = None) -> dict:
    """A pod the "restricted" Pod Security level admits, steered to the real node. runAsGroup
    needs runAsUser beside it (containerd refuses a sandbox with a group and no user), and
    without runAsGroup the kubelet runs the image's user with group 0."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "nodeSelector": dict(realnode.NODE_SELECTOR),
            "tolerations": [dict(realnode.TOLERATION)],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 2,
            "securityContext": {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": user,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "args": args,
                **({"command": command} if command else {}),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }


def restricted_namespace(cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")


def node_processes(node_dir: Path) -> list[int]:
    """Processes of the node of node_dir: its kubelet (--root-dir), containerd (--config) and
    shims (-address of its socket) all name that directory."""
    return realnode.pids_with(str(node_dir))


def assert_host_restored(before: dict, node_dir: Path) -> None:
    assert node_processes(node_dir) == []
    assert not node_dir.exists()
    assert hoststate.read_sysctls(list(before["sysctls"])) == before["sysctls"]
    if realnode.read_record() is not None:
        return  # another test run's node holds the host now: the fixed paths are its own
    assert hoststate.leftovers(before, [str(node_dir)], realnode.BRIDGE) == []
    mounts = [m for m in hoststate.mount_points() if hoststate.under(m, FIXED_MOUNT_ROOTS)]
    assert mounts == [m for m in before["mounts"] if hoststate.under(m, FIXED_MOUNT_ROOTS)]
    assert not realnode.HOST_DIR.exists()


def pod_status(cluster, namespace: str, name: str) -> dict:
    return cluster.get_json("pod", name, "-n", namespace).get("status", {})


def test_a_restricted_pod_runs_to_completion_in_a_container_on_the_real_node(cluster, namespace, probe_archive):
    archive, digest = probe_archive
    cp = cluster.control_plane
    before = hoststate.snapshot()
    node_dir = cp.state_dir / "real-node"
    t0 = time.monotonic()
    node = cp.start_real_node(owner_pid=os.getpid(), images=[archive])
    cluster.extra_logs.update({f"real node {c}": p for c, p in node.logs.items()})
    started = time.monotonic() - t0
    try:
        n = cluster.get_json("node", realnode.NODE_NAME)
        assert n["metadata"]["labels"][realnode.LABEL] == "true"
        assert {"key": realnode.LABEL, "value": "true", "effect": "NoSchedule"} in n["spec"]["taints"]
        # The kwok nodes are still there, untainted: the other tests' pods keep landing on them.
        gpu = cluster.get_json("nodes", "-l", "sheepdog.dev/gpu-node=true")["items"]
        assert gpu and all(not g["spec"].get("taints") for g in gpu)

        restricted_namespace(cluster, namespace)
        cluster.apply(restricted_pod("probe", PROBE_IMAGE, ["hello", "real-node"], PROBE_USER), namespace)
        t1 = time.monotonic()
        status = cluster.wait_for(
            "the probe pod to finish",
            lambda: (s := pod_status(cluster, namespace, "probe")).get("phase") in ("Succeeded", "Failed") and s,
            timeout=120,
        )
        ran = time.monotonic() - t1
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        cs = status["containerStatuses"][0]
        assert cs["state"]["terminated"]["exitCode"] == 0
        # The container ran the imported image: the kubelet reports it by its manifest digest.
        assert cs["imageID"] == f"{PROBE_IMAGE.rsplit(':', 1)[0]}@{digest}", cs
        assert status["hostIP"] == realnode.host_ip()
        assert status["podIP"].startswith(realnode.POD_SUBNET.rsplit(".", 1)[0] + ".")
        # Its output, through the API server and the kubelet: the non-root user and group, a
        # read-only root filesystem, the pod's arguments.
        log = cluster.wait_for("the probe's log", lambda: cluster.kubectl(
            "logs", "probe", "-n", namespace, check=False).stdout, timeout=30)
        assert log.strip() == f"uid={PROBE_USER} gid={PROBE_USER} root=read-only args=hello,real-node"
    finally:
        t2 = time.monotonic()
        problems = cp.stop_real_node()
        stopped = time.monotonic() - t2
    print(f"\nreal node: Ready {started:.1f}s, pod done {ran:.1f}s, stop and restore {stopped:.1f}s")
    assert problems == []
    assert_host_restored(before, node_dir)
    assert cluster.kubectl("get", "node", realnode.NODE_NAME, check=False).returncode != 0


def test_a_start_after_a_crash_restores_the_host_first(cluster, namespace, probe_archive):
    """The kubelet and containerd die (SIGKILL) with a pod running: its container, shim, mounts,
    network namespace and cgroups stay. The next start cleans all that up from the record, then
    runs a node as usual, and its stop leaves the host as it was before the first."""
    archive, _ = probe_archive
    cp = cluster.control_plane
    before = hoststate.snapshot()
    node_dir = cp.state_dir / "real-node"
    node = cp.start_real_node(owner_pid=os.getpid(), images=[archive])
    cluster.extra_logs.update({f"real node {c}": p for c, p in node.logs.items()})
    try:
        restricted_namespace(cluster, namespace)
        # The pause program as a long-running workload.
        cluster.apply(restricted_pod("sleeper", realnode.PAUSE_IMAGE, [], 65535, restart="Always"), namespace)
        cluster.wait_for("the sleeper to run", lambda: pod_status(cluster, namespace, "sleeper")
                         .get("containerStatuses", [{}])[0].get("state", {}).get("running"), timeout=120)
        uid = cluster.get_json("pod", "sleeper", "-n", namespace)["metadata"]["uid"]
        crashed_record = realnode.read_record()
        for name in ("kubelet", "containerd"):
            os.kill(node.procs[name].pid, signal.SIGKILL)
            node.procs[name].wait()
        cp._real = None  # the crashed node's object is gone with its process, as after a crash
        pod_cgroups = [d for d in hoststate.cgroup_dirs() if f"/pod{uid}" in d]  # with its containers
        assert pod_cgroups, "the pod's cgroups should outlive its kubelet"
        assert any(Path(d, "cgroup.procs").read_text().strip() for d in pod_cgroups), \
            "the sleeper's processes should outlive its kubelet and containerd"
        assert realnode.read_record() == crashed_record

        node = cp.start_real_node(owner_pid=os.getpid())
        cluster.extra_logs.update({f"real node {c}": p for c, p in node.logs.items()})
        assert realnode.read_record()["pids"]["kubelet"] == node.procs["kubelet"].pid
        # The new node does not run the crashed node's pod again: it was deleted with the Node.
        cluster.wait_for("the sleeper pod gone", lambda: cluster.kubectl(
            "get", "pod", "sleeper", "-n", namespace, check=False).returncode != 0, timeout=60)
    finally:
        problems = cp.stop_real_node()
    assert problems == []
    assert_host_restored(before, node_dir)


def test_the_debian_base_image_runs_python_read_only_as_a_non_root_user(cluster, namespace, tmp_path):
    """The base scripts/build-images makes (Debian's Python), pushed from buildah's store as an
    OCI archive: Python runs in it as 10001:10001 with a read-only root. Built here when absent
    (about 3 min on a new machine; nothing when its inputs are unchanged)."""
    build = subprocess.run([str(ROOT / "scripts" / "build-images"), "--only", "base"], capture_output=True,
                           text=True, timeout=1800)
    assert build.returncode == 0, f"scripts/build-images --only base failed:\n{build.stderr[-4000:]}"
    archive = tmp_path / "base.oci.tar"
    subprocess.run(["buildah", "push", "--quiet", BASE_IMAGE, f"oci-archive:{archive}:{BASE_IMAGE}"],
                   check=True, capture_output=True, timeout=300)
    cp = cluster.control_plane
    before = hoststate.snapshot()
    node = cp.start_real_node(owner_pid=os.getpid(), images=[archive])
    cluster.extra_logs.update({f"real node {c}": p for c, p in node.logs.items()})
    try:
        restricted_namespace(cluster, namespace)
        code = ("import os, sys\n"
                "try:\n    open('/x', 'w')\nexcept OSError as e:\n    root = 'read-only' if e.errno == 30 else str(e)\n"
                "else:\n    root = 'writable'\n"
                "print(os.getuid(), os.getgid(), root, sys.version_info[0])")
        cluster.apply(restricted_pod("py", BASE_IMAGE, ["-c", code], 10001, command=["python3"]), namespace)
        status = cluster.wait_for(
            "the python pod to finish",
            lambda: (s := pod_status(cluster, namespace, "py")).get("phase") in ("Succeeded", "Failed") and s,
            timeout=120,
        )
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        assert status["containerStatuses"][0]["imageID"].startswith("localhost/sheepdog-base@sha256:")
        log = cluster.wait_for("the python pod's log", lambda: cluster.kubectl(
            "logs", "py", "-n", namespace, check=False).stdout, timeout=30)
        assert log.strip() == "10001 10001 read-only 3"
    finally:
        problems = cp.stop_real_node()
    assert problems == []
    assert_host_restored(before, cp.state_dir / "real-node")
