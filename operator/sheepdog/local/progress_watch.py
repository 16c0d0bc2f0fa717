"""While a train stage runs locally: its progress.json -> status.json and a line on the terminal.

The executor waits for the stage process (stage_process.run_stage); this watch reads
`<run_dir>/i<N>/train/progress.json` every `interval` seconds meanwhile, and once more when the
stage has ended (a failed train keeps how far it got). Each new step goes into the stage
record's `progress` (planner/progress_policy.py, the rules the operator follows too), status.json
is rewritten, and one line is printed:

    [progress] iteration 1 train: step 12/375, epoch 0.06, eta 1:02:05

The stage's own step lines go to its log only (its stdout), so this is the terminal's view of a
training. The watch writes status.json only while the executor's loop waits on the stage; the
loop takes the watch's status back before it plans again, so nothing is written twice.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

from sheepdog.api.status import RunStatus
from sheepdog.local.workdir_files import read_json, write_status
from sheepdog.planner import StartStage, progress_policy
from sheepdog.progress import PROGRESS_FILE, progress_record
from sheepdog.stage_config import Layout

POLL_SECONDS = 10.0


def progress_file(layout: Layout, iteration: int) -> Path:
    return Path(layout.stage_dir(iteration, "train")) / PROGRESS_FILE


def format_progress(iteration: int, record: dict) -> str:
    parts = [f"step {record['step']}/{record['totalSteps']}"]
    if record.get("epoch") is not None:
        parts.append(f"epoch {record['epoch']:.2f}")
    if record.get("etaSeconds") is not None:
        s = int(round(record["etaSeconds"]))
        parts.append(f"eta {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}")
    return f"[progress] iteration {iteration} train: " + ", ".join(parts)


class ProgressWatch:
    """A context manager around one stage execution; a no-op for every stage but train."""

    def __init__(self, workdir: Path, layout: Layout, status: RunStatus, action: StartStage,
                 now: Callable[[], str], say: Callable[[str], None], interval: float = POLL_SECONDS):
        self.workdir, self.action, self.now, self.say, self.interval = workdir, action, now, say, interval
        self.status = status.model_copy(deep=True)  # what the executor plans from afterwards
        self.path = progress_file(layout, action.iteration)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "ProgressWatch":
        if self.action.stage == "train":
            self._thread = threading.Thread(target=self._loop, name="progress-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self.poll()  # the last step it reached, also when it failed

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> bool:
        """Read progress.json once; True when it held a new step (status.json rewritten)."""
        record = progress_record(read_json(self.path))
        it = self.status.record(self.action.iteration)
        stage = it.stages.get("train") if it is not None else None
        if record is None or stage is None:
            return False
        before = stage.progress
        progress_policy.absorb(stage, {**record, "observedAt": self.now()})
        if stage.progress is before:
            return False
        write_status(self.workdir, self.status)
        self.say(format_progress(self.action.iteration, record))
        return True
