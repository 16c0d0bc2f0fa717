"""What every stage shares: the expected-error type, input checks, logging, progress."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

from sheepdog.stage_config import Layout, StageConfig

log = logging.getLogger("sheepdog_jobs")


class StageError(Exception):
    """An expected failure (bad input, unsupported setting). The CLI turns it into ONE line
    and an {"ok": false} summary, with no traceback."""


def layout(config: StageConfig) -> Layout:
    return Layout(root=config.root, run_dir=config.run_dir)


def looks_like_path(model: str) -> bool:
    # StageConfig passes absolute paths for models on the volume; anything else that does not
    # exist locally is a hub id ("org/name"), which only the loaders can check.
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(model)


def check_model(model: str, field: str) -> None:
    """Fail before any load when a model directory is missing or not a model."""
    if not looks_like_path(model):
        return
    p = Path(model).expanduser()
    if not p.exists():
        raise StageError(f"{field}: model path {model} does not exist")
    if not p.is_dir():
        raise StageError(f"{field}: model path {model} is not a directory")
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise StageError(f"{field}: {model} has no config.json (not a Hugging Face model directory)")


def check_not_adapter(model: str, field: str) -> None:
    """An unmerged LoRA adapter (training.merge: false) cannot generate or be trained on
    directly: say so instead of failing inside the loader."""
    p = Path(model).expanduser()
    if (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
        raise StageError(f"{field}: {model} is an unmerged LoRA adapter; stages that load it as a model "
                         "need training.merge: true")


def check_served(model: str, field: str) -> None:
    """A model a stage generates with: a whole model, or an unmerged LoRA adapter
    (training.merge: false) whose base the engines load and apply it to (engines/adapters.py).
    Fails before any load when either is missing or the adapter cannot be served."""
    from sheepdog_jobs.engines import adapters

    check_model(model, field)
    try:
        served = adapters.resolve(model)
    except adapters.AdapterError as exc:
        raise StageError(f"{field}: {exc}") from None
    if served.adapter is not None:
        check_model(served.base, f"{field} (the base its adapter {model} names)")


def check_file(path: str, field: str) -> None:
    p = Path(path)
    if not p.exists():
        raise StageError(f"{field}: file {path} does not exist")
    if not p.is_file():
        raise StageError(f"{field}: {path} is not a file")


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def shard_of(config: StageConfig) -> tuple[int, int]:
    """(index, count). Index from the config, else JOB_COMPLETION_INDEX (Indexed Job), else 0."""
    count = config.shard.count
    index = config.shard.index
    if index is None:
        raw = os.environ.get("JOB_COMPLETION_INDEX", "0")
        try:
            index = int(raw)
        except ValueError:
            raise StageError(f"JOB_COMPLETION_INDEX={raw!r} is not an integer") from None
    if count < 1:
        raise StageError(f"shard.count must be >= 1, got {count}")
    if not 0 <= index < count:
        raise StageError(f"shard index {index} is outside 0..{count - 1}")
    return index, count


def mean(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def progress(iterable=None, **kwargs):
    """tqdm on stderr; in a pod (no tty) it updates rarely so logs stay readable."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, file=sys.stderr, mininterval=0.5 if tty else 30.0, dynamic_ncols=tty, **kwargs)


def setup_logging() -> None:
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.setLevel(os.environ.get("SHEEPDOG_LOG_LEVEL", "INFO"))
        log.propagate = False


def configure_torch_threads() -> None:
    """SHEEPDOG_TORCH_THREADS caps intra-op threads: on an oversubscribed CPU, OpenMP
    spin-waiting made 2 threads ~10x slower than 1 here (measured). It also sets OMP_NUM_THREADS
    (unless set): vLLM's CPU kernels keep an OpenMP pool of one thread per core whatever torch is
    told (seen: two busy threads under SHEEPDOG_TORCH_THREADS=1), and OpenMP reads the variable
    once, when torch loads it, so this runs before torch is imported."""
    n = os.environ.get("SHEEPDOG_TORCH_THREADS")
    if n:
        threads = str(max(1, int(n)))
        if "torch" not in sys.modules:
            os.environ.setdefault("OMP_NUM_THREADS", threads)
        import torch

        torch.set_num_threads(int(threads))


def settings_dump(model, added: Iterable[str], **kwargs) -> dict:
    """model.model_dump(mode="json", **kwargs) without the ``added`` fields (python names) that
    still hold their defaults: a setting added later leaves the fingerprints of runs that do not
    use it as they were, so their finished work is reused."""
    data = model.model_dump(mode="json", **kwargs)
    fields = type(model).model_fields
    for name in added:
        info = fields[name]
        key = info.alias if kwargs.get("by_alias") and info.alias else name
        if key in data and getattr(model, name) == info.get_default(call_default_factory=True):
            del data[key]
    return data
