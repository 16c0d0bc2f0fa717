"""tests/cluster/build's cache rule, on the real binaries: what a build would make (--plan).

A binary is rebuilt when it is missing, reports another version, or was built from another go.sum
of its wrapper; a changed k8s-tools go.sum rebuilds all six of its binaries, whatever --only says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster.controlplane import BUILD_SCRIPT, find_bin_dir

GOMOD = BUILD_SCRIPT.parent / "gomod"
K8S_TOOLS = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm"]


def build(cache: Path, *args: str) -> list[str]:
    env = {**os.environ, "SHEEPDOG_CACHE": str(cache)}
    out = subprocess.run([str(BUILD_SCRIPT), *args], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.split()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache holding the built binaries (linked) and the stamps of the committed wrappers."""
    real = find_bin_dir()
    bin_dir = Path(build(tmp_path, "--bin-dir")[-1])
    bin_dir.mkdir(parents=True)
    for name in ["etcd", *K8S_TOOLS]:
        (bin_dir / name).symlink_to(real / name)
    for wrapper in ("k8s-tools", "etcd"):
        shutil.copy(GOMOD / wrapper / "go.sum", bin_dir / f".{wrapper}.go.sum")
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
