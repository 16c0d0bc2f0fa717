"""The operator's fit check: `sheepdog validate`'s refusal of a run whose stage cannot fit its
GPUs, for a run applied with kubectl.

The plan needs the base model's config.json, and the operator cannot read it: it does not mount
the run's volume (and fetches nothing from a hub). The run may carry that config in
spec.model.shape (the config.json's content, pasted; `sheepdog validate` and `sheepdog plan`
plan from it too when they cannot read config.json themselves); the pre-flight
(kube/preflight.py) then holds a run whose stage cannot fit, with the plan's numbers, before any
Job starts. Without it nothing is checked here (the plan says so in `sheepdog validate`). A
pre-flight Job that mounts the volume to read config.json was the alternative: it costs a pod
start (an image pull on a fresh node) per new generation of every run to learn what the user's
machine already knew, and its answer arrives asynchronously; the shape is a few integers.
"""

from __future__ import annotations

from sheepdog.api.spec import RunSpec
from sheepdog.capacity.plan import fit_problems, plan_run
from sheepdog.capacity.shape import ModelConfigError, shape_from_config

SHAPE_FIELD = "spec.model.shape"


def shape_fit_problems(spec: RunSpec) -> list[str]:
    """One line per stage that cannot fit its GPUs by the plan of spec.model.shape (none without
    it); a shape the plan cannot read is itself a problem. The storage is not checked: the
    claim's size is the cluster's, not the spec's."""
    if spec.model.shape is None:
        return []
    try:
        shape = shape_from_config(spec.model.shape, source=SHAPE_FIELD)
    except ModelConfigError as exc:
        return [str(exc)]
    return [f"{line} (planned from {SHAPE_FIELD})" for line in fit_problems(plan_run(spec, shape))]
