"""Loading the seed task set Ds (I-SHEEP Algorithm 1 input).

Two line formats are accepted, one JSON object a line (JSONL):

* Self-Instruct: ``{"id", "name", "instruction", "instances": [{"input", "output"}, ...],
  "is_classification"}``; like Alpaca's generator we use the FIRST instance;
* flat: ``{"instruction", "input", "output"}`` with an optional ``"id"``.

A seed file is user input that a whole run depends on, so loading is all-or-nothing: every
problem is collected (file and 1-based line number each) and reported together in one
``SeedError`` (the first 10, then a count), never a partial list of tasks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SeedTask", "SeedError", "load_seed_tasks", "MAX_LINE_BYTES", "SELF_INSTRUCT_SEED_TASKS"]

# The 175 Self-Instruct seed tasks (Apache-2.0, LICENSE and NOTICE beside the file), shipped as
# package data: the seed set the paper starts from.
SELF_INSTRUCT_SEED_TASKS = Path(__file__).resolve().parent / "data" / "self_instruct" / "seed_tasks.jsonl"

MAX_LINE_BYTES = 1024 * 1024  # a longer line is an error (and is never held in memory whole)
_MAX_REPORTED = 10


@dataclass(frozen=True)
class SeedTask:
    instruction: str
    input: str
    output: str
    id: str


class SeedError(ValueError):
    """The seed file cannot be used; ``problems`` lists every problem found."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = list(problems)
        shown = self.problems[:_MAX_REPORTED]
        more = len(self.problems) - len(shown)
        lines = [f"seed file {path}: {len(self.problems)} problem(s)"] + [f"  {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


def _unpaired_surrogate(value: str) -> str | None:
    """The first lone surrogate in ``value`` (JSON allows "\\ud800"; UTF-8 cannot hold it,
    so a prompt built from it would fail later, in the tokenizer or when written)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return value[exc.start]
    return None


def _text_field(obj: dict, key: str, where: str, problems: list[str]) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"{where}: \"{key}\" must be a string, got {type(value).__name__}")
        return ""
    bad = _unpaired_surrogate(value)
    if bad is not None:
        problems.append(f"{where}: \"{key}\" contains an unpaired surrogate "
                        f"(\\u{ord(bad):04x}), which is not valid Unicode")
        return ""
    return value


def _task_from_object(obj: object, where: str, lineno: int, problems: list[str]):
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    instruction = obj.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        problems.append(f"{where}: missing or empty \"instruction\" (it must be a string, "
                        f"got {type(instruction).__name__})")
        return None
    if instruction is None or not instruction.strip():
        problems.append(f"{where}: missing or empty \"instruction\"")
        return None
    before = len(problems)
    instruction = _text_field(obj, "instruction", where, problems)
    if "instances" in obj:
        instances = obj["instances"]
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            problems.append(f"{where}: \"instances\" must be a non-empty list of objects")
            return None
        source, label = instances[0], f"{where}: instances[0]"
    else:
        source, label = obj, where
    input_text = _text_field(source, "input", label, problems)
    output_text = _text_field(source, "output", label, problems)
    raw_id = obj.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int, type(None))):
        problems.append(f"{where}: \"id\" must be a string or an integer")
    if len(problems) > before:
        return None
    task_id = str(raw_id) if raw_id is not None and str(raw_id) else f"line-{lineno}"
    return SeedTask(instruction.strip(), input_text.strip(), output_text.strip(), task_id)


def _lines(fh, name: str, problems: list[str]):
    """Yield (line number, decoded text) of non-blank lines; record unreadable lines.

    A file that starts with a UTF-16/UTF-32 byte order mark is refused at once (every line
    of it would be garbage)."""
    lineno = 0
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if lineno == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
            raise SeedError(name, [f"{name}: line 1: the file is UTF-16 or UTF-32 text (it "
                                   f"starts with a byte order mark); seed files must be UTF-8"])
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                raw = fh.readline(MAX_LINE_BYTES)
            problems.append(f"{name}: line {lineno}: line longer than {MAX_LINE_BYTES} bytes")
            continue
        if b"\x00" in raw:
            problems.append(f"{name}: line {lineno}: contains NUL bytes (a binary file, or "
                            f"UTF-16/UTF-32 text without a byte order mark?)")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{name}: line {lineno}: not valid UTF-8 "
                            f"(bad byte at offset {exc.start})")
            continue
        if lineno == 1:
            text = text.removeprefix("\ufeff")  # tolerate a UTF-8 byte order mark
        if text.strip():
            yield lineno, text


def load_seed_tasks(path: str | os.PathLike) -> list[SeedTask]:
    """Read a Self-Instruct or flat JSONL seed file; raise SeedError listing all problems."""
    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise SeedError(name, [f"{name}: file not found"])
    if p.is_dir():
        raise SeedError(name, [f"{name}: is a directory, not a JSONL file"])
    problems: list[str] = []
    tasks: list[SeedTask] = []
    first_line_of_id: dict[str, int] = {}
    try:
        with open(p, "rb") as fh:
            for lineno, text in _lines(fh, name, problems):
                where = f"{name}: line {lineno}"
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    if not text.endswith("\n"):
                        hint = "; the last line has no newline: is the file truncated?"
                    elif text.strip() in ("{", "["):
                        hint = ("; a pretty-printed JSON file? A seed file holds one JSON "
                                "object per line")
                    else:
                        hint = ""
                    problems.append(f"{where}: invalid JSON ({exc.msg.removesuffix(' at')} "
                                    f"at column {exc.colno}){hint}")
                    continue
                except RecursionError:
                    problems.append(f"{where}: invalid JSON (nested too deeply)")
                    continue
                except ValueError as exc:  # Python refuses integers of more than 4300 digits
                    reason = ("an integer with too many digits" if "digits" in str(exc)
                              else str(exc))
                    problems.append(f"{where}: invalid JSON ({reason})")
                    continue
                task = _task_from_object(obj, where, lineno, problems)
                if task is None:
                    continue
                if task.id in first_line_of_id:
                    problems.append(f"{where}: duplicate id {task.id!r} (first on line "
                                    f"{first_line_of_id[task.id]})")
                    continue
                first_line_of_id[task.id] = lineno
                tasks.append(task)
    except OSError as exc:
        raise SeedError(name, [f"{name}: cannot read ({exc.strerror or exc})"]) from exc
    if problems:
        raise SeedError(name, problems)
    if not tasks:
        raise SeedError(name, [f"{name}: no seed tasks (the file is empty or only blank lines)"])
    return tasks
