"""Fixtures for the local executor: a project directory (run file, seeds, a model directory)
and the fake stage program (fake_jobs/sheepdog_fake_jobs) in place of sheepdog_jobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FAKE_JOBS = Path(__file__).parent / "fake_jobs"

RUN_YAML = """apiVersion: sheepdog.dev/v1alpha1
kind: SelfAlignmentRun
metadata:
  name: demo
spec:
  model:
    base: models/tiny
  seed:
    path: seeds/tasks.jsonl
  iterations: {iterations}
  training:
    strategy: {strategy}
  retries: {retries}
{extra}"""

CPU_TRAIN = "    train: {gpus: 0}\n"

SEEDS = [
    {"id": "s0", "instruction": "Name three primary colours.", "instances": [{"input": "", "output": "red, yellow, blue"}]},
    {"id": "s1", "instruction": "Rewrite in the passive voice.", "instances": [{"input": "Ann wrote it.", "output": "It was written by Ann."}]},
]


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.log = root / "stages.log"
        (root / "models" / "tiny").mkdir(parents=True)
        (root / "models" / "tiny" / "config.json").write_text("{}")
        (root / "seeds").mkdir()
        self.seeds = root / "seeds" / "tasks.jsonl"
        self.seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
        self.run_file = root / "run.yaml"
        self.write_run()
        self.workdir = root / "work"

    def write_run(self, iterations: int = 1, strategy: str = "one_base", retries: int = 1, extra: str = "") -> Path:
        # One train rank (gpus: 0): the default train (8 GPUs) would start 8 ranks of the fake
        # stage here, as `sheepdog run` does on a laptop (tests/local/test_train_ranks.py).
        if "    train:" not in extra:
            head, found, rest = extra.partition("  stages:\n")
            extra = head + "  stages:\n" + CPU_TRAIN + rest if found else extra + "  stages:\n" + CPU_TRAIN
        self.run_file.write_text(RUN_YAML.format(iterations=iterations, strategy=strategy, retries=retries,
                                                 extra=extra))
        return self.run_file

    def invocations(self) -> list[tuple[int, str]]:
        if not self.log.exists():
            return []
        return [(d["iteration"], d["stage"]) for d in map(json.loads, self.log.read_text().splitlines())]

    def logged(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def report(self) -> dict:
        return json.loads((self.workdir / "report.json").read_text())

    def status(self) -> dict:
        return json.loads((self.workdir / "status.json").read_text())


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    p = Project(tmp_path)
    monkeypatch.setenv("SHEEPDOG_STAGE_MODULE", "sheepdog_fake_jobs")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKE_JOBS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FAKE_LOG", str(p.log))
    for knob in ("FAKE_FAIL", "FAKE_FAIL_ONCE", "FAKE_KILL_PARENT", "FAKE_NO_SUMMARY", "FAKE_METRICS", "FAKE_CRASH"):
        monkeypatch.delenv(knob, raising=False)
    return p


QUICKSTART_SEEDS = Path(__file__).resolve().parents[2] / "examples" / "seeds" / "quickstart.jsonl"
TINY_BASE = "models/smollm2-135m-instruct"


def real_tiny_workdir(tmp_path: Path, tiny_model: str, run_yaml: str, monkeypatch) -> tuple[Path, Path]:
    """(workdir, run file) of a REAL run of the tiny model through the local executor: the
    quickstart seeds at seeds/quickstart.jsonl, the model linked at TINY_BASE, the real
    sheepdog_jobs on one torch thread."""
    import shutil

    monkeypatch.setenv("SHEEPDOG_TORCH_THREADS", "1")
    monkeypatch.delenv("SHEEPDOG_STAGE_MODULE", raising=False)  # the real sheepdog_jobs
    work = tmp_path / "work"
    (work / "seeds").mkdir(parents=True)
    (work / "models").mkdir()
    shutil.copy(QUICKSTART_SEEDS, work / "seeds" / "quickstart.jsonl")
    (work / TINY_BASE).symlink_to(Path(tiny_model).resolve(), target_is_directory=True)
    run_file = work / "run.yaml"
    run_file.write_text(run_yaml)
    return work, run_file
