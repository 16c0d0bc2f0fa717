"""storage.keepModels: which iteration models a run may delete, and when (docs/gpu-plan.md,
"Storage").

A 72B iteration model is 145 GB; three of them and the base overfill a 500 GiB claim. The
decision is taken when an iteration's train stage starts, the moment the run needs room for
one more model, and travels in that stage's StageConfig (`delete_models`); the train stage
program deletes them (it mounts the volume: the operator does not) before its free-space
check. The local executor and the operator both plan through the planner, so both do the same.

Which models a later stage still needs when iteration t's train starts:
- M_{t-1}: this iteration's generator (synthesize, curate and a retried stage of t read it),
  and the base that one_last trains from. Always kept.
- the best iteration's model where the run exports it (spec.export) or keepModels is best.
- M_0 is the base: never an iteration model, never deleted.
Everything older is superseded: `last` deletes it; `best` keeps the best finished iteration
(stopping.metric's choice; without stopping, the last finished one); `all` deletes nothing.
"""

from __future__ import annotations

from typing import Optional

KEEP_MODELS = ("all", "best", "last")


def superseded_models(keep: str, iteration: int, best: Optional[int], exported: bool = False) -> list[int]:
    """The iterations whose models the train stage of `iteration` deletes, oldest first."""
    if keep not in KEEP_MODELS:
        raise ValueError(f"storage.keepModels must be one of {', '.join(KEEP_MODELS)}, not {keep!r}")
    if keep == "all":
        return []
    kept = {iteration - 1}
    if best is not None and (keep == "best" or exported):
        kept.add(best)
    return [i for i in range(1, iteration - 1) if i not in kept]


def models_to_delete(spec, finished, iteration: int, layout) -> list[str]:
    """The paths of the models that iteration's train stage deletes (`finished`: the records
    of the run's finished iterations; `layout`: where the run's models are)."""
    from sheepdog.planner.lineage_policy import model_of
    from sheepdog.planner.stopping_policy import judge

    keep = spec.storage.keep_models
    if keep == "all" or spec.training.strategy == "direct":  # direct: one iteration, one model
        return []
    best = judge(spec.stopping, finished).best_iteration
    return [layout.resolve(model_of(spec, i, layout))
            for i in superseded_models(keep, iteration, best, exported=spec.export is not None)]
