"""tests/cluster/build's cache rule, on the real binaries: what a build would make (--plan).

A binary is rebuilt when it is missing, reports another version, or was built from another go.sum
of its wrapper; a changed k8s-tools go.sum rebuilds all seven of its binaries, whatever --only says.
The real node's binaries follow the same rule (containerd, the CNI plugins); its C programs are
rebuilt when their sources change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster.controlplane import BUILD_SCRIPT, find_bin_dir
from tests.cluster.realnode import NODE_BINARIES, ensure_binaries

GOMOD = BUILD_SCRIPT.parent / "gomod"
K8S_TOOLS = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kwok", "helm"]
NODE_ONLY = [b for b in NODE_BINARIES if b != "kubelet"]


def build(cache: Path, *args: str) -> list[str]:
    env = {**os.environ, "SHEEPDOG_CACHE": str(cache)}
    out = subprocess.run([str(BUILD_SCRIPT), *args], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.split()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache holding the built binaries (linked) and the stamps of the committed wrappers."""
    real = find_bin_dir()
    ensure_binaries(real)
    bin_dir = Path(build(tmp_path, "--bin-dir")[-1])
    (bin_dir / "cni").mkdir(parents=True)
    (bin_dir / "node").mkdir()
    for name in ["etcd", *K8S_TOOLS, *NODE_ONLY]:
        (bin_dir / name).symlink_to(real / name)
    for wrapper in ("k8s-tools", "etcd", "containerd", "cni-plugins"):
        shutil.copy(GOMOD / wrapper / "go.sum", bin_dir / f".{wrapper}.go.sum")
    shutil.copy(real / "node" / ".sources.sha256", bin_dir / "node" / ".sources.sha256")
    return tmp_path


def bin_dir(cache: Path) -> Path:
    return Path(build(cache, "--bin-dir")[-1])


def test_nothing_to_build_when_every_binary_matches_its_version_and_go_sum(cache):
    assert build(cache, "--plan") == []


def test_a_missing_binary_is_built_alone_and_only_when_wanted(cache):
    (bin_dir(cache) / "helm").unlink()
    assert build(cache, "--plan") == ["helm"]
    assert build(cache, "--plan", "--only", "kubernetes") == []


def test_a_binary_reporting_another_version_is_built_again(cache):
    fake = bin_dir(cache) / "kwok"
    fake.unlink()
    fake.write_text("#!/bin/sh\necho 'kwok version v0.7.0'\n")
    fake.chmod(0o755)
    assert build(cache, "--plan") == ["kwok"]


def test_binaries_built_from_another_go_sum_are_all_built_again(cache):
    stamp = bin_dir(cache) / ".k8s-tools.go.sum"
    stamp.write_text(stamp.read_text().replace("h1:", "h1:X", 1))
    assert build(cache, "--plan", "--only", "helm") == K8S_TOOLS
    (bin_dir(cache) / ".etcd.go.sum").unlink()
    assert build(cache, "--plan") == ["etcd", *K8S_TOOLS]


def test_the_real_node_binaries_follow_their_own_stamps(cache):
    stamp = bin_dir(cache) / ".containerd.go.sum"
    stamp.write_text(stamp.read_text().replace("h1:", "h1:X", 1))
    assert build(cache, "--plan") == ["containerd", "ctr", "containerd-shim-runc-v2"]
    assert build(cache, "--plan", "--only", "kubernetes") == []
    (bin_dir(cache) / "cni" / "portmap").unlink()
    assert build(cache, "--plan", "--only", "node") == [
        "containerd", "ctr", "containerd-shim-runc-v2", "cni/bridge", "cni/loopback", "cni/host-local", "cni/portmap"]


def test_the_c_programs_are_built_again_when_their_sources_change(cache):
    (bin_dir(cache) / "node" / ".sources.sha256").write_text("0" * 64 + "\n")
    assert build(cache, "--plan") == ["node/sheepdog-pause", "node/sheepdog-probe"]


def test_kueue_is_built_only_when_asked_for_and_follows_its_stamp_and_version(cache):
    assert build(cache, "--plan") == []  # the default build leaves Kueue out
    assert build(cache, "--plan", "--only", "kueue") == ["kueue"]
    b = bin_dir(cache)
    (b / "kueue").write_text("#!/bin/sh\n")
    (b / "kueue").chmod(0o755)
    shutil.copy(GOMOD / "kueue" / "go.sum", b / ".kueue.go.sum")
    (b / ".kueue.version").write_text("v0.17.0\n")
    assert build(cache, "--plan", "--only", "kueue") == []
    (b / ".kueue.version").write_text("v0.16.0\n")
    assert build(cache, "--plan", "--only", "kueue") == ["kueue"]
