"""Test-only crash points (`sheepdog operator --test-exit-after-status-write REASON`): the process
ends the way a SIGKILL would end it, at a moment a random kill only hits by chance, so that a
real-cluster test can show what a fresh process makes of it (tests/operator/test_events_crash.py).
A production operator has no such flag set and never stops here."""

from __future__ import annotations

import logging
import os
from typing import Iterable

log = logging.getLogger("sheepdog.operator")

EXIT_CODE = 137  # as a SIGKILL's


def after_status_write(reason: str, events: Iterable[object]) -> None:
    """Ends the process when the status just written owes an Event of `reason` (none posted)."""
    if reason and any(getattr(ev, "reason", None) == reason for ev in events):
        log.warning("test crash point: exiting after the status write that owes %s, before any Event", reason)
        logging.shutdown()
        os._exit(EXIT_CODE)
