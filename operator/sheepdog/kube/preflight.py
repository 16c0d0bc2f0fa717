"""Pre-flight: would the API server take every stage Job this run will create? Asked before
any Job exists, so a bad later stage holds the run at once instead of failing it hours in.

A 422 at a Job's creation is permanent (creation_policy): a bad `resources` quantity, a volume
the API server refuses or a podTemplate that makes an invalid pod, found only when the stage is
reached, failed a run after its synthesize and train had used the GPUs. So at the first
reconcile of a run (and of each new generation: an edit may bring a bad template), the
operator builds the Job of every stage the iteration will run (iteration 1: the Jobs of later
iterations differ only in the command's config) with the builder the creation uses
(`stage_objects`), and

1. checks its pod against Pod Security "restricted" (pod_admission.job_problems): the Job
   controller creates the pods later, so a dry run of the Job cannot see that refusal;
2. creates it with `dryRun=All`: the API server validates and admits it (webhooks and policies
   on Jobs too) and stores nothing. A refusal the creation would meet too (400, 422, 403 by a
   policy: creation_policy.permanent) is a problem; a 409 is not (the name is taken: the Job
   passed validation, the creation handles the conflict); a transient answer (403 exceeded
   quota, 5xx, no answer) says nothing about the spec and the pre-flight is not recorded as
   passed, so it is asked again at the next reconcile.

Any problem holds the run as InvalidSpec with the API server's message (plan_invalid_spec: no
new stage starts, a running one finishes) until an edit fixes it; while held, every reconcile
asks again (a webhook or policy may change). A passed pre-flight is recorded in
status.preflightGeneration, so the steady state costs nothing: one dry-run POST per stage per
generation. The Jobs built here are the ones created in the same reconcile (`Preflight.built`),
so a reconcile builds each Job once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from sheepdog.api.spec import RunSpec
from sheepdog.kube import jobs as kjobs
from sheepdog.kube.client import KubeApi, error_status
from sheepdog.kube.pod_admission import job_problems
from sheepdog.kube.pod_template import PodTemplateError
from sheepdog.planner import creation_policy, stage_order
from sheepdog.planner.actions import StartStage
from sheepdog.planner.creation_policy import CreateError
from sheepdog.planner.lineage_policy import stage_config
from sheepdog.planner.reasons import Reason
from sheepdog.stage_config import kube_layout


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)  # refusals: the run is held (InvalidSpec)
    passed: bool = True  # every Job admitted: record the generation
    built: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # Job name -> its objects


def stage_objects(run: Mapping[str, Any], spec: RunSpec, action: Any, images: Any) -> list[dict[str, Any]]:
    """Everything one stage (or export) execution creates: the builder of the creation and of
    the pre-flight alike."""
    from sheepdog.kube import export_job

    if export_job.is_export(action):  # spec.export (planner/export_policy.py)
        return export_job.export_objects(run, spec, action, images)
    meta = run["metadata"]
    return kjobs.build_stage_objects(meta["name"], meta["namespace"], meta["uid"], spec, action.config, images,
                                     action.retry)


def due(status: Mapping[str, Any], generation: Optional[int]) -> bool:
    """A pre-flight is needed: this generation has not passed one, or the run is held."""
    return status.get("preflightGeneration") != generation or status.get("reason") == Reason.INVALID_SPEC


def planned(run_name: str, spec: RunSpec) -> list[StartStage]:
    """The stages of an iteration as the planner would start them (iteration 1)."""
    layout = kube_layout(run_name, spec)
    return [StartStage(1, stage, stage_config(run_name, spec, 1, stage, layout))
            for stage in stage_order.stages_of(spec, (), 1)]


def prepare(run: Mapping[str, Any], spec: RunSpec, images: Any) -> Preflight:
    """The pure part: build every stage's Job and check its pods against Pod Security, and
    whether every stage fits its GPUs by the plan of spec.model.shape (capacity/admission.py)."""
    from sheepdog.capacity.admission import shape_fit_problems

    out = Preflight()
    out.problems += shape_fit_problems(spec)
    for action in planned(run["metadata"]["name"], spec):
        where = f"stages.{action.stage}.podTemplate"
        try:
            objects = stage_objects(run, spec, action, images)
        except PodTemplateError as e:
            out.problems.append(f"{where}: {e}")
            continue
        job = next(o for o in objects if o.get("kind") == "Job")
        found = job_problems(job, where)
        out.problems += found
        if not found:
            out.built[job["metadata"]["name"]] = objects
    out.passed = not out.problems
    return out


def check(kube: KubeApi, run: Mapping[str, Any], spec: RunSpec, images: Any) -> Preflight:
    """prepare, then a server-side dry run of each Job that passed it (see the module docstring)."""
    out = prepare(run, spec, images)
    namespace = run["metadata"]["namespace"]
    for name, objects in list(out.built.items()):
        job = next(o for o in objects if o.get("kind") == "Job")
        try:
            kube.dry_run_create(namespace, job)
        except Exception as e:  # noqa: BLE001 - every answer is classified (creation_policy)
            err = CreateError(*error_status(e))
            del out.built[name]
            if creation_policy.permanent(err):
                stage = (job["metadata"].get("labels") or {}).get(kjobs.LABEL_STAGE, "?")
                out.problems.append(f"stages.{stage}: the API server refuses Job {name} "
                                    f"({err.status}): {err.message}")
            out.passed = False
    return out
