"""Which run a run directory belongs to: `<runDir>/.sheepdog-run.json` holds the uid of the
SelfAlignmentRun that first used it.

A run name can be reused once the run is deleted (its data stays on the volume unless
spec.storage.deleteDataOnDelete), and two runs can name the same spec.storage.subPath. Without
a marker the new run would silently resume from, or overwrite, the other run's checkpoints,
models and curated data. So every stage of a Kubernetes run claims the directory before it
writes anything (`claim`), and the cleanup Job of a deleted run removes a directory only when
its marker names that run (`delete_run_dir`).

Local runs (`sheepdog run`) carry no uid and claim nothing: their --workdir is the user's own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

MARKER = ".sheepdog-run.json"


class RunDirTaken(Exception):
    """The directory belongs to another run (or to none we can tell): nothing is written or
    deleted. No retry can change that."""


def read_marker(run_dir: str | os.PathLike) -> Optional[dict]:
    """The marker's content; None when there is none. An unreadable marker is an error: it is
    not safe to guess whose directory it is."""
    path = Path(run_dir) / MARKER
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise RunDirTaken(f"{path}: unreadable marker (not JSON); delete it if the directory is this run's") from None
    if not isinstance(data, dict) or not isinstance(data.get("uid"), str):
        raise RunDirTaken(f"{path}: marker without a uid; delete it if the directory is this run's")
    return data


def _write_new(path: Path, data: dict) -> bool:
    """Create the marker; False when one exists already (another pod of the same stage, e.g. a
    shard, may claim at the same moment: O_EXCL decides who writes)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def claim(run_dir: str | os.PathLike, run: str, uid: Optional[str], adopt: bool = False) -> str:
    """Make sure `run_dir` is run `uid`'s: create it and its marker, or find its own marker.
    With `adopt` (spec.storage.adoptExistingData) another run's marker is replaced. Returns
    what was done: "claimed", "ours", "adopted" or "unchecked" (no uid: a local run)."""
    if not uid:
        return "unchecked"
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    mine = {"run": run, "uid": uid}
    if _write_new(directory / MARKER, mine):
        return "claimed"
    found = read_marker(directory)
    if found is not None and found["uid"] == uid:
        return "ours"
    if adopt:
        from sheepdog_jobs.storage import atomic_write_text

        atomic_write_text(directory / MARKER, json.dumps(mine, sort_keys=True) + "\n")
        return "adopted"
    other = found or {}
    raise RunDirTaken(
        f"{directory} belongs to another run ({other.get('run', '?')}, uid {other.get('uid', '?')}): a deleted "
        "run of the same name or a run with the same storage.subPath; delete that data, choose another "
        "storage.subPath, or set storage.adoptExistingData: true to take it over")


def delete_run_dir(run_dir: str | os.PathLike, uid: str) -> str:
    """Remove `run_dir` if its marker names `uid`: "deleted", or "absent" when there is no such
    directory. Refuses (RunDirTaken) a directory with another run's marker or with none (data of
    unknown ownership stays). The marker goes last, so a deletion that is interrupted and
    retried still finds the directory marked as this run's."""
    directory = Path(run_dir)
    if not directory.exists():
        return "absent"
    found = read_marker(directory)
    if found is None:
        raise RunDirTaken(f"{directory} has no {MARKER}: not known to be this run's, left in place")
    if found["uid"] != uid:
        raise RunDirTaken(f"{directory} belongs to run {found.get('run', '?')} (uid {found['uid']}), "
                          f"not to uid {uid}: left in place")
    for entry in directory.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (directory / MARKER).unlink()
    directory.rmdir()
    return "deleted"
