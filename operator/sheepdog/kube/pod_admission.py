"""Would the pods of a stage Job be admitted? Part of the pre-flight (kube/preflight.py).

A stage's `podTemplate` can add volumes, annotations and a RuntimeClass; a hostPath volume or
an unconfined AppArmor annotation would make the Job controller's pod creation fail (FailedCreate
from PodSecurity, seen only as a Job that never starts: a dry run of the Job cannot see it, the
pods are created later). So the pre-flight checks each stage Job it built against Pod Security
"restricted" (podsecurity.py) and holds the run with a clear message instead. Pure: a Job in,
one line per problem out.
"""

from __future__ import annotations

from typing import Any, Mapping

from sheepdog.kube.podsecurity import restricted_violations

# Pod annotations the baseline profile checks (AppArmor before the appArmorProfile field).
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def annotation_violations(annotations: dict[str, str]) -> list[str]:
    out = []
    for key, value in annotations.items():
        if key.startswith(APPARMOR_PREFIX) and value != "runtime/default" and not value.startswith("localhost/"):
            out.append(f"annotation {key}: {value!r} is not allowed (runtime/default or localhost/*)")
    return out


def job_problems(job: Mapping[str, Any], where: str) -> list[str]:
    """The Job's pod against Pod Security "restricted": one line naming `where` (e.g.
    `stages.train.podTemplate`) and every violated rule, or [] when its pods would be admitted."""
    template = job["spec"]["template"]
    found = restricted_violations(template["spec"])
    found += annotation_violations((template.get("metadata") or {}).get("annotations") or {})
    if not found:
        return []
    return [f'{where}: the pod would violate Pod Security "restricted": ' + "; ".join(found)]
