"""Which stages an iteration runs, in which order."""

from __future__ import annotations

from typing import Iterable, Optional

from sheepdog.api.spec import STAGES, RunSpec


def stages_of(spec: RunSpec, already_started: Iterable[str] = (), iteration: int = 1) -> tuple[str, ...]:
    """synthesize, curate, train, then evaluate when enabled. A stage that already started in
    this iteration stays in the order even if a spec edit has since switched it off, so the
    iteration's record stays coherent. Iteration 0 (M_0, the baseline) only evaluates."""
    started = set(already_started)
    if iteration == 0:
        return ("evaluate",)
    return tuple(
        s for s in STAGES if s != "evaluate" or spec.evaluation.enabled or s in started
    )


def is_stage(iteration: int, stage: str) -> bool:
    """A stage execution of this run: any stage of iterations 1.., or iteration 0's evaluate
    (M_0, baseline_policy). Anything else (a foreign Job with our labels) is not ours."""
    return stage in STAGES and (iteration >= 1 or (iteration == 0 and stage == "evaluate"))


def next_stage(order: tuple[str, ...], stage: str) -> Optional[str]:
    """The stage after `stage`, or None when `stage` ends the iteration."""
    i = order.index(stage)
    return order[i + 1] if i + 1 < len(order) else None


def last_started(stages: Iterable[str]) -> Optional[str]:
    """The latest stage in STAGES order among `stages`."""
    present = set(stages)
    return next((s for s in reversed(STAGES) if s in present), None)
