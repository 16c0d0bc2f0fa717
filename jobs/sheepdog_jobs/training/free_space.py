"""Free space before the train stage writes a model: fail in seconds with the numbers, not after
hours of training with a half-written 145 GB model and a full volume.

What a save writes: the merged model, in the base's dtype, is about the size of the base's
weight files (a LoRA merge changes values, not shapes), plus the adapter (small); an unmerged
save writes the adapter only. The check runs when training starts (rank 0, before any GPU hour
is spent) and again right before the save (checkpoints written meanwhile took space).
"""

from __future__ import annotations

import shutil
from pathlib import Path

GiB = 1024 ** 3
# Room for the adapter, tokenizer and config files beside the weights, and for file-system
# overhead: a small margin over the weights' bytes.
MARGIN = 0.02
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class NoSpace(Exception):
    pass


def weight_bytes(model_dir: str | Path) -> int:
    """Bytes of a model directory's weight files (0 for a hub id or a directory without any)."""
    root = Path(model_dir)
    if not root.is_dir():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def needed_bytes(base_model: str | Path, merge: bool, adapter_bytes: int = 0) -> int:
    """What the save writes: the merged model (the base's weight bytes) and the adapter."""
    weights = weight_bytes(base_model) if merge else 0
    return int((weights + adapter_bytes) * (1 + MARGIN))


def check(directory: str | Path, needed: int, what: str) -> None:
    """Raises NoSpace with the numbers when `directory`'s file system has less than `needed`
    bytes free."""
    path = Path(directory)
    while not path.exists() and path != path.parent:  # the volume holds the first existing parent
        path = path.parent
    usage = shutil.disk_usage(path)
    if usage.free < needed:
        raise NoSpace(
            f"{what} needs {needed / GiB:.2f} GiB on {path} but only {usage.free / GiB:.2f} GiB of "
            f"{usage.total / GiB:.2f} GiB is free: enlarge the claim, free space (storage.keepModels: "
            f"last or best drops superseded models) or set training.merge: false (docs/gpu-plan.md, "
            f"storage sizing)")
