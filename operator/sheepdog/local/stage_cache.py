"""The stage cache on one machine: an index directory shared by the local runs that name it
(`sheepdog run --stage-cache DIR`; default: `.stage-cache` beside the workdir, so every run
under runs/ shares one). docs/stage-cache.md.

    <cache>/<key>.json   {"key", "state": running|succeeded, "producer", "owner", "runDir",
                          "iteration", "stage", "summary", "pid", "host"}
    <cache>/objects/<key>/i<N>/<stage>   a finished stage's outputs (train: and i<N>/model)
    <cache>/.lock        flock held while an entry is claimed, published or dropped
    <cache>/workdirs/<hash>   the path of a workdir that used the cache (for `sheepdog cache
                         prune`, sheepdog.local.stage_cache_prune: what links to the objects)

A finished stage's outputs are moved into the cache's objects and its workdir keeps a relative
link to them (a rename: nothing is copied), so they outlive the workdir: a rerun of a deleted
workdir reuses them, and every run that reuses them links to the same object. An entry is
valid while its outputs are there (`_SUCCESS`, and train's model); where a move is impossible
(another filesystem) the outputs stay in the workdir and the entry points there.
A running entry is a claim: the executor that holds it runs the stage; another executor that
needs the same key waits (stage_cache_policy: wait) while the claimer's process lives, and
takes the claim over when it has died (a killed run does not block the others).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.local.workdir_files import read_json, write_atomically, write_json
from sheepdog.planner import StartStage
from sheepdog.planner.stage_cache_policy import (
    CacheEntry, CacheInputs, StageCache, links, publishable, published_summary, reused_paths,
)
from sheepdog.reuse_links import make_links
from sheepdog.stage_config import Layout

DEFAULT_NAME = ".stage-cache"
OWNER_FILE = ".stage-cache-owner"  # in the workdir (_incarnation)
OBJECTS = "objects"  # <cache>/objects/<key>/i<N>/<stage>: the outputs, moved out of their workdir
WORKDIRS = "workdirs"  # <cache>/workdirs/<hash>: a workdir that used the cache (register_workdir)
SMALL_FILE = 1 << 20  # model files below this are identified by content (config, tokenizer config)


def default_cache_dir(workdir: Path) -> Path:
    """Beside the workdir: runs/<name> -> runs/.stage-cache, shared by the runs beside it."""
    return workdir.resolve().parent / DEFAULT_NAME


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(reference: str, layout: Layout) -> str:
    """A model directory by its files' names and sizes and its small files' content (two
    copies of one model are the same input; hashing 145 GB per run is not affordable); a hub
    id by its name."""
    root = Path(layout.resolve(reference))
    if not root.is_dir():
        return f"hub:{reference}"
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            size = p.stat().st_size
            h.update(f"{p.relative_to(root)}\0{size}\0{_sha256(p) if size < SMALL_FILE else ''}\n".encode())
    return f"dir:{h.hexdigest()}"


def cache_inputs(spec: RunSpec, layout: Layout) -> CacheInputs:
    seed = spec.seed.path
    seed_id = f"sha256:{_sha256(Path(layout.resolve(seed)))}" if seed else "builtin"
    return CacheInputs(base_model=model_identity(spec.model.base, layout), seed=seed_id)


def _alive(pid: object, host: object) -> bool:
    if host != socket.gethostname() or not isinstance(pid, int):
        return host != socket.gethostname()  # another machine's claim: it cannot be checked, so it holds
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _incarnation(workdir: Path) -> str:
    """This workdir's identity in the index: its path and a token made when the cache first
    saw it (OWNER_FILE). A workdir deleted and run again is another producer, so it reuses what
    its predecessor left in the cache; the same workdir resumed is the same one."""
    path = workdir / OWNER_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    if not token:
        token = uuid.uuid4().hex
        write_atomically(path, token + "\n")
    return f"{workdir.resolve()}#{token}"


@contextmanager
def cache_lock(directory: Path) -> Iterator[None]:
    """The cache's flock: claims, publications and prune are ordered by it."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def register_workdir(directory: Path, workdir: Path) -> None:
    """Record that `workdir` uses the cache, under the cache's lock: its links to the objects
    are what `sheepdog cache prune` keeps, wherever the workdir is."""
    path = str(workdir.resolve())
    entry = directory / WORKDIRS / hashlib.sha256(path.encode()).hexdigest()[:24]
    if entry.is_file():
        return
    with cache_lock(directory):
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(entry, path + "\n")


class LocalStageCache:
    def __init__(self, directory: Path, workdir: Path, layout: Layout, spec: RunSpec):
        self.dir = Path(directory)
        register_workdir(self.dir, workdir)
        self.owner = _incarnation(workdir)
        self.layout, self.spec = layout, spec
        self.inputs = cache_inputs(spec, layout)

    def _locked(self):
        return cache_lock(self.dir)

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def _entry(self, key: str) -> Optional[CacheEntry]:
        """The entry of `key` while it is valid: a live claim, or outputs that are still there."""
        data = read_json(self._path(key))
        if not isinstance(data, dict) or data.get("key") != key:
            return None
        try:
            entry = CacheEntry(key=key, state=data["state"], producer=data["producer"], owner=data["owner"],
                               run_dir=data["runDir"], iteration=int(data["iteration"]), stage=data["stage"],
                               summary=data.get("summary"))
        except (KeyError, TypeError, ValueError):
            return None
        if entry.state == "running":
            return entry if _alive(data.get("pid"), data.get("host")) else None
        stage_dir = Path(entry.run_dir) / f"i{entry.iteration}" / entry.stage
        if not (stage_dir / "_SUCCESS").is_file():
            return None
        if entry.stage == "train" and not (Path(entry.run_dir) / f"i{entry.iteration}" / "model").is_dir():
            return None  # deleted since (storage.keepModels)
        return entry

    def view(self) -> StageCache:
        entries = {}
        for path in self.dir.glob("*.json") if self.dir.is_dir() else []:
            entry = self._entry(path.stem)
            if entry is not None:
                entries[entry.key] = entry
        return StageCache(owner=self.owner, inputs=self.inputs, entries=entries, run_dir=self.layout.run_dir)

    def _write(self, key: str, state: str, iteration: int, stage: str, summary: Optional[dict] = None,
               run_dir: Optional[str] = None) -> None:
        write_json(self._path(key), {
            "key": key, "state": state, "producer": str(Path(self.layout.stage_dir(iteration, stage))),
            "owner": self.owner, "runDir": run_dir or self.layout.run_dir, "iteration": iteration, "stage": stage,
            "summary": summary, "pid": os.getpid(), "host": socket.gethostname()})

    def claim(self, action: StartStage, status: RunStatus) -> bool:
        """Before a stage with a key runs: True when this run may run it (no valid entry, or its
        own); False when another run got there first (plan again: it waits, or reuses)."""
        record = status.record(action.iteration)
        key = record.stages[action.stage].cache_key if record and action.stage in record.stages else None
        if key is None or not publishable(self.spec, action.stage):
            return True  # an output never offered to others (a keepModels best|last model): no claim to wait on
        with self._locked():
            entry = self._entry(key)
            # as stage_cache_policy.lookup: another run's entry, unless in this very directory
            if entry is not None and entry.owner != self.owner and entry.run_dir != self.layout.run_dir:
                return False
            if entry is None or entry.state == "running":
                self._write(key, "running", action.iteration, action.stage)
        return True

    def _store(self, key: str, iteration: int, stage: str) -> str:
        """Move a finished stage's outputs (its directory; train's model too) into
        `<cache>/objects/<key>/i<N>/` and leave relative links at the workdir's paths, so they
        outlive the workdir (a rerun of a deleted workdir reuses them). Idempotent, and it
        completes a move a kill interrupted. Returns where the outputs are (a run directory's
        layout): the object, or the workdir where a move is impossible (another filesystem)."""
        obj = str(self.dir / OBJECTS / key)
        moves = reused_paths(stage, iteration, obj, self.layout.run_dir)  # workdir path -> object path
        for own, stored in moves.items():
            own_path, stored_path = Path(own), Path(stored)
            if own_path.is_symlink() or (not own_path.exists() and stored_path.exists()):
                continue  # moved already (the link is made below)
            if stored_path.exists() or not own_path.exists():
                return self.layout.run_dir  # an object of another history: leave this one in place
            stored_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(own_path, stored_path)
            except OSError:  # another filesystem: the outputs stay in the workdir
                return self.layout.run_dir
        make_links(moves)
        return obj

    def settle(self, status: RunStatus) -> None:
        """After each status write: publish this run's succeeded stages (their outputs moved
        into the cache's objects), drop its claims of failed ones (a waiting run then runs the
        stage itself), and link the stages it reused."""
        with self._locked():
            for record in status.iterations:
                for stage, rec in record.stages.items():
                    if rec.cache_key is None or rec.reused_from is not None:
                        continue
                    entry = self._entry(rec.cache_key)
                    ours = entry is None or entry.owner == self.owner
                    if rec.phase == "Succeeded" and ours and publishable(self.spec, stage) \
                            and (entry is None or entry.state == "running" or entry.run_dir == self.layout.run_dir):
                        stored = self._store(rec.cache_key, record.iteration, stage)
                        if entry is None or entry.state == "running" or entry.run_dir != stored:
                            self._write(rec.cache_key, "succeeded", record.iteration, stage,
                                        published_summary(record, stage), run_dir=stored)
                    elif rec.phase in ("Succeeded", "Failed") and entry is not None and entry.owner == self.owner \
                            and entry.state == "running":
                        self._path(rec.cache_key).unlink(missing_ok=True)
        make_links(links(status, self.layout))
