"""A running train stage's progress: the one record, its line on stdout, its one parser.

The train stage (rank 0) writes the record to progress.json in its output directory and prints
it on stdout as one line, `sheepdog-progress {"step":..,"totalSteps":..,"epoch":..,"etaSeconds":..}`.
The local executor reads the file; the operator reads the line from the tail of rank 0's pod
log (the volume is not mounted in the operator). Both go through `progress_record`, so a
record that one path accepts the other accepts too.

The prefix keeps the line from being taken for the stage's summary (its only stdout line that
starts with `{`), and it is searched anywhere in a line: a launcher may prefix its workers'
lines (torchrun's `[default0]:`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional

PREFIX = "sheepdog-progress "
PROGRESS_FILE = "progress.json"  # in the train stage's output directory, replaced at each logged step


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def progress_record(raw: Any) -> Optional[dict[str, Any]]:
    """{step, totalSteps, epoch, etaSeconds} from what a stage wrote, or None when it is not a
    progress record: step and totalSteps whole numbers with 0 <= step <= totalSteps and
    totalSteps >= 1; epoch and etaSeconds non-negative numbers or None (unknown)."""
    if not isinstance(raw, Mapping):
        return None
    step, total = raw.get("step"), raw.get("totalSteps")
    if isinstance(step, bool) or isinstance(total, bool) or not isinstance(step, int) or not isinstance(total, int):
        return None
    if not 0 <= step <= total or total < 1:
        return None
    out: dict[str, Any] = {"step": step, "totalSteps": total, "epoch": None, "etaSeconds": None}
    for key in ("epoch", "etaSeconds"):
        value = _number(raw.get(key))
        if value is not None and value >= 0:
            out[key] = value
    return out


def progress_line(record: Mapping[str, Any]) -> str:
    """The stdout line of a record (the stage prints it; parse_progress_log reads it back)."""
    keep = {k: record.get(k) for k in ("step", "totalSteps", "epoch", "etaSeconds")}
    return PREFIX + json.dumps(keep, separators=(",", ":"))


def parse_progress_log(text: Optional[str]) -> Optional[dict[str, Any]]:
    """The latest progress record in a log (a pod log's tail); None when it holds none. A line
    cut short (the tail's first line, a line still being written) is skipped."""
    if not text:
        return None
    for line in reversed(text.splitlines()):
        at = line.rfind(PREFIX)
        if at < 0:
            continue
        try:
            raw = json.loads(line[at + len(PREFIX):])
        except ValueError:
            continue
        record = progress_record(raw)
        if record is not None:
            return record
    return None
