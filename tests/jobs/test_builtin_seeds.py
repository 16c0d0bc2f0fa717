"""spec.seed.path unset: the 175 Self-Instruct seed tasks shipped with sheepdog_jobs (package
data), so a first run on a new cluster needs no seed file on its volume."""

from __future__ import annotations

import fnmatch
import pathlib
import tomllib

import pytest

from sheepdog.api.spec import RunSpec
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS
from sheepdog_jobs.stages.common import StageError
from sheepdog_jobs.stages.synthesize import Synthesis

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_seed_path_defaults_to_unset():
    assert RunSpec.model_validate({"model": {"base": "m"}}).seed.path is None


def test_unset_seed_file_is_the_built_in_set(tmp_path, make_config):
    synth = Synthesis(make_config(tmp_path, "synthesize", seed_file=None))
    with pytest.raises(StageError, match="generatorModel"):  # seeds read; the model is next
        synth.validate()
    assert synth.seed_file == str(SELF_INSTRUCT_SEED_TASKS) and len(synth.seeds) == 175


def test_seed_tasks_ship_as_package_data_in_the_worker_image():
    pyproject = tomllib.loads((ROOT / "jobs/pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["sheepdog_jobs"]
    package = ROOT / "jobs/sheepdog_jobs"
    for name in ("seed_tasks.jsonl", "LICENSE", "NOTICE"):
        path = package / "data/self_instruct" / name
        assert path.is_file(), path
        assert any(fnmatch.fnmatch(str(path.relative_to(package)), g) for g in globs), (name, globs)
    # the image installs the package itself (not an editable link to sources it does not keep)
    dockerfile = (ROOT / "images/worker.Dockerfile").read_text()
    assert "COPY jobs/ jobs/" in dockerfile and " ./jobs" in dockerfile and "-e ./jobs" not in dockerfile
    assert "!jobs/" in (ROOT / "images/worker.Dockerfile.dockerignore").read_text().splitlines()
