"""Admin guardrails: what a run may ask its pods to be, beyond Pod Security "restricted".

Creating a SelfAlignmentRun amounts to creating pods in its namespace with the run's image,
ServiceAccount, Secrets and volumes (the operator's Jobs make them). A cluster admin narrows
that with the chart's `guardrails` values; they are enforced twice, with the same rules:

- at `kubectl apply`, by the ValidatingAdmissionPolicy the chart renders from the values
  (charts/sheepdog/templates/guardrails-policy.yaml, CEL in the API server);
- by the operator, here: a run that breaks one (created before the policy, or where the policy
  is off) is held with reason InvalidSpec and one line per problem, before any Job exists.

An empty list places no limit; hostPath volumes are refused unless `allowHostPath` (whatever
`allowedVolumeTypes` says). An entry of
`namespaces` replaces, key by key, the values for the runs of that namespace (e.g. a team that
may use its own registry). Pure: the raw spec (camelCase, as stored) in, problems out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Optional, Union

STAGES = ("synthesize", "curate", "train", "evaluate")

# value key (chart, JSON) -> dataclass field
KEYS = {
    "allowedImagePrefixes": "allowed_image_prefixes",
    "allowedServiceAccounts": "allowed_service_accounts",
    "allowedVolumeTypes": "allowed_volume_types",
    "allowedSecretNames": "allowed_secret_names",
    "allowHostPath": "allow_host_path",
}


class GuardrailsError(ValueError):
    """The guardrails configuration itself is malformed (the operator refuses to start)."""


@dataclass(frozen=True)
class Guardrails:
    allowed_image_prefixes: tuple[str, ...] = ()
    allowed_service_accounts: tuple[str, ...] = ()
    allowed_volume_types: tuple[str, ...] = ()
    allowed_secret_names: tuple[str, ...] = ()
    allow_host_path: bool = False
    # namespace -> the guardrails of its runs (the overrides already applied)
    namespaces: Mapping[str, "Guardrails"] = field(default_factory=dict)

    @classmethod
    def coerce(cls, raw: Union[None, str, Mapping[str, Any], "Guardrails"]) -> "Guardrails":
        """From the chart's JSON (SHEEPDOG_GUARDRAILS) or its parsed mapping; None: defaults."""
        if isinstance(raw, Guardrails):
            return raw
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return cls()
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as e:
                raise GuardrailsError(f"guardrails: not valid JSON: {e}") from None
        if not isinstance(raw, Mapping):
            raise GuardrailsError("guardrails: must be a JSON object")
        unknown = set(raw) - set(KEYS) - {"namespaces"}
        if unknown:
            raise GuardrailsError(f"guardrails: unknown keys {sorted(unknown)}")
        base = cls()._with(raw, "guardrails")
        per_ns = raw.get("namespaces") or {}
        if not isinstance(per_ns, Mapping):
            raise GuardrailsError("guardrails.namespaces: must map namespace names to overrides")
        overrides = {}
        for ns, over in per_ns.items():
            if not isinstance(over, Mapping) or set(over) - set(KEYS):
                raise GuardrailsError(f"guardrails.namespaces.{ns}: an object with keys among {sorted(KEYS)}")
            overrides[str(ns)] = base._with(over, f"guardrails.namespaces.{ns}")
        return replace(base, namespaces=overrides)

    def _with(self, raw: Mapping[str, Any], where: str) -> "Guardrails":
        changes: dict[str, Any] = {}
        for key, attr in KEYS.items():
            if key not in raw:
                continue
            value = raw[key]
            if attr == "allow_host_path":
                if not isinstance(value, bool):
                    raise GuardrailsError(f"{where}.{key}: must be true or false")
                changes[attr] = value
            else:
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    raise GuardrailsError(f"{where}.{key}: must be a list of non-empty strings")
                changes[attr] = tuple(value)
        return replace(self, **changes)

    def for_namespace(self, namespace: str) -> "Guardrails":
        return self.namespaces.get(namespace, self)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _list(obj: Any) -> list:
    return obj if isinstance(obj, list) else []


def secret_references(spec: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, Secret name) for every Secret a run's pods would read: the spec's own references
    (hub token, judge API key, export credentials) and those its podTemplates add (env
    secretKeyRef, envFrom secretRef, secret and projected volumes)."""
    for where, path in (("model.hubTokenSecretRef", ("model", "hubTokenSecretRef", "name")),
                        ("evaluation.judge.apiKeySecretRef", ("evaluation", "judge", "apiKeySecretRef", "name")),
                        ("export.credentialsSecretRef", ("export", "credentialsSecretRef", "name"))):
        name = _get(spec, *path)
        if name:
            yield where, str(name)
    for stage in STAGES:
        pt = _get(spec, "stages", stage, "podTemplate")
        if not isinstance(pt, Mapping):
            continue
        at = f"stages.{stage}.podTemplate"
        for i, env in enumerate(_list(pt.get("env"))):
            name = _get(env, "valueFrom", "secretKeyRef", "name")
            if name:
                yield f"{at}.env[{i}]", str(name)
        for i, src in enumerate(_list(pt.get("envFrom"))):
            name = _get(src, "secretRef", "name")
            if name:
                yield f"{at}.envFrom[{i}]", str(name)
        for vol in _list(pt.get("volumes")):
            vname = _get(vol, "name")
            name = _get(vol, "secret", "secretName")
            if name:
                yield f"{at}.volumes[{vname}]", str(name)
            for src in _list(_get(vol, "projected", "sources")):
                name = _get(src, "secret", "name")
                if name:
                    yield f"{at}.volumes[{vname}]", str(name)


def volume_type(volume: Mapping[str, Any]) -> str:
    """A pod volume's type: its one key besides `name` (hostPath, secret, csi, ...)."""
    kinds = sorted(k for k in volume if k != "name")
    return ",".join(kinds) or "(none)"


def _allowed(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def guardrail_problems(spec: Optional[Mapping[str, Any]], namespace: str,
                       guardrails: Union[None, str, Mapping[str, Any], Guardrails]) -> list[str]:
    """One line per way the run's spec breaks the guardrails of its namespace; [] when none."""
    g = Guardrails.coerce(guardrails).for_namespace(namespace)
    spec = spec or {}
    problems: list[str] = []
    for stage in STAGES:
        image = _get(spec, "stages", stage, "image")
        if image and g.allowed_image_prefixes and not any(str(image).startswith(p) for p in g.allowed_image_prefixes):
            problems.append(f"stages.{stage}.image: {image!r} is not under an allowed image prefix "
                            f"(guardrails.allowedImagePrefixes: {_allowed(g.allowed_image_prefixes)})")
        pt = _get(spec, "stages", stage, "podTemplate")
        if not isinstance(pt, Mapping):
            continue
        at = f"stages.{stage}.podTemplate"
        sa = pt.get("serviceAccountName")
        if sa and g.allowed_service_accounts and sa not in g.allowed_service_accounts:
            problems.append(f"{at}.serviceAccountName: {sa!r} is not an allowed ServiceAccount "
                            f"(guardrails.allowedServiceAccounts: {_allowed(g.allowed_service_accounts)})")
        for vol in _list(pt.get("volumes")):
            if not isinstance(vol, Mapping):
                continue
            where = f"{at}.volumes[{vol.get('name')}]"
            # hostPath is allowHostPath's alone: allowedVolumeTypes never opens it, nor closes it
            if "hostPath" in vol:
                if not g.allow_host_path:
                    problems.append(f"{where}: hostPath volumes are not allowed (guardrails.allowHostPath: false)")
            elif g.allowed_volume_types and [k for k in vol if k != "name" and k not in g.allowed_volume_types]:
                problems.append(f"{where}: volume type {volume_type(vol)} is not allowed "
                                f"(guardrails.allowedVolumeTypes: {_allowed(g.allowed_volume_types)})")
    if g.allowed_secret_names:
        for where, name in secret_references(spec):
            if name not in g.allowed_secret_names:
                problems.append(f"{where}: Secret {name!r} is not allowed "
                                f"(guardrails.allowedSecretNames: {_allowed(g.allowed_secret_names)})")
    return problems


# A finished run starts nothing more: guardrails tightened after it ended do not rewrite its
# outcome into InvalidSpec.
FINISHED = ("Succeeded", "Failed")


def run_guardrail_problems(run: Mapping[str, Any],
                           guardrails: Union[None, str, Mapping[str, Any], Guardrails]) -> list[str]:
    """guardrail_problems for a run object (its namespace, its spec); [] once it has finished."""
    if ((run.get("status") or {}).get("phase")) in FINISHED:
        return []
    return guardrail_problems(run.get("spec"), (run.get("metadata") or {}).get("namespace") or "", guardrails)


__all__ = ["Guardrails", "GuardrailsError", "guardrail_problems", "run_guardrail_problems", "secret_references",
           "volume_type"]
