"""Test-only crash points of the train stage's save: SHEEPDOG_TEST_CRASH_AT=<point> ends the
process the way a SIGKILL would, at a moment a random kill only hits by chance, so that a test
can show what the retry makes of it (tests/jobs/test_train_save.py). A production stage has no
such variable set and never stops here (as the operator's kube/crash_hooks.py)."""

from __future__ import annotations

import logging
import os
import sys

ENV = "SHEEPDOG_TEST_CRASH_AT"
EXIT_CODE = 137  # as a SIGKILL's
# In the order the save reaches them (stages/train.py _save).
POINTS = ("save:loaded", "save:merged", "save:written", "save:model-renamed", "save:manifest-written")


def reach(point: str) -> None:
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}")
    if os.environ.get(ENV) == point:
        print(f"test crash point: exiting at {point}", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(EXIT_CODE)
