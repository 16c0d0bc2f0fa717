"""Pre-flight checks of a local run's inputs, before any stage starts and before anything is
written. The stage programs check the same things again; checking here means a typo costs a
second, not a model load, and leaves no half-made workdir behind.

Relative seed and model paths are looked up in the workdir first (the storage root, as on a
cluster volume), then beside the run file (so `sheepdog run examples/quickstart.yaml` finds
examples/seeds/...). A path found beside the run file is made absolute.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

from sheepdog.api.spec import SelfAlignmentRun

# "org/name" with nothing on disk under either directory may be a Hugging Face hub id.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# ... but not when it starts like a storage path (models/tiny that is missing is a missing
# model, not a hub repo of an org called "models"), unless the hub cache already holds it.
PATH_LIKE_FIRST = {"models", "model", "data", "runs", "seeds", "checkpoints", "outputs", "cache", ".cache"}
MAX_SEED_PROBLEMS = 5


class InputError(ValueError):
    """Inputs a local run cannot start with. `.problems`: one line each, naming file/line or field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"cannot start the run: {self.problems[0]}"
        return "cannot start the run:\n" + "\n".join(f"  - {p}" for p in self.problems)


def _bases(workdir: Path, run_file_dir: Optional[Path]) -> list[Path]:
    bases = [workdir]
    if run_file_dir is not None and run_file_dir.resolve() != workdir.resolve():
        bases.append(run_file_dir)
    return bases


def _resolve(path: str, bases: list[Path]) -> tuple[Optional[str], list[Path]]:
    """(the spec value to use, or None when nothing exists; where we looked)."""
    if Path(path).expanduser().is_absolute():
        candidate = Path(path).expanduser()
        return (str(candidate) if candidate.exists() else None), [candidate]
    looked = [base / path for base in bases]
    for i, candidate in enumerate(looked):
        if candidate.exists():
            # In the workdir: keep it relative (the workdir is the root). Elsewhere: absolute.
            return (path if i == 0 else str(candidate.resolve())), looked
    return None, looked


def _where(looked: list[Path]) -> str:
    return " or ".join(str(p) for p in looked)


def check_seed_file(path: Path) -> list[str]:
    """Self-Instruct JSONL: every non-blank line a JSON object with a non-empty "instruction"."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        return [f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"]
    except OSError as err:
        return [f"{path}: cannot read: {err.strerror or err}"]
    problems: list[str] = []
    tasks = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            task = json.loads(line)
        except ValueError as err:
            problems.append(f"{path}:{number}: not valid JSON ({getattr(err, 'msg', err)})")
            continue
        if not isinstance(task, dict):
            problems.append(f"{path}:{number}: a seed task must be a JSON object, got {type(task).__name__}")
            continue
        instruction = task.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            problems.append(f'{path}:{number}: seed task has no "instruction" (a non-empty string)')
            continue
        tasks += 1
    if not problems and tasks == 0:
        return [f"{path}: empty: no seed tasks (one JSON object per line, each with an \"instruction\")"]
    if len(problems) > MAX_SEED_PROBLEMS:
        problems = problems[:MAX_SEED_PROBLEMS] + [f"{path}: ... and {len(problems) - MAX_SEED_PROBLEMS} more"]
    return problems


def prepare_local_run(run: SelfAlignmentRun, workdir: Path, run_file: Optional[Path]) -> tuple[SelfAlignmentRun, list[str]]:
    """The run with its seed and model paths resolved, and notes for the user. Raises
    InputError listing every problem found."""
    bases = _bases(workdir, run_file.parent if run_file is not None else None)
    problems: list[str] = []
    notes: list[str] = []
    spec = run.spec

    seed_value: Optional[str] = None  # seed.path unset: the stage's built-in Self-Instruct tasks
    if spec.seed.path is not None:
        seed_value, looked = _resolve(spec.seed.path, bases)
        if seed_value is None:
            problems.append(f"spec.seed.path: no seed file {spec.seed.path!r} (looked at {_where(looked)})")
        else:
            seed_path = Path(seed_value) if Path(seed_value).is_absolute() else workdir / seed_value
            if seed_path.is_dir():
                problems.append(f"spec.seed.path: {seed_path} is a directory, not a JSONL file")
            else:
                problems += check_seed_file(seed_path)

    model_value, looked = _resolve(spec.model.base, bases)
    if model_value is None:
        if _looks_like_hub_id(spec.model.base, bases):
            model_value = spec.model.base
            notes.append(f"spec.model.base {spec.model.base!r} is not on disk: loading it as a hub id")
        else:
            problems.append(f"spec.model.base: no model at {spec.model.base!r} (looked at {_where(looked)})")

    if problems:
        raise InputError(problems)
    resolved = spec.model_copy(update={
        "seed": spec.seed.model_copy(update={"path": seed_value}),
        "model": spec.model.model_copy(update={"base": model_value}),
    })
    return run.model_copy(update={"spec": resolved}), notes


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def _looks_like_hub_id(ref: str, bases: list[Path]) -> bool:
    if not HUB_ID.match(ref):
        return False
    if (_hub_cache() / ("models--" + ref.replace("/", "--"))).is_dir():
        return True
    first = ref.split("/", 1)[0]
    return first not in PATH_LIKE_FIRST and not any((b / first).is_dir() for b in bases)
