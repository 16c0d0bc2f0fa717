"""One stage execution as subprocess attempts: up to 1 + backoffLimit of them (retry_policy),
the same budget the Job controller gives a stage on a cluster.

Before each attempt the attempts file is written (attempt number, no exit code yet) and the
previous attempt's summary removed, so after a kill the disk says exactly how far the stage
got: an attempt without an exit code was interrupted and is run again under the same number
(an executor kill is a disruption, not a stage failure, as podFailurePolicy treats evictions).

A sharded synthesize (`stages.synthesize.shards: K > 1`) runs as K processes at once, as the
Indexed Job's K pods: shard k gets StageConfig.shard = {index: k, count: K}, its own log
(`synthesize.shard-<k>.log`) and summary (`synthesize.shard-<k>.summary.json`), and the
terminal shows the lowest running shard's progress. An attempt succeeds when every shard
still to run exits 0; a failed attempt reruns only the shards that failed (the others'
work is on disk either way), within the same 1 + backoffLimit attempts. The stage summary
is the shards' summaries merged as the operator merges an Indexed Job's (sheepdog/summaries.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from sheepdog.local.observe import attempts_file, log_file, read_summary, summary_file
from sheepdog.local.workdir_files import read_json, write_json
from sheepdog.planner import StartStage, max_attempts
from sheepdog.planner.export_policy import EXPORT
from sheepdog.export.config import export_command
from sheepdog.stage_config import EXIT_UNFIXABLE, Layout, Shard, StageConfig, stage_command
from sheepdog.summaries import merge_summaries

TAIL_LINES = 5


@dataclass(frozen=True)
class StageOutcome:
    exit_code: int
    attempts: int
    message: str  # why the last attempt failed; "" on success


def _tee(source: BinaryIO, sinks: list[BinaryIO]) -> None:
    """Copy bytes as they come (tqdm redraws its bar with \\r, so no line buffering)."""
    while chunk := source.read1(65536) if hasattr(source, "read1") else source.read(65536):
        for sink in sinks:
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):
                pass


class _Discard:
    """The terminal's share of a stage's output when `sheepdog run` is not --verbose: the
    output is in the stage's log file only."""

    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


class _TextSink:
    """Bytes onto a text stream that has no .buffer (a replaced sys.stderr)."""

    def __init__(self, text_stream):
        self._text = text_stream

    def write(self, data: bytes) -> None:
        self._text.write(data.decode(errors="replace"))

    def flush(self) -> None:
        self._text.flush()


def _last_lines(path: Path, since: int, n: int = TAIL_LINES) -> str:
    """The last lines written to the log after byte `since` (this attempt's output)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(since, path.stat().st_size - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    # A line redrawn with \r (a progress bar) counts as what a terminal would show: its last draw.
    lines = [line.rsplit("\r", 1)[-1].strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    return " | ".join(lines[-n:])


def run_stage(
    action: StartStage,
    layout: Layout,
    now: Callable[[], str],
    python: str = sys.executable,
    module: str = "sheepdog_jobs",
    stream: Optional[BinaryIO] = None,
    env: Optional[dict[str, str]] = None,
    verbose: bool = True,
) -> StageOutcome:
    """verbose: the stage's stderr also on `stream` (the terminal); otherwise only in its log
    file, and `stream` gets sheepdog's own lines (attempts, shards)."""
    spec, iteration, stage = action.config.spec, action.iteration, action.stage
    limit = max_attempts(spec, stage)
    record_path = attempts_file(layout, iteration, stage)
    summary_path = summary_file(layout, iteration, stage)
    previous = read_json(record_path) if record_path.exists() else None
    previous = previous if isinstance(previous, dict) else {}
    done = int(previous.get("attempts") or 0)
    # An attempt without an exit code was interrupted: it does not count.
    attempt = min(done, limit) if done and previous.get("exitCode") is None else done + 1
    started_at = previous.get("startedAt") or now()
    if stream is None:
        stream = getattr(sys.stderr, "buffer", None) or _TextSink(sys.stderr)
    tee = stream if verbose else _Discard()
    # A train of several ranks starts under torchrun, as its pod does (stage_config.launcher_args).
    if action.stage == EXPORT:  # spec.export (planner/export_policy.py): a stage's attempts, its own program
        command = export_command(action.config, python=python, summary_file=str(summary_path))
    else:
        command = stage_command(action.config, python=python, summary_file=str(summary_path), module=module)
    shown = command[:command.index("--config")]  # the program, without the config document
    shards = shard_count(action)
    if shards > 1:
        return _run_shards(action, layout, now, python, module, stream, env, shards, limit, attempt, started_at,
                           tee)

    exit_code, message = 1, ""
    while attempt <= limit:
        summary_path.unlink(missing_ok=True)
        write_json(record_path, {"attempts": attempt, "maxAttempts": limit, "exitCode": None,
                                 "startedAt": started_at, "command": shown})
        if attempt > 1:
            stream.write(f"[sheepdog] iteration {iteration} {stage}: attempt {attempt} of {limit}\n".encode())
            stream.flush()
        exit_code, output_from = _attempt(command, log_file(layout, iteration, stage), tee, env)
        message = "" if exit_code == 0 else _failure_message(
            summary_path, log_file(layout, iteration, stage), output_from, exit_code)
        write_json(record_path, {"attempts": attempt, "maxAttempts": limit, "exitCode": exit_code,
                                 "startedAt": started_at, "finishedAt": now(), "message": message or None,
                                 "command": shown})
        if exit_code in (0, EXIT_UNFIXABLE):  # done, or no attempt can do better
            break
        attempt += 1
    return StageOutcome(exit_code, min(attempt, limit), message)


def shard_count(action: StartStage) -> int:
    """Processes a stage runs as: K for a sharded synthesize, else 1."""
    return action.config.spec.stages.synthesize.shards if action.stage == "synthesize" else 1


def shard_config(config: StageConfig, index: int, count: int) -> StageConfig:
    return config.model_copy(update={"shard": Shard(index=index, count=count)})


def shard_summary_file(layout: Layout, iteration: int, stage: str, index: int) -> Path:
    return Path(layout.iteration_dir(iteration)) / f"{stage}.shard-{index}.summary.json"


def shard_log_file(layout: Layout, iteration: int, stage: str, index: int) -> Path:
    return Path(layout.iteration_dir(iteration)) / f"{stage}.shard-{index}.log"


def _run_shards(action: StartStage, layout: Layout, now: Callable[[], str], python: str, module: str,
                stream: BinaryIO, env: Optional[dict[str, str]], shards: int, limit: int, attempt: int,
                started_at: str, tee: Optional[BinaryIO] = None) -> StageOutcome:
    iteration, stage = action.iteration, action.stage
    record_path, summary_path = attempts_file(layout, iteration, stage), summary_file(layout, iteration, stage)
    summaries = [shard_summary_file(layout, iteration, stage, k) for k in range(shards)]
    logs = [shard_log_file(layout, iteration, stage, k) for k in range(shards)]
    commands = [stage_command(shard_config(action.config, k, shards), python=python,
                              summary_file=str(summaries[k]), module=module) for k in range(shards)]
    shown = commands[0][:2] + [commands[0][2], stage]
    pending = list(range(shards))
    exit_code, message = 1, ""
    while attempt <= limit:
        summary_path.unlink(missing_ok=True)
        for k in pending:
            summaries[k].unlink(missing_ok=True)
        write_json(record_path, {"attempts": attempt, "maxAttempts": limit, "exitCode": None, "shards": shards,
                                 "startedAt": started_at, "command": shown})
        stream.write(f"[sheepdog] iteration {iteration} {stage}: attempt {attempt} of {limit}, shards "
                     f"{', '.join(map(str, pending))} of {shards} (logs: {logs[0].parent}/{stage}.shard-<k>.log)\n"
                     .encode())
        stream.flush()
        results = _attempt_all([(commands[k], logs[k]) for k in pending], stream if tee is None else tee, env)
        failed = [(k, code, since) for k, (code, since) in zip(pending, results) if code != 0]
        if failed:
            # a shard no retry can help ends the stage: it is the one reported
            k, exit_code, since = min(failed, key=lambda f: f[1] != EXIT_UNFIXABLE)
            message = f"shard {k}: " + _failure_message(summaries[k], logs[k], since, exit_code)
            summary = read_summary(summaries[k])
            if summary is not None:
                write_json(summary_path, {**summary, "error": message} if summary.get("ok") is False else summary)
        else:
            exit_code, message = 0, ""
            got = [read_summary(p) for p in summaries]
            if all(got):
                write_json(summary_path, merge_summaries(got))
        write_json(record_path, {"attempts": attempt, "maxAttempts": limit, "exitCode": exit_code, "shards": shards,
                                 "startedAt": started_at, "finishedAt": now(), "message": message or None,
                                 "command": shown})
        if exit_code in (0, EXIT_UNFIXABLE):
            break
        pending = [k for k, _, _ in failed]
        attempt += 1
    return StageOutcome(exit_code, min(attempt, limit), message)


def _attempt_all(runs: list[tuple[list[str], Path]], stream: BinaryIO,
                 env: Optional[dict[str, str]]) -> list[tuple[int, int]]:
    """Run the commands at once (the first one's stderr also on the terminal); their (exit
    code, where this attempt's output starts in its log), in order."""
    procs, pumps, files, froms = [], [], [], []
    try:
        for i, (command, log_path) in enumerate(runs):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab")
            files.append(log)
            log.write(f"--- {' '.join(command[:4])} ...\n".encode())
            log.flush()
            froms.append(log.tell())
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                    preexec_fn=_die_with_parent)
            procs.append(proc)
            for source, sinks in ((proc.stdout, [log]), (proc.stderr, [log, stream] if i == 0 else [log])):
                pump = threading.Thread(target=_tee, args=(source, sinks), daemon=True)
                pump.start()
                pumps.append(pump)
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=60)
        for f in files:
            f.close()
    return list(zip(codes, froms))


def _attempt(command: list[str], log_path: Path, stream: BinaryIO, env: Optional[dict[str, str]]) -> tuple[int, int]:
    """Run once; (exit code, where this attempt's output starts in the log)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {' '.join(command[:4])} ...\n".encode())
        log.flush()
        output_from = log.tell()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                preexec_fn=_die_with_parent)
        # stdout (a few lines and the summary) goes to the log only; stderr (progress bars,
        # warnings) to the terminal as well.
        pumps = [threading.Thread(target=_tee, args=(proc.stdout, [log]), daemon=True),
                 threading.Thread(target=_tee, args=(proc.stderr, [log, stream]), daemon=True)]
        for p in pumps:
            p.start()
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        for p in pumps:
            p.join()
    return code, output_from


def _die_with_parent() -> None:
    """Linux: the stage gets SIGKILL when the executor dies, even by SIGKILL, so a rerun never
    races an orphaned stage writing the same outputs."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _failure_message(summary_path: Path, log_path: Path, output_from: int, exit_code: int) -> str:
    summary = read_summary(summary_path)
    if summary and summary.get("ok") is False and summary.get("error"):
        return str(summary["error"])
    tail = _last_lines(log_path, output_from)
    return f"exit code {exit_code}" + (f": {tail}" if tail else "")
