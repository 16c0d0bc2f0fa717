"""A stage's `podTemplate` applied to the pod the Job builder made. Pure: dicts in, dicts out.

What sheepdog sets stays as it is: lists (env, envFrom, volumes, volumeMounts) are appended to,
maps (labels, annotations) merged into, and a template that would replace one of sheepdog's
own entries (an env variable, a volume, a mount path, a label or annotation key) is refused
with PodTemplateError, so a run cannot silently lose its data volume or its run label.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Optional

from sheepdog.api.spec import PodTemplate


class PodTemplateError(ValueError):
    """The template collides with what sheepdog sets."""


def _clash(what: str, ours: Iterable[str], theirs: Iterable[str]) -> None:
    both = sorted(set(ours) & set(theirs))
    if both:
        raise PodTemplateError(f"podTemplate.{what}: {', '.join(both)} already set by sheepdog")


def _entries(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [copy.deepcopy(dict(i)) for i in items]


def apply_to_pod(pod: dict[str, Any], template: Optional[PodTemplate]) -> None:
    """Add the template's pod-level fields and container additions to `pod` (a PodSpec)."""
    if template is None:
        return
    (container,) = pod["containers"]
    _clash("env", (e["name"] for e in container.get("env") or ()), (e["name"] for e in template.env))
    _clash("volumes", (v["name"] for v in pod.get("volumes") or ()), (v["name"] for v in template.volumes))
    _clash("volumeMounts", (m["mountPath"] for m in container.get("volumeMounts") or ()),
           (m["mountPath"] for m in template.volume_mounts))
    if template.env:
        container["env"] = [*container.get("env", []), *_entries(template.env)]
    if template.env_from:
        container["envFrom"] = [*container.get("envFrom", []), *_entries(template.env_from)]
    if template.volume_mounts:
        container["volumeMounts"] = [*container.get("volumeMounts", []), *_entries(template.volume_mounts)]
    if template.volumes:
        pod["volumes"] = [*pod.get("volumes", []), *_entries(template.volumes)]
    if template.service_account_name:
        pod["serviceAccountName"] = template.service_account_name
    if template.runtime_class_name:
        pod["runtimeClassName"] = template.runtime_class_name
    if template.affinity:
        pod["affinity"] = copy.deepcopy(template.affinity)


def merge_metadata(ours: Mapping[str, str], theirs: Mapping[str, str], what: str) -> dict[str, str]:
    """Labels or annotations of the pod template: the template's keys added to sheepdog's."""
    _clash(what, ours, theirs)
    return {**theirs, **ours}
