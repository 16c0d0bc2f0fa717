"""`sheepdog render RUN.yaml`: the Kubernetes objects a run would create, without a cluster.

Renders iteration 1 (or any iteration): for every stage the iteration runs (synthesize,
curate, train, then evaluate when enabled), the StageConfig the planner would give it (the
planner's lineage policy, so generator/base models and train data are the planner's) and the
objects the operator would create for it (a multi-node train's rendezvous Service, then the
Job). Stages run one after the other, so on a cluster these Jobs exist one at a time; here they
are all shown at once.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import yaml

from sheepdog.api.spec import SelfAlignmentRun
from sheepdog.kube.jobs import ImageDefaults, build_stage_objects
from sheepdog.planner.lineage_policy import stage_config
from sheepdog.planner.stage_order import stages_of
from sheepdog.stage_config import kube_layout

# A run that was never created has no uid. Objects carrying this one are for reading: if they
# were applied, the garbage collector would delete them as orphans of a run that does not exist.
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def render_run(
    run: SelfAlignmentRun,
    namespace: Optional[str] = None,
    *,
    iteration: int = 1,
    image_defaults: Union[None, str, Mapping[str, Any], ImageDefaults] = None,
    run_uid: Optional[str] = None,
) -> list[dict[str, Any]]:
    """The objects of every stage of `iteration`, in the order the operator creates them.

    namespace: default the run's metadata.namespace, else "default". run_uid: default the run's
    metadata.uid when the manifest has one (e.g. from `kubectl get -o yaml`), else a placeholder.
    """
    name = run.metadata.name
    meta_extra = run.metadata.model_extra or {}
    ns = namespace or run.metadata.namespace or "default"
    uid = run_uid or meta_extra.get("uid") or PLACEHOLDER_UID
    spec = run.spec
    layout = kube_layout(name, spec)
    objects: list[dict[str, Any]] = []
    for stage in stages_of(spec, iteration=iteration):
        config = stage_config(name, spec, iteration, stage, layout)
        objects += build_stage_objects(name, ns, uid, spec, config, image_defaults)
    return objects


def to_yaml(objects: list[dict[str, Any]], header: str = "") -> str:
    """YAML documents, one per object (each stage command argument on one line)."""
    body = yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False, width=1 << 20)
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + "---\n" + body if objects else lines


def render_run_yaml(run: SelfAlignmentRun, namespace: Optional[str] = None, **kwargs: Any) -> str:
    objects = render_run(run, namespace, **kwargs)
    iteration = kwargs.get("iteration", 1)
    header = (
        f"Objects the operator would create for iteration {iteration} of SelfAlignmentRun "
        f"{run.metadata.name}, one stage after the other."
    )
    if any(ref["uid"] == PLACEHOLDER_UID for o in objects for ref in o["metadata"]["ownerReferences"]):
        header += "\nownerReferences carry a placeholder uid: for reading, not for kubectl apply."
    return to_yaml(objects, header)
