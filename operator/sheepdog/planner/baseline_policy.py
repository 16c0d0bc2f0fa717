"""M_0, the starting model, as iteration 0: what every iteration's evaluation is compared with.

A gain means nothing without the score the run started from (the paper reports every
iteration next to its base model), so with `evaluation.enabled` the run evaluates M_0 once,
before iteration 1 synthesizes:

* its stage is `evaluate` of iteration 0 (Job `<run>-i0-evaluate`, outputs in `i0/evaluate/`),
  on the base model (`model.base`) with the same suites and prompt format as every iteration;
* its record in status.iterations / report.json holds only `iteration: 0`, `model` (the base)
  and `evaluation`, beside the bookkeeping every record has (stages, times);
* every later record gets `evaluationGain`: metric -> its value minus M_0's, for each metric
  both evaluations have (rounded to 6 decimals, so 0.3 - 0.1 reads 0.2);
* the stopping rule starts from M_0's value (stopping_policy): an iteration that does not beat
  the starting model is no improvement, and if none does, the best iteration is 0.

Evaluation switched on after iteration 1 started evaluates nothing that is past (as for any
iteration): such a run has no baseline, and its gains stay unknown.
"""

from __future__ import annotations

from typing import Mapping, Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus

BASELINE = 0
GAIN_DIGITS = 6


def wanted(spec: RunSpec, status: RunStatus) -> bool:
    """Evaluate M_0 now: evaluation is on and the run has not started any stage yet."""
    return spec.evaluation.enabled and not any(r.stages for r in status.iterations)


def first_stage(spec: RunSpec, status: RunStatus) -> tuple[int, str]:
    """(iteration, stage) that starts a run."""
    return (BASELINE, "evaluate") if wanted(spec, status) else (1, "synthesize")


def gains(evaluation: Optional[Mapping[str, float]], baseline: Optional[Mapping[str, float]]
          ) -> Optional[dict[str, float]]:
    """metric -> evaluation - baseline, over the metrics both have; None when either is unknown."""
    if not evaluation or not baseline:
        return None
    return {m: round(v - baseline[m], GAIN_DIGITS) for m, v in evaluation.items() if m in baseline}


def apply_gains(status: RunStatus) -> None:
    """Fill evaluationGain of every trained iteration from iteration 0's evaluation."""
    base = status.record(BASELINE)
    reference = base.evaluation if base is not None else None
    for record in status.iterations:
        if record.iteration != BASELINE:
            record.evaluation_gain = gains(record.evaluation, reference)
