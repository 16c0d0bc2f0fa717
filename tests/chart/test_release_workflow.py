"""The release workflow (.github/workflows/release.yml) without GitHub: actionlint (a Go module,
built once into the sheepdog cache) accepts it, it builds and publishes what images/ defines, and
scripts/pin-chart-digests, which it runs before `helm package`, pins digests the chart renders.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import CHART, ROOT, helm, one
from tests.chart.test_images import parse_dockerfile

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
PIN = ROOT / "scripts" / "pin-chart-digests"
ACTIONLINT_VERSION = "v1.7.12"
ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint"
IMAGES = {
    "sheepdog-operator": "images/operator.Dockerfile",
    "sheepdog-worker-cpu": "images/worker-cpu.Dockerfile",
    "sheepdog-worker": "images/worker.Dockerfile",
}


def actionlint_bin() -> Path:
    """actionlint at ACTIONLINT_VERSION in ${SHEEPDOG_CACHE:-~/.cache/sheepdog}/tools/, built with
    `go install` when missing or of another version (a lock keeps parallel test workers from
    building it twice). Module downloads are verified against Go's checksum database."""
    cache = Path(os.environ.get("SHEEPDOG_CACHE") or Path.home() / ".cache" / "sheepdog")
    bin_dir = cache / "tools" / f"actionlint-{ACTIONLINT_VERSION}"
    exe = bin_dir / "actionlint"
    bin_dir.mkdir(parents=True, exist_ok=True)
    with open(bin_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.is_file():
            out = subprocess.run([str(exe), "-version"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.split("\n", 1)[0].strip() == ACTIONLINT_VERSION:
                return exe
        go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
        if not go:
            pytest.fail("go is not installed: it builds actionlint (and the test control plane)")
        env = dict(os.environ, GOBIN=str(bin_dir), CGO_ENABLED="0")
        res = subprocess.run([go, "install", "-trimpath", f"{ACTIONLINT_MODULE}@{ACTIONLINT_VERSION}"],
                             capture_output=True, text=True, env=env, timeout=900)
        assert res.returncode == 0, f"go install actionlint failed:\n{res.stderr}"
    return exe


@pytest.fixture(scope="module")
def actionlint() -> Path:
    return actionlint_bin()


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def lint(actionlint: Path, root: Path, name: str) -> subprocess.CompletedProcess:
    # actionlint finds the repository from the working directory; -no-color for readable failures
    return subprocess.run([str(actionlint), "-no-color", f".github/workflows/{name}"], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_release_workflow_passes_actionlint(actionlint):
    res = lint(actionlint, ROOT, WORKFLOW.name)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    """The lint is not vacuous: a job output read from a job the build does not need is
    reported on the copied workflow."""
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    text = WORKFLOW.read_text()
    broken = text.replace("needs.bases.outputs.version }}\n            REVISION",
                          "needs.publish.outputs.version }}\n            REVISION", 1)
    assert broken.count("needs.publish.outputs.version") == 1
    (wf / "release.yml").write_text(broken)
    res = lint(actionlint, tmp_path, "release.yml")
    assert res.returncode != 0
    assert 'property "publish" is not defined' in res.stdout, res.stdout


def test_release_runs_on_version_tags_only(workflow):
    on = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert set(on) == {"push"} and on["push"] == {"tags": ["v*.*.*"]}
    assert workflow["permissions"] == {"contents": "read"}


def test_release_builds_each_image_from_its_dockerfile_and_pinned_base(workflow):
    include = workflow["jobs"]["build"]["strategy"]["matrix"]["include"]
    platforms: dict[str, set[str]] = {}
    for leg in include:
        assert IMAGES[leg["image"]] == leg["dockerfile"]
        args, _ = parse_dockerfile(ROOT / leg["dockerfile"])
        # the ARG the workflow overrides with tag@digest is the Dockerfile's base ARG
        assert leg["base-arg"] in args, f"{leg['dockerfile']} has no ARG {leg['base-arg']}"
        platforms.setdefault(leg["image"], set()).add(leg["platform"])
        assert ("arm" in leg["runner"]) == (leg["platform"] == "linux/arm64"), "each platform builds natively"
    assert set(platforms) == set(IMAGES)
    assert all("linux/amd64" in p for p in platforms.values())
    # the Python-based images on both architectures; the GPU worker follows vLLM's CUDA image
    assert platforms["sheepdog-operator"] == platforms["sheepdog-worker-cpu"] == {"linux/amd64", "linux/arm64"}
    # the bases job resolves the default of exactly those ARGs to digests
    resolve = next(s for s in workflow["jobs"]["bases"]["steps"] if s.get("id") == "resolve")["run"]
    assert "resolve images/operator.Dockerfile PYTHON_IMAGE python" in resolve
    assert "resolve images/worker.Dockerfile VLLM_IMAGE vllm" in resolve
    build = next(s for s in workflow["jobs"]["build"]["steps"] if s.get("id") == "build")["with"]
    assert build["sbom"] is True and build["provenance"] == "mode=max"
    for arg in ("BASE_DIGEST=", "VERSION=", "REVISION=", "SOURCE="):
        assert arg in build["build-args"]
    # every build ARG the workflow passes is one the Dockerfiles' labels use
    for path in IMAGES.values():
        text = (ROOT / path).read_text()
        for label in ("base.digest=\"${BASE_DIGEST}\"", "revision=\"${REVISION}\"", "version=\"${VERSION}\""):
            assert label in text, f"{path}: no label {label}"


def test_release_signs_images_and_chart_keyless_and_pushes_the_chart_as_oci(workflow):
    publish = workflow["jobs"]["publish"]
    assert publish["permissions"]["id-token"] == "write", "keyless signing needs the OIDC token"
    assert set(publish["strategy"]["matrix"]["image"]) == set(IMAGES)
    run = next(s for s in publish["steps"] if s.get("id") == "index")["run"]
    assert "cosign sign --yes --recursive" in run and "cosign attest" in run and "syft scan" in run
    assert not any("COSIGN_KEY" in str(s) or "--key" in str(s) for s in publish["steps"])
    chart = workflow["jobs"]["chart"]
    steps = "\n".join(s.get("run", "") for s in chart["steps"])
    assert chart["permissions"]["id-token"] == "write"
    assert "scripts/pin-chart-digests charts/sheepdog/values.yaml" in steps
    assert steps.index("pin-chart-digests") < steps.index("helm package")
    assert 'helm push "dist/sheepdog-${VERSION}.tgz" "oci://ghcr.io/' in steps
    assert "cosign sign --yes" in steps


# ---- scripts/pin-chart-digests -----------------------------------------------------------------

OP_DIGEST = "sha256:" + "1" * 64
WORKER_DIGEST = "sha256:" + "2" * 64


def pin(values: Path, *pairs: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PIN), str(values), "ghcr.io/acme", *pairs], capture_output=True, text=True)


def test_pinned_digests_are_what_the_chart_renders(tmp_path):
    chart = tmp_path / "sheepdog"
    shutil.copytree(CHART, chart)
    before = (chart / "values.yaml").read_text()
    res = pin(chart / "values.yaml", f"sheepdog-operator={OP_DIGEST}", f"sheepdog-worker={WORKER_DIGEST}")
    assert res.returncode == 0, res.stderr
    after = (chart / "values.yaml").read_text()
    # only the repository and digest lines of the two blocks change; comments stay
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 4, changed
    docs = [d for d in yaml.safe_load_all(helm("template", "sd", str(chart), "--namespace", "x").stdout) if d]
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"ghcr.io/acme/sheepdog-operator@{OP_DIGEST}"
    assert f"--worker-image=ghcr.io/acme/sheepdog-worker@{WORKER_DIGEST}" in c["args"]


@pytest.mark.parametrize("pair, message", [
    ("sheepdog-operator=latest", "not a sha256 digest"),
    ("sheepdog-operator=sha256:abc", "not a sha256 digest"),
    (f"sheepdog-worker-gpu={OP_DIGEST}", "0 image blocks"),
    (OP_DIGEST, "expected NAME=sha256"),
])
def test_pin_refuses_what_would_publish_an_unpinned_chart(tmp_path, pair, message):
    values = tmp_path / "values.yaml"
    shutil.copy(CHART / "values.yaml", values)
    before = values.read_text()
    res = pin(values, f"sheepdog-worker={WORKER_DIGEST}", pair)
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert values.read_text() == before, "nothing is written when any pair is refused"
