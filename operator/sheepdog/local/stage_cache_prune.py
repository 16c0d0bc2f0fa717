"""Removing what no workdir uses from a local stage cache (`sheepdog cache prune`).

A finished stage's outputs live in `<cache>/objects/<key>/` and every workdir that produced or
reused them holds a relative link there (sheepdog.local.stage_cache). The objects outlive their
workdirs on purpose (a rerun of a deleted workdir reuses them), so nothing removes them on its
own: deleting workdirs frees no space. Prune removes each object no link refers to, with its
index entry, and the index entries whose outputs are gone.

Which workdirs are looked at: every workdir that ever used the cache (each registers itself
in `<cache>/workdirs/` when it starts, sheepdog.local.stage_cache.register_workdir), the
directories beside the cache that carry a workdir's `.stage-cache-owner` (workdirs from before
the register), and the producers the index names. A workdir that is gone is forgotten.

Safety: the cache's lock is held throughout, and so is every registered workdir's executor
lock: a run working in one of them (it may be about to link an object it decided to reuse)
makes prune refuse (WorkdirBusy) and remove nothing. A run that registers after prune sees the
pruned index.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from sheepdog.local.stage_cache import OBJECTS, OWNER_FILE, WORKDIRS, cache_lock
from sheepdog.local.workdir_files import WorkdirLock, read_json


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)        # object keys removed
    removed_bytes: int = 0
    dropped_entries: list[str] = field(default_factory=list)  # index entries removed
    kept: list[str] = field(default_factory=list)           # object keys some link refers to
    workdirs: list[str] = field(default_factory=list)       # the workdirs looked at
    forgotten: list[str] = field(default_factory=list)      # registered workdirs that are gone


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def _referenced(tree: Path, objects: Path) -> set[str]:
    """Keys of the objects the symbolic links under `tree` point into (links are not followed:
    a link into objects is a reference, whatever lies behind it)."""
    keys: set[str] = set()
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            p = Path(root) / name
            if not p.is_symlink():
                continue
            target = Path(os.path.realpath(p))
            try:
                keys.add(target.relative_to(objects).parts[0])
            except (ValueError, IndexError):
                continue
    return keys


def _workdirs(cache: Path) -> tuple[dict[Path, Path | None], list[Path]]:
    """{workdir: its registration file or None} of every workdir to look at, and the
    registrations of workdirs that are gone."""
    found: dict[Path, Path | None] = {}
    gone: list[Path] = []
    registry = cache / WORKDIRS
    for reg in sorted(registry.iterdir()) if registry.is_dir() else []:
        if reg.name.startswith("."):
            continue  # a registration being written (write_atomically's temp file)
        path = Path(reg.read_text(encoding="utf-8").strip() or "/nonexistent")
        (found.__setitem__(path, reg) if path.is_dir() else gone.append(reg))
    for sibling in sorted(cache.resolve().parent.iterdir()):
        if (sibling / OWNER_FILE).is_file():
            found.setdefault(sibling.resolve(), None)
    for entry in cache.glob("*.json"):
        owner = str((read_json(entry) or {}).get("owner") or "").split("#")[0]
        if owner and Path(owner).is_dir():
            found.setdefault(Path(owner), None)
    return found, gone


def prune(cache: Path, dry_run: bool = False) -> PruneResult:
    """Remove the objects of `cache` no workdir links to, and index entries whose outputs are
    gone. Raises WorkdirBusy (nothing removed) while a run works in one of its workdirs."""
    cache = Path(cache)
    result = PruneResult()
    if not cache.is_dir():
        return result
    objects = (cache / OBJECTS).resolve()
    with cache_lock(cache), ExitStack() as locks:
        workdirs, gone = _workdirs(cache)
        referenced: set[str] = set()
        for workdir in workdirs:
            locks.enter_context(WorkdirLock(workdir))  # WorkdirBusy: a run works there
            referenced |= _referenced(workdir, objects)
            result.workdirs.append(str(workdir))
        if objects.is_dir():
            referenced |= _referenced(objects, objects)  # an object linking into another
        for obj in sorted(objects.iterdir()) if objects.is_dir() else []:
            if obj.name in referenced:
                result.kept.append(obj.name)
                continue
            result.removed.append(obj.name)
            result.removed_bytes += _size(obj)
            if not dry_run:
                shutil.rmtree(obj)
        for entry in sorted(cache.glob("*.json")):
            data = read_json(entry) or {}
            if data.get("state") == "running":
                continue  # a claim: its producer's own liveness check decides (stage_cache._entry)
            run_dir = Path(str(data.get("runDir") or "/nonexistent"))
            stage_dir = run_dir / f"i{data.get('iteration')}" / str(data.get("stage"))
            in_removed = run_dir.parent == objects and run_dir.name in result.removed
            if in_removed or not (stage_dir / "_SUCCESS").is_file():
                result.dropped_entries.append(entry.stem)
                if not dry_run:
                    entry.unlink(missing_ok=True)
        for reg in gone:
            result.forgotten.append(reg.read_text(encoding="utf-8").strip())
            if not dry_run:
                reg.unlink(missing_ok=True)
    return result
