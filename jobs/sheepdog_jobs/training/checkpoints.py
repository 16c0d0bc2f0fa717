"""Which Trainer checkpoint a restarted train attempt may resume from.

The Trainer writes `checkpoint-<step>/` in place, file by file, so a SIGKILL (preemption, node
loss) can leave a directory that looks like a checkpoint but lacks a shard or holds a
truncated one. A checkpoint is trusted only once every rank has finished writing it and
rank 0 has added MARKER: the training's fingerprint (a changed spec or data set never resumes
an unrelated training) and the size of every file (a file cut short or removed afterwards
shows). Sizes, not checksums: a 72B optimizer state is hundreds of GB and is re-read anyway.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

from sheepdog_jobs import storage

MARKER = "sheepdog_checkpoint.json"
_NAME = re.compile(r"^checkpoint-([0-9]+)$")


def _files(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MARKER}


def mark_complete(directory: Path, fingerprint: str, step: int) -> None:
    """Call on rank 0 after every rank has written its part of the checkpoint."""
    storage.atomic_write_json(directory / MARKER, {"fingerprint": fingerprint, "step": step,
                                                   "files": _files(directory)})


def is_complete(directory: Path, fingerprint: str) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(marker, dict) and marker.get("fingerprint") == fingerprint
            and marker.get("files") == _files(directory))


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every checkpoint-<step> under root, oldest first."""
    found = [(int(m.group(1)), p) for p in (root.iterdir() if root.is_dir() else [])
             if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_complete(root: Path, fingerprint: str) -> Optional[Path]:
    for _, directory in reversed(checkpoints(root)):
        if is_complete(directory, fingerprint):
            return directory
    return None


def drop_untrusted(root: Path, fingerprint: str) -> list[Path]:
    """Remove the checkpoints a resume must not use (half-written, or of another training), so
    the Trainer's own rotation never counts them. Rank 0 only."""
    dropped = [d for _, d in checkpoints(root) if not is_complete(d, fingerprint)]
    for d in dropped:
        shutil.rmtree(d, ignore_errors=True)
    return dropped


class MarkComplete(TrainerCallback):
    """Marks each checkpoint once every rank has written it, and saves one at each epoch's end
    too (the Trainer's save_strategy is either steps or epochs, not both)."""

    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank's shard is on disk
        if state.is_world_process_zero:
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if directory.is_dir():
                mark_complete(directory, self.fingerprint, state.global_step)
