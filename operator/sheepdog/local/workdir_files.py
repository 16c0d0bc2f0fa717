"""The local executor's own files in a workdir, written atomically, and the workdir lock.

    <workdir>/status.json     the run's status (RunStatus, camelCase), as the operator writes it
    <workdir>/report.json     {"run", "phase", ..., "iterations": [status.iterations records]}
    <workdir>/run.yaml        the effective run (paths resolved); a change bumps the generation
    <workdir>/.sheepdog.lock  held (flock) by the one executor working here
    <workdir>/i<N>/<stage>.summary.json   the stage's summary line (written by the stage)
    <workdir>/i<N>/<stage>.attempts.json  attempts so far and the last exit code (ours)
    <workdir>/i<N>/<stage>.log            the stage's stdout and stderr
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from sheepdog.api.status import RunStatus

STATUS_FILE = "status.json"
REPORT_FILE = "report.json"
RUN_FILE = "run.yaml"
LOCK_FILE = ".sheepdog.lock"


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same directory + rename: a reader sees the old or the new file, never
    half of one (a kill mid-write cannot corrupt status.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomically(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Optional[Any]:
    """The parsed file, or None when it is absent or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_status(workdir: Path) -> Optional[RunStatus]:
    data = read_json(workdir / STATUS_FILE)
    if not isinstance(data, dict):
        return None
    try:
        return RunStatus.model_validate(data)
    except ValueError:
        return None


def write_status(workdir: Path, status: RunStatus) -> None:
    write_json(workdir / STATUS_FILE, status.to_wire())


class WorkdirBusy(RuntimeError):
    """Another executor holds this workdir."""


class WorkdirLock:
    """An exclusive flock on <workdir>/.sheepdog.lock. The kernel drops it when the holder
    dies, so a killed executor never leaves a stale lock behind."""

    def __init__(self, workdir: Path):
        self.path = workdir / LOCK_FILE
        self._fd: Optional[int] = None

    def __enter__(self) -> "WorkdirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkdirBusy(f"{self.path.parent}: another sheepdog run is working here (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
