"""The local executor: the planner's loop with subprocesses and files instead of Jobs and an
API server. `sheepdog run RUN.yaml --workdir DIR`.

    observe (files in DIR) -> plan -> write status.json and report.json -> print events
    -> run the requested stage (attempt loop) -> repeat until the plan is done

While a train stage runs, its progress.json is copied into status.json (progress_watch.py).

The disk is the only state, so the same command after a kill carries on: finished stages are
observed as finished and never run again; an interrupted one runs again and its stage program
resumes from its own checkpoints.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO, Union

from sheepdog.api.load import dump_run, load_run
from sheepdog.api.status import RunStatus
from sheepdog.local.inputs import InputError, prepare_local_run
from sheepdog.local.observe import attempts_file, observe_run_dir, summary_file
from sheepdog.local.progress_watch import POLL_SECONDS, ProgressWatch
from sheepdog.reporting.plot import plot_report
from sheepdog.local.report import format_report, report_of
from sheepdog.local.stage_cache import LocalStageCache, default_cache_dir
from sheepdog.local.stage_process import run_stage
from sheepdog.local.workdir_files import (
    REPORT_FILE, RUN_FILE, WorkdirLock, read_json, read_status, write_atomically, write_json, write_status,
)
from sheepdog.planner import Event, Plan, Reason, plan, timestamp
from sheepdog.stage_config import STAGE_MODULE, Layout

STAGE_MODULE_ENV = "SHEEPDOG_STAGE_MODULE"  # tests point this at a fake stage program


class _BesideWorkdir:
    """run_local's default stage cache: `.stage-cache` beside the workdir (stage_cache.py)."""

    def __repr__(self) -> str:
        return "BESIDE_WORKDIR"


BESIDE_WORKDIR = _BesideWorkdir()
WAIT_SECONDS = 1.0  # how often a run that waits for another's stage (stage cache) looks again


@dataclass(frozen=True)
class LocalResult:
    run: str
    workdir: Path
    status: RunStatus

    @property
    def exit_code(self) -> int:
        """0 succeeded or suspended, 1 failed."""
        return 1 if self.status.phase == "Failed" else 0


def default_workdir(run_name: str) -> Path:
    return Path("runs") / run_name


def run_local(
    run_file: Union[str, Path],
    workdir: Optional[Union[str, Path]] = None,
    *,
    stage_module: Optional[str] = None,
    python: str = sys.executable,
    out: Optional[TextIO] = None,
    retry_failed: bool = False,
    plot: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    progress_seconds: float = POLL_SECONDS,
    overrides: Sequence[str] = (),
    verbose: bool = False,
    stage_cache: Union[str, Path, None, _BesideWorkdir] = BESIDE_WORKDIR,
    wait_seconds: float = WAIT_SECONDS,
) -> LocalResult:
    """Run (or resume) a run file to its end. Raises RunSpecError (bad run file), InputError
    (bad seed/model inputs; nothing written) or WorkdirBusy (another executor works here).
    verbose: every stage's output on the terminal too; otherwise it is in the stage's log file
    (i<N>/<stage>.log) and the terminal gets one line per stage event. stage_cache: the index
    directory of the stage cache (docs/stage-cache.md), shared by the runs that name the same
    one; default `.stage-cache` beside the workdir; None: no cache (as spec.stageCache: false)."""
    out = out if out is not None else sys.stdout
    run_file = Path(run_file)
    run = load_run(run_file, overrides)  # the effective run, --set included, is what run.yaml records
    workdir = Path(workdir) if workdir is not None else default_workdir(run.metadata.name)
    run, notes = prepare_local_run(run, workdir, run_file)  # before anything is written
    module = stage_module or os.environ.get(STAGE_MODULE_ENV) or STAGE_MODULE
    name, spec = run.metadata.name, run.spec
    now = lambda: timestamp(clock())

    with WorkdirLock(workdir):
        root = str(workdir.resolve())
        layout = Layout(root=root, run_dir=root)
        _check_workdir_owner(workdir, name)
        status = read_status(workdir)
        generation = _generation(workdir, dump_run(run), status)
        for note in notes:
            _say(out, f"note: {note}")
        if retry_failed and status is not None and status.phase == "Failed":
            status = _forget_failure(status, layout, out)
        if not verbose:
            _say(out, f"stage output: {workdir}/i<N>/<stage>.log (sheepdog run --verbose shows it here too)")

        cache = _stage_cache(stage_cache, workdir, layout, spec)
        just_ran: Optional[str] = None
        while True:
            p = plan(name, spec, status, observe_run_dir(spec, layout), layout, now(), generation,
                     cache=cache.view() if cache else None)
            _write(workdir, name, p)
            status = p.status
            if cache:  # publish what succeeded, release what failed, link what was reused
                cache.settle(status)
            for event in p.events:  # only after the status write, as on a cluster
                _say(out, _event_line(event))
            if not p.done and not p.actions and status.reason == Reason.WAITING_FOR_STAGE:
                time.sleep(wait_seconds)  # another run produces this stage; plan again
                continue
            if p.done or not p.actions:
                break
            for action in p.actions:  # the planner starts at most one stage at a time
                if cache and not cache.claim(action, status):
                    just_ran = None  # another run claimed the same key first: plan again (it waits)
                    continue
                if action.name == just_ran:  # ran to the end, yet the disk shows no outcome
                    raise RuntimeError(f"{action.name}: the stage ran but left no attempts record in "
                                       f"{layout.iteration_dir(action.iteration)}; refusing to loop")
                with ProgressWatch(workdir, layout, status, action, now, lambda line: _say(out, line),
                                   progress_seconds) as watch:
                    run_stage(action, layout, now, python=python, module=module, verbose=verbose)
                status = watch.status  # with the train's last progress (kept if it failed)
                just_ran = action.name

        report = report_of(name, status)
        _say(out, "")
        _say(out, format_report(report))
        if plot and plot_report(report, workdir / "report.png"):
            _say(out, f"plot: {workdir / 'report.png'}")
        if status.phase == "Suspended":
            _say(out, "suspended (spec.suspend: true): set it to false and run the same command to go on")
    return LocalResult(name, workdir, status)


def _stage_cache(choice: Union[str, Path, None, _BesideWorkdir], workdir: Path, layout: Layout,
                 spec) -> Optional[LocalStageCache]:
    if choice is None or not spec.stage_cache:
        return None
    directory = default_cache_dir(workdir) if isinstance(choice, _BesideWorkdir) else Path(choice)
    return LocalStageCache(directory, workdir, layout, spec)


def _write(workdir: Path, name: str, p: Plan) -> None:
    write_status(workdir, p.status)
    write_json(workdir / REPORT_FILE, report_of(name, p.status))


def _check_workdir_owner(workdir: Path, name: str) -> None:
    """A workdir holds one run: another run's finished stages must not count as this one's."""
    report = read_json(workdir / REPORT_FILE)
    owner = report.get("run") if isinstance(report, dict) else None
    if owner is not None and owner != name:
        raise InputError([f"{workdir}: holds run {owner!r}, not {name!r}; use another --workdir"])


def _generation(workdir: Path, effective_run: str, status: Optional[RunStatus]) -> int:
    """Locally, the generation counts edits of the run file: each run that finds the effective
    run changed since the last one bumps it (a cluster's metadata.generation does the same)."""
    previous = status.observed_generation if status is not None and status.observed_generation else 0
    path = workdir / RUN_FILE
    try:
        before = path.read_text(encoding="utf-8")
    except OSError:
        before = None
    generation = previous + 1 if before is not None and before != effective_run else max(previous, 1)
    if before != effective_run:
        write_atomically(path, effective_run)
    return generation


def _forget_failure(status: RunStatus, layout: Layout, out: TextIO) -> RunStatus:
    """--retry-failed: forget the failed stage (record, attempts, summary) so the planner asks
    for it again; everything that succeeded stays."""
    retried = status.model_copy(deep=True)
    for record in retried.iterations:
        for stage, stage_record in list(record.stages.items()):
            if stage_record.phase == "Failed":
                del record.stages[stage]
                attempts_file(layout, record.iteration, stage).unlink(missing_ok=True)
                summary_file(layout, record.iteration, stage).unlink(missing_ok=True)
                _say(out, f"retrying iteration {record.iteration} {stage}")
    retried.phase, retried.reason, retried.finished_at = "Running", "StageStarting", None
    return retried


def _event_line(event: Event) -> str:
    mark = {"StageSucceeded": "done", "StageStarting": "start", "StageReused": "reused",
            "WaitingForStage": "wait"}.get(event.reason, event.reason)
    prefix = "warning: " if event.type == "Warning" else ""
    return f"[{mark}] {prefix}{event.message}"


def _say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)
