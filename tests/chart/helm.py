"""Helpers shared by tests/chart and tests/metrics: find helm, render the chart, read manifests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sheepdog"
BUILD = ROOT / "tests" / "cluster" / "build"

_helm: Optional[str] = None


def helm_bin() -> str:
    """The helm that tests/cluster/build makes (built when missing), else one on PATH."""
    global _helm
    if _helm:
        return _helm
    env_dir = os.environ.get("SHEEPDOG_CLUSTER_BIN")
    candidates = []
    if env_dir:
        candidates.append(Path(env_dir) / "helm")
    out = subprocess.run([str(BUILD), "--bin-dir"], capture_output=True, text=True, check=True)
    bin_dir = Path(out.stdout.strip().splitlines()[-1])
    candidates.append(bin_dir / "helm")
    for c in candidates:
        if c.is_file():
            _helm = str(c)
            return _helm
    if os.environ.get("SHEEPDOG_CLUSTER_BUILD", "1") != "0":
        subprocess.run([str(BUILD), "--only", "helm"], check=True, stdout=subprocess.DEVNULL)
        if (bin_dir / "helm").is_file():
            _helm = str(bin_dir / "helm")
            return _helm
    found = shutil.which("helm")
    if found:
        _helm = found
        return found
    raise FileNotFoundError("helm not found: run tests/cluster/build --only helm")


def helm_env() -> dict[str, str]:
    env = dict(os.environ)
    # helm keeps caches and its repository config under these: keep them out of $HOME.
    cache = ROOT / ".cache" / "helm"
    for key, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env.setdefault(key, str(cache / sub))
    return env


def helm(
    *args: str, check: bool = True, input: Optional[str] = None, env: Optional[Mapping[str, str]] = None
) -> subprocess.CompletedProcess:
    full_env = helm_env()
    if env:
        full_env.update(env)
    res = subprocess.run(
        [helm_bin(), *args], input=input, capture_output=True, text=True, env=full_env, timeout=300
    )
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def _value_args(values: Optional[Mapping[str, Any]], sets: Iterable[str]) -> list[str]:
    args: list[str] = []
    if values:
        args += ["--values", "-"]
    for s in sets:
        args += ["--set", s]
    return args


def template(
    values: Optional[Mapping[str, Any]] = None,
    sets: Iterable[str] = (),
    *,
    release: str = "sd",
    namespace: str = "sheepdog-system",
    extra: Iterable[str] = (),
    check: bool = True,
    include_crds: bool = True,
) -> subprocess.CompletedProcess:
    """`helm template` of the chart (CRDs included), values given as a dict and/or --set."""
    args = ["template", release, str(CHART), "--namespace", namespace,
            *(["--include-crds"] if include_crds else []), *_value_args(values, sets), *extra]
    return helm(*args, check=check, input=yaml.safe_dump(dict(values)) if values else None)


def render(values: Optional[Mapping[str, Any]] = None, sets: Iterable[str] = (), **kw: Any) -> list[dict]:
    """The rendered manifests as dicts (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(template(values, sets, **kw).stdout) if d]


def find(docs: Iterable[dict], kind: str, name: Optional[str] = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: Iterable[dict], kind: str, name: Optional[str] = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def to_yaml(docs: Iterable[dict]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)
