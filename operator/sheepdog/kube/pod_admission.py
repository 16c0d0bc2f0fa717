"""Would the pods of a run's stages be admitted? Checked before any Job is created.

A stage's `podTemplate` can add volumes, annotations and a RuntimeClass; a hostPath volume or
an unconfined AppArmor annotation would make the Job controller's pod creation fail (FailedCreate
from PodSecurity, seen only as a Job that never starts). So the operator builds each stage's
pod as it would (iteration 1: the pod template does not depend on the iteration), checks it
against Pod Security "restricted" (podsecurity.py) and holds the run with a clear message
instead. Pure: the spec and the worker defaults in, one line per problem out.
"""

from __future__ import annotations

from typing import Any

from sheepdog.api.spec import STAGES, RunSpec
from sheepdog.kube import jobs
from sheepdog.kube.pod_template import PodTemplateError
from sheepdog.kube.podsecurity import restricted_violations
from sheepdog.planner.lineage_policy import stage_config
from sheepdog.stage_config import kube_layout

# Pod annotations the baseline profile checks (AppArmor before the appArmorProfile field).
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def annotation_violations(annotations: dict[str, str]) -> list[str]:
    out = []
    for key, value in annotations.items():
        if key.startswith(APPARMOR_PREFIX) and value != "runtime/default" and not value.startswith("localhost/"):
            out.append(f"annotation {key}: {value!r} is not allowed (runtime/default or localhost/*)")
    return out


def pod_template_problems(run_name: str, spec: RunSpec, images: Any = None) -> list[str]:
    """One line per stage whose podTemplate collides with sheepdog's pod or would be refused by
    Pod Security "restricted"; [] when every stage's pod would be admitted."""
    problems = []
    layout = kube_layout(run_name, spec)
    for stage in STAGES:
        if spec.stages.of(stage).pod_template is None:
            continue
        where = f"stages.{stage}.podTemplate"
        try:
            job = jobs.build_stage_job(run_name, "check", "check", spec,
                                       stage_config(run_name, spec, 1, stage, layout), images)
        except PodTemplateError as e:
            problems.append(f"{where}: {e}")
            continue
        template = job["spec"]["template"]
        found = restricted_violations(template["spec"])
        found += annotation_violations(template["metadata"].get("annotations") or {})
        if found:
            problems.append(f'{where}: the pod would violate Pod Security "restricted": ' + "; ".join(found))
    return problems
