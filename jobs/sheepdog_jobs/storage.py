"""Durable outputs on shared storage: atomic files, JSONL, `_SUCCESS` manifests.

A stage may be killed at any instant (preemption, OOM, node loss) and is then simply run
again, so nothing it leaves may be mistaken for a finished result:
- every file is written to a temp file in the same directory, fsynced, then os.replace()d
  (rename is atomic within one filesystem, including NFS/CephFS used for RWX volumes);
- a manifest (`_SUCCESS`, or `_SUCCESS.<phase>` for synthesize's checkpoints) is written last
  and records the input fingerprint plus the size and sha256 of every output file;
- `is_done` trusts a manifest only if its fingerprint matches AND every listed file still
  has the recorded size and checksum. Existence alone means nothing (the reference's flaw).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

MANIFEST = "_SUCCESS"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse O_RDONLY on dirs: best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; other pods/users read these files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def dumps_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Atomically write records one JSON object a line; returns the number written."""
    lines = [dumps_line(r) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {lineno}: invalid JSON ({exc.msg})") from exc


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(config: Any, files: Iterable[str | os.PathLike] = ()) -> str:
    """Hash of the config parts a stage depends on (any JSON value) and its input files' bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode())
    for f in files:
        h.update(b"\0file\0" + sha256_file(f).encode())
    return h.hexdigest()


def file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(
    out_dir: str | os.PathLike,
    outputs: Iterable[str | os.PathLike],
    fp: str,
    *,
    counts: Optional[Mapping[str, Any]] = None,
    summary: Optional[Mapping[str, Any]] = None,
    name: str = MANIFEST,
    hashed: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> dict:
    """Record the outputs (paths, absolute or relative to out_dir) after they are written.

    Entries are stored relative to out_dir so the run directory can be moved or mounted
    elsewhere (the cluster's /data vs. a local copy) without invalidating it. `hashed`: the
    entries ({"bytes", "sha256"}) of outputs hashed while they were written, by absolute path;
    those are not read again.
    """
    out_dir = Path(out_dir)
    files = {}
    for p in outputs:
        p = Path(p) if Path(p).is_absolute() else out_dir / p
        known = (hashed or {}).get(str(p))
        files[os.path.relpath(p, out_dir)] = dict(known) if known is not None else file_entry(p)
    manifest = {
        "version": MANIFEST_VERSION,
        "fingerprint": fp,
        "files": files,
        "counts": dict(counts or {}),
        "summary": dict(summary or {}),
        "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out_dir / name, manifest)
    return manifest


def read_manifest(out_dir: str | os.PathLike, name: str = MANIFEST) -> Optional[dict]:
    """The manifest as written, or None when missing or unreadable (never trusted then)."""
    try:
        with open(Path(out_dir) / name, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return None
    if not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def verify_manifest(out_dir: str | os.PathLike, fp: Optional[str], name: str = MANIFEST) -> Optional[dict]:
    """The manifest if it matches `fp` and every file it lists is intact; else None.

    fp=None checks the files only: a downstream stage verifying its input is complete
    without knowing how it was made."""
    manifest = read_manifest(out_dir, name)
    if manifest is None or (fp is not None and manifest.get("fingerprint") != fp):
        return None
    for rel, entry in manifest["files"].items():
        p = Path(out_dir) / rel
        try:
            # Size first: cheap, and catches the usual truncation without reading the file.
            if p.stat().st_size != entry.get("bytes") or sha256_file(p) != entry.get("sha256"):
                return None
        except OSError:
            return None
    return manifest


def is_done(out_dir: str | os.PathLike, fp: str, name: str = MANIFEST) -> bool:
    return verify_manifest(out_dir, fp, name) is not None


def remove_manifest(out_dir: str | os.PathLike, name: str = MANIFEST) -> None:
    """Invalidate before rewriting outputs, so a crash mid-way cannot leave a stale manifest
    that happens to match (e.g. when inputs changed back)."""
    try:
        os.unlink(Path(out_dir) / name)
    except FileNotFoundError:
        pass


def model_identity(path: str) -> Any:
    """A cheap identity of a model for fingerprints: hashing a 72B checkpoint on every stage
    start is too slow, so big files count by name and size, small ones (config, tokenizer,
    a _SUCCESS manifest of the train stage that wrote it) by content. A hub id is itself."""
    root = Path(path)
    if not root.is_dir():
        return path
    items = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            size = p.stat().st_size
            items.append([str(p.relative_to(root)), size, sha256_file(p) if size < _CHUNK else None])
    return {"path": path, "files": items}
