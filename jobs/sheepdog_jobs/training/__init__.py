"""Pieces of the train stage around transformers' Trainer: checkpoints, progress, tracking.

Its modules import transformers; these names do not, so the stage CLI stays quick to start."""

from sheepdog.progress import PROGRESS_FILE  # noqa: F401  (the local executor reads it too)

LOG_FILE = "trainer_log.jsonl"  # one JSON line per logged step, in the stage's output directory
