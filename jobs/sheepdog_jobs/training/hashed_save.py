"""Weights hashed as they are written, and the seconds a save spends loading, merging, writing
and hashing.

The train stage's _SUCCESS manifest records the sha256 of every file of the merged model. Read
back after the save, a 72B model is 145 GB read a second time, minutes during which a kill made
the retry start over. Here the weight files (safetensors, written by transformers' and PEFT's
save_pretrained through `safetensors.torch.save_file`) are serialised shard by shard and hashed
on their way to the disk, so the manifest needs no second pass over them; the small files beside
them (config, tokenizer) are hashed after, which reads kilobytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Iterator, Optional

from sheepdog_jobs import storage

_CHUNK = 64 << 20
# Where the libraries call safetensors' writer: each imported it under this name.
_WRITERS = (("transformers.modeling_utils", "safe_save_file"), ("peft.peft_model", "safe_save_file"))


class HashingWriter:
    """Writes safetensors files itself, recording each file's size and sha256; collects the
    save's phase timings (seconds)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}  # absolute path -> {"bytes", "sha256"}
        self.seconds = {"load": 0.0, "merge": 0.0, "write": 0.0, "hash": 0.0}

    def save_file(self, tensors: dict, filename: str, metadata: Optional[dict] = None) -> None:
        from safetensors.torch import save

        started = time.monotonic()
        data = memoryview(save(tensors, metadata=metadata))  # one shard (max_shard_size) in memory
        digest, hashing = hashlib.sha256(), 0.0
        with open(filename, "wb") as fh:
            for offset in range(0, len(data), _CHUNK):
                chunk = data[offset:offset + _CHUNK]
                t0 = time.monotonic()
                digest.update(chunk)
                hashing += time.monotonic() - t0
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        self.entries[os.path.abspath(filename)] = {"bytes": len(data), "sha256": digest.hexdigest()}
        self.seconds["hash"] += hashing
        self.seconds["write"] += time.monotonic() - started - hashing

    @contextlib.contextmanager
    def installed(self) -> Iterator["HashingWriter"]:
        """transformers and PEFT write their safetensors through save_file while inside."""
        import importlib

        replaced = []
        try:
            for module_name, attr in _WRITERS:
                module = importlib.import_module(module_name)
                if not hasattr(module, attr):
                    # A library that moved its writer: the save still works, its weights are
                    # hashed after writing (entries_under finds them unrecorded).
                    continue
                replaced.append((module, attr, getattr(module, attr)))
                setattr(module, attr, self.save_file)
            yield self
        finally:
            for module, attr, original in replaced:
                setattr(module, attr, original)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Adds the block's seconds to `phase`, less what the writer recorded for write and hash
        meanwhile (a block that saves counts its serialisation and disk time as write)."""
        before = self.seconds["write"] + self.seconds["hash"]
        started = time.monotonic()
        try:
            yield
        finally:
            inner = self.seconds["write"] + self.seconds["hash"] - before
            self.seconds[phase] += time.monotonic() - started - inner

    def entries_under(self, written: Path, final: Path) -> dict[str, dict]:
        """{absolute path under `final`: entry} for every file of `written` (moved to `final`
        since): the writer's entry where it wrote the file, else the file hashed now."""
        found = {}
        for path in sorted(p for p in written.rglob("*") if p.is_file()):
            entry = self.entries.get(os.path.abspath(path))
            if entry is None:
                t0 = time.monotonic()
                entry = storage.file_entry(path)
                self.seconds["hash"] += time.monotonic() - t0
            found[str(final / path.relative_to(written))] = entry
        return found

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}
