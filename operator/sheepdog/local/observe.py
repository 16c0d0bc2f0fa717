"""Stage executions on a local disk -> the planner's StageObservations.

A stage execution is what the attempt loop (stage_process.py) left in `<run_dir>/i<N>/`:

- `<stage>.attempts.json` exit code 0           -> succeeded (with its summary, if readable)
- exit code != 0 and no attempts left, or exit
  code 3 (EXIT_UNFIXABLE: no attempt can fix it) -> failed (message: the summary's error, or
                                                   the last lines of the stage's stderr)
- no attempts file, but the stage's `_SUCCESS`
  manifest and an ok summary                    -> succeeded (outputs made elsewhere)
- anything else (never started, killed mid-attempt, attempts left) -> not observed, so the
  planner asks for the stage again and the attempt loop carries on where it was.

The local executor runs one stage at a time and waits for it, so "running" is never seen here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from sheepdog.api.spec import STAGES, RunSpec
from sheepdog.local.workdir_files import read_json
from sheepdog.planner import StageObservation, max_attempts
from sheepdog.planner.gpu_cost_policy import gpu_seconds
from sheepdog.planner.export_policy import EXPORT
from sheepdog.stage_config import EXIT_UNFIXABLE, Layout

ITERATION_DIR = re.compile(r"^i(0|[1-9][0-9]*)$")  # i0: M_0's evaluation


def summary_file(layout: Layout, iteration: int, stage: str) -> Path:
    return Path(layout.iteration_dir(iteration)) / f"{stage}.summary.json"


def attempts_file(layout: Layout, iteration: int, stage: str) -> Path:
    return Path(layout.iteration_dir(iteration)) / f"{stage}.attempts.json"


def log_file(layout: Layout, iteration: int, stage: str) -> Path:
    return Path(layout.iteration_dir(iteration)) / f"{stage}.log"


def success_manifest(layout: Layout, iteration: int, stage: str) -> Path:
    return Path(layout.stage_dir(iteration, stage)) / "_SUCCESS"


def read_summary(path: Path) -> Optional[dict[str, Any]]:
    data = read_json(path)
    return data if isinstance(data, dict) else None


def observe_stage(spec: RunSpec, layout: Layout, iteration: int, stage: str) -> Optional[StageObservation]:
    summary = read_summary(summary_file(layout, iteration, stage))
    record = read_json(attempts_file(layout, iteration, stage))
    record = record if isinstance(record, dict) else {}
    attempts = int(record.get("attempts") or 0)
    exit_code = record.get("exitCode")
    started, finished = record.get("startedAt"), record.get("finishedAt")
    # GPU cost here: the stage's gpus setting x its wall time (first start to end, all attempts)
    gpus = spec.stages.of(stage).gpus if stage in STAGES else 0
    cost = gpu_seconds(gpus, started, finished)

    if exit_code == 0:
        ok_summary = summary if summary is not None and summary.get("ok") is not False else None
        return StageObservation(iteration, stage, "succeeded", attempts=attempts, summary=ok_summary,
                                started_at=started, finished_at=finished, gpu_seconds=cost)
    if isinstance(exit_code, int) and (attempts >= max_attempts(spec, stage) or exit_code == EXIT_UNFIXABLE):
        error = (summary or {}).get("error") if summary and summary.get("ok") is False else None
        message = str(error) if error else str(record.get("message") or f"exit code {exit_code}")
        return StageObservation(iteration, stage, "failed", attempts=attempts, summary=summary,
                                message=message, started_at=started, finished_at=finished, gpu_seconds=cost)
    if not record and summary is not None and summary.get("ok") is True \
            and success_manifest(layout, iteration, stage).exists():
        return StageObservation(iteration, stage, "succeeded", attempts=0, summary=summary)
    return None


def observe_run_dir(spec: RunSpec, layout: Layout) -> list[StageObservation]:
    run_dir = Path(layout.run_dir)
    iterations = sorted(
        int(m.group(1)) for p in (run_dir.iterdir() if run_dir.is_dir() else [])
        if p.is_dir() and (m := ITERATION_DIR.match(p.name))
    )
    out = []
    for iteration in iterations:
        for stage in (*STAGES, EXPORT):  # the export of spec.export runs as a stage does
            obs = observe_stage(spec, layout, iteration, stage)
            if obs is not None:
                out.append(obs)
    return out
