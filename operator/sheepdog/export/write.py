"""Write an export: the model's files plus README.md (the card) and export.json (what was
exported, written last: a destination without it is an unfinished export)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from sheepdog.export.card import model_card
from sheepdog.export.config import ExportConfig, ExportError, is_hf, is_s3

MARKER = "export.json"
CARD = "README.md"


def model_files(model_dir: Path) -> list[Path]:
    """Every file of the model directory (config, weights, tokenizer, lineage), relative to it;
    hidden files (temporary or partial writes) are not part of a model."""
    if not (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        raise ExportError(f"{model_dir}: not a model directory (no config.json or adapter_config.json)")
    return sorted(p.relative_to(model_dir) for p in model_dir.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(model_dir).parts))


def library_of(model_dir: Path) -> str:
    return "transformers" if (model_dir / "config.json").is_file() else "peft"


def manifest(config: ExportConfig, files: list[Path]) -> dict[str, Any]:
    return {"run": config.run, "iteration": config.iteration, "bestIteration": config.best_iteration,
            "source": config.model_dir, "files": [str(f) for f in files] + [CARD]}


def export_model(config: ExportConfig, *, private: Optional[bool] = None, api: Any = None) -> dict[str, Any]:
    """Export as configured; returns the summary ({to, files, bytes}). `private`, `api`: for
    hf:// (a new repository's visibility; the HfApi to push with, for tests)."""
    model_dir = Path(config.model_dir)
    if is_hf(config.to):
        from sheepdog.export.hub import repo_id_of

        repo_id_of(config.to)  # a malformed destination fails before any copy
    files = model_files(model_dir)
    card = model_card(config, library_of(model_dir))
    if is_s3(config.to):
        from sheepdog.export.s3 import upload

        size = upload(model_dir, files, card, manifest(config, files), config.to)
    elif is_hf(config.to):
        size = _push(model_dir, files, card, config, private, api)
    else:
        size = _write_dir(model_dir, files, card, manifest(config, files), Path(config.to), config.run)
    return {"to": config.to, "iteration": config.iteration, "files": len(files) + 2, "bytes": size}


def _push(model_dir: Path, files: list[Path], card: str, config: ExportConfig, private: Optional[bool],
          api: Any) -> int:
    """The same folder a directory export writes, staged locally and uploaded to the hub."""
    import tempfile

    from sheepdog.export.hub import hub_api, push_folder

    api = hub_api(api)  # no token: stop before copying gigabytes
    with tempfile.TemporaryDirectory(prefix="sheepdog-model-") as tmp:
        size = write_model_folder(model_dir, files, card, manifest(config, files), Path(tmp))
        push_folder(Path(tmp), config.to, "model", private=private, api=api,
                    message=f"sheepdog export of run {config.run}, iteration {config.iteration}")
    return size


def _write_dir(model_dir: Path, files: list[Path], card: str, info: dict[str, Any], to: Path, run: str) -> int:
    def build(tmp: Path) -> int:
        return write_model_folder(model_dir, files, card, info, tmp)

    return replace_dir(to, run, lambda folder: _read(folder / MARKER).get("run"), "an export", build)


def write_model_folder(model_dir: Path, files: list[Path], card: str, info: dict[str, Any], folder: Path) -> int:
    """The export's files into `folder`; returns the bytes of the model files."""
    size = 0
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_dir / rel, folder / rel)
        size += (folder / rel).stat().st_size
    (folder / CARD).write_text(card, encoding="utf-8")
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return size


T = TypeVar("T")


def replace_dir(to: Path, run: str, owner: Callable[[Path], Optional[str]], what: str,
                build: Callable[[Path], T]) -> T:
    """`build(folder)` into a folder beside `to`, then renamed into place: a kill leaves either
    no export or a whole one. An earlier export of the same run at `to` (`owner(to) == run`) is
    replaced (a retried export Job); anything else there is never overwritten."""
    if to.exists() and (not to.is_dir() or any(to.iterdir())) and owner(to) != run:
        raise ExportError(f"{to}: exists and is not {what} of run {run}; choose an empty or new directory")
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.parent / f".{to.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        result = build(tmp)
        if to.exists():
            shutil.rmtree(to)
        tmp.replace(to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
