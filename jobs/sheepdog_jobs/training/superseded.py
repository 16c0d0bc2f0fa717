"""The train stage deletes the superseded iteration models its StageConfig names
(`deleteModels`, decided by the planner from storage.keepModels) before it checks for space and
writes its own model.

The stage trusts the list only as far as it can check it: a path is deleted only when it is an
iteration model of this run (under the run directory, with the lineage file a train stage
writes) and is not a model this stage reads. Anything else is left, with a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

log = logging.getLogger("sheepdog_jobs")


def delete(paths: Iterable[str], run_dir: str, reads: Iterable[str], lineage_file: str) -> list[str]:
    """Deletes the models among `paths` it may; returns the deleted paths."""
    run = Path(run_dir).resolve()
    protected = {Path(p).resolve() for p in reads if p}
    deleted = []
    for raw in paths:
        path = Path(raw).resolve()
        if not path.exists():
            continue  # deleted by an earlier attempt, or by another rank
        if run not in path.parents or path in protected or not (path / lineage_file).is_file():
            log.warning("storage.keepModels: not deleting %s (not a superseded iteration model of this run)", raw)
            continue
        # Renamed first, so a model half deleted by a kill is never mistaken for a whole one.
        doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
        try:
            os.replace(path, doomed)
        except FileNotFoundError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        deleted.append(raw)
        log.info("storage.keepModels: deleted the superseded model %s", raw)
    for stale in run.glob("i*/.model.deleting-*"):  # a killed attempt's leftovers
        shutil.rmtree(stale, ignore_errors=True)
    return deleted
