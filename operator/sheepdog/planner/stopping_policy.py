"""spec.stopping: stop iterating when an evaluation metric stops improving (paper §4: the
authors stop when a benchmark stops improving), and which iteration is the best.

Metrics are "higher is better" (every IFEval/OpenCompass accuracy is). An iteration counts as
an improvement only if it beats the best so far by more than minDelta, and only improvements
move the best (as Keras' EarlyStopping does): a later iteration that is higher by less than
minDelta does not replace the best, because the run treats that difference as noise.
An iteration whose metric is unknown (summary missing) neither improves nor uses patience.

The starting model M_0 (iteration 0, baseline_policy) is the first value to beat: iteration 1
improves only if it beats M_0 by more than minDelta, and if no iteration does, the best
iteration is 0 (the base model). Without stopping, or before any metric is known, the best is
the last finished trained iteration (M_0 is never "last").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from sheepdog.api.spec import StoppingSpec
from sheepdog.api.status import IterationRecord


@dataclass(frozen=True)
class StoppingVerdict:
    stop: bool
    best_iteration: Optional[int]
    best_value: Optional[float] = None
    stale: int = 0  # finished iterations with a known metric since the best


def metric_of(record: IterationRecord, metric: str) -> Optional[float]:
    value = (record.evaluation or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def judge(stopping: Optional[StoppingSpec], finished: Sequence[IterationRecord]) -> StoppingVerdict:
    """`finished`: the records of finished iterations. Without stopping, or before any metric
    is known, the best iteration is the last finished one."""
    ordered = sorted(finished, key=lambda r: r.iteration)
    trained = [r.iteration for r in ordered if r.iteration >= 1]
    last = trained[-1] if trained else None
    if stopping is None:
        return StoppingVerdict(stop=False, best_iteration=last)
    best_it: Optional[int] = None
    best: Optional[float] = None
    stale = 0
    for record in ordered:
        value = metric_of(record, stopping.metric)
        if value is None:
            continue
        if best is None or value > best + stopping.min_delta:
            best_it, best, stale = record.iteration, value, 0
        else:
            stale += 1
    if best_it is None:
        return StoppingVerdict(stop=False, best_iteration=last)
    return StoppingVerdict(stop=stale >= stopping.patience, best_iteration=best_it, best_value=best, stale=stale)
