"""Which stages an iteration runs, in which order."""

from __future__ import annotations

from typing import Iterable, Optional

from sheepdog.api.spec import STAGES, RunSpec


def stages_of(spec: RunSpec, already_started: Iterable[str] = ()) -> tuple[str, ...]:
    """synthesize, curate, train, then evaluate when enabled. A stage that already started in
    this iteration stays in the order even if a spec edit has since switched it off, so the
    iteration's record stays coherent."""
    started = set(already_started)
    return tuple(
        s for s in STAGES if s != "evaluate" or spec.evaluation.enabled or s in started
    )


def next_stage(order: tuple[str, ...], stage: str) -> Optional[str]:
    """The stage after `stage`, or None when `stage` ends the iteration."""
    i = order.index(stage)
    return order[i + 1] if i + 1 < len(order) else None


def last_started(stages: Iterable[str]) -> Optional[str]:
    """The latest stage in STAGES order among `stages`."""
    present = set(stages)
    return next((s for s in reversed(STAGES) if s in present), None)
