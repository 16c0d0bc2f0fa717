"""The stage cache's links: a stage that another run produced (StageConfig.reuseLinks) is read
through a symbolic link at this run's own path, so every stage program finds its inputs where
the layout says, and nothing is copied (a 145 GB model stays where it is).

Each link is relative (`../../a/i1/synthesize`), so it holds wherever the volume is mounted
(/data in a pod, any directory locally). Making the links is idempotent: a right link stays, a
link elsewhere is replaced, an empty directory is replaced; a directory with files in it is
never deleted (it is this run's own work, or someone's): the stage fails with a clear error.

Both executors' sides use it: the stage programs (sheepdog_jobs.cli, before a stage reads
anything) and the local executor (at once when it records a reuse, so a workdir is whole even
when no later stage runs). Like stage_config.py, it is part of the contract between them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


class LinkRefused(Exception):
    """A path that must become a link holds data."""


def make_links(links: Mapping[str, str]) -> list[str]:
    """Make each `path -> target` link; returns the paths it created or changed."""
    made = []
    for path, target in sorted(links.items()):
        p = Path(path)
        relative = os.path.relpath(target, p.parent)
        if p.is_symlink():
            if os.readlink(p) == relative:
                continue
            p.unlink()
        elif p.is_dir():
            if any(p.iterdir()):
                raise LinkRefused(f"{p}: the stage cache would read {target} here, but {p} holds files; "
                                  f"move them away (or set spec.stageCache: false)")
            try:
                p.rmdir()
            except FileNotFoundError:  # another rank or shard got there first
                pass
        elif p.exists():
            raise LinkRefused(f"{p}: the stage cache would link {target} here, but a file is in the way")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.link-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(relative, tmp)
        os.replace(tmp, p)  # atomic: a reader sees no link or the whole link
        made.append(path)
    return made
