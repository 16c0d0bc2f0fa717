"""Step logs of the train stage: a line on stdout every few steps (what `kubectl logs` shows),
every logged step as a JSON line in the stage's output directory, and progress.json (the
latest step and the total) for whoever watches the run's storage.

The same progress record also goes to stdout as a `sheepdog-progress {...}` line
(sheepdog.progress), which the operator reads from the tail of rank 0's pod log: with each
human step line, and otherwise at most every PROGRESS_LINE_SECONDS, so a log tail read once
per operator resync (60 s by default) finds a recent one without a line per step.

Rank 0 alone writes: the Trainer already averages the logged loss over the ranks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

from sheepdog.progress import progress_line
from sheepdog_jobs import storage
from sheepdog_jobs.training import LOG_FILE, PROGRESS_FILE
# Trainer log keys -> ours (camelCase, as the rest of the stage contract).
_KEYS = {"loss": "loss", "learning_rate": "learningRate", "grad_norm": "gradNorm", "eval_loss": "evalLoss"}
PROGRESS_LINE_SECONDS = 10.0  # between two progress lines when no human step line is due


def print_every(total_steps: int) -> int:
    """About 20 stdout lines per training, never fewer than one per step for short ones."""
    return max(1, total_steps // 20)


def eta_seconds(step: int, total: int, first_step: int, elapsed: float) -> Optional[float]:
    """Time left at the pace of this attempt (a resumed attempt starts at first_step > 0)."""
    done = step - first_step
    if done <= 0 or elapsed <= 0:
        return None
    return (total - step) * elapsed / done


def progress_line_due(human_line: bool, last: Optional[float], now: float) -> bool:
    """Whether this logged step prints a progress line: with every human step line (the first
    and last step among them), else once PROGRESS_LINE_SECONDS have passed since the last."""
    return human_line or last is None or now - last >= PROGRESS_LINE_SECONDS


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def step_row(logs: dict, step: int, total: int, epoch: Optional[float]) -> dict:
    row = {"step": step, "totalSteps": total, "epoch": None if epoch is None else round(epoch, 4)}
    for key, ours in _KEYS.items():
        value = logs.get(key)
        if isinstance(value, (int, float)):
            row[ours] = float(value)
    return row


def step_line(row: dict) -> str:
    # Never starts with "{": the stage's only JSON line on stdout is its summary.
    parts = [f"train: step {row['step']}/{row['totalSteps']}", f"epoch {row['epoch']:.2f}"]
    if "evalLoss" in row:
        parts.append(f"eval_loss {row['evalLoss']:.4f}")
    for key, label, fmt in (("loss", "loss", ".4f"), ("learningRate", "lr", ".3e"), ("gradNorm", "grad_norm", ".3f"),
                            ("samplesPerSecond", "samples/s", ".2f")):
        if row.get(key) is not None:
            parts.append(f"{label} {row[key]:{fmt}}")
    if "loss" in row:
        parts.append(f"eta {format_eta(row.get('etaSeconds'))}")
    return " ".join(parts)


class StepLog(TrainerCallback):
    def __init__(self, out: Path, effective_batch: int):
        self.out, self.effective_batch = out, effective_batch
        self.first_step: Optional[int] = None
        self.started = self.last_time = 0.0
        self.last_step = 0
        self.last_progress_line: Optional[float] = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = self.last_step = state.global_step  # > 0 when resumed
        self.started = self.last_time = time.monotonic()
        if state.is_world_process_zero:
            # Steps past the checkpoint we resume from are done again: drop their old rows.
            storage.write_jsonl(self.out / LOG_FILE, [r for r in read_log(self.out) if r["step"] <= state.global_step])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        total, step = state.max_steps, state.global_step
        row = step_row(logs, step, total, state.epoch)
        if "loss" in row:
            now = time.monotonic()
            if step > self.last_step and now > self.last_time:
                row["samplesPerSecond"] = round((step - self.last_step) * self.effective_batch / (now - self.last_time), 3)
            row["etaSeconds"] = eta_seconds(step, total, self.first_step or 0, now - self.started)
            if row["etaSeconds"] is not None:
                row["etaSeconds"] = round(row["etaSeconds"], 1)
            self.last_step, self.last_time = step, now
        elif "evalLoss" not in row:
            return  # the Trainer's end-of-training totals: the summary reports those
        with open(self.out / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(storage.dumps_line(row) + "\n")
        record = {"step": step, "totalSteps": total, "epoch": row["epoch"], "etaSeconds": row.get("etaSeconds")}
        storage.atomic_write_json(self.out / PROGRESS_FILE, record)
        human = "evalLoss" in row or step % print_every(total) == 0 or step in (1, total)
        if human:
            print(step_line(row), flush=True)
        now = time.monotonic()
        if progress_line_due(human, self.last_progress_line, now):
            print(progress_line(record), flush=True)
            self.last_progress_line = now


def read_log(out: Path) -> list[dict]:
    """The step log so far; a line a SIGKILL cut short is not a row."""
    rows = []
    try:
        lines = (out / LOG_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows
