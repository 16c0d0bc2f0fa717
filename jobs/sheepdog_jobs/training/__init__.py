"""Pieces of the train stage around transformers' Trainer: checkpoints, progress, tracking.

Its modules import transformers; these names do not, so the stage CLI stays quick to start."""

LOG_FILE = "trainer_log.jsonl"  # one JSON line per logged step, in the stage's output directory
PROGRESS_FILE = "progress.json"  # the latest step and the total, replaced at each logged step
