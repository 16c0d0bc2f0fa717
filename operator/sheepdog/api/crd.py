"""The SelfAlignmentRun CustomResourceDefinition, generated from the pydantic models.

    python -m sheepdog.api.crd > crds/sheepdog.dev_selfalignmentruns.yaml

The models in spec.py/status.py are the one source of truth; this module turns pydantic's JSON
Schema into a Kubernetes *structural* OpenAPI v3 schema:

- every `$ref` is inlined, `title`s dropped, descriptions kept;
- `Optional[X]` (anyOf X | null) becomes X without `nullable`: the API server prunes a null
  value of a non-nullable field before defaulting, so `keepFraction: null` reads as absent,
  exactly as pydantic's None does (and CEL `has()` is false for it);
- defaults are kept as structural defaults; a nested model built by `default_factory` gets
  `default: {}` (plus whatever differs from its own defaults), so the API server fills the same
  nested defaults pydantic does and the spec-level CEL rules always find `stages`, `filter`...;
- JSON Schema 2020 `exclusiveMinimum: 0` becomes OpenAPI 3.0 `minimum: 0, exclusiveMinimum: true`;
- `extra="allow"` models (status records) and `dict[str, Any]` become
  `x-kubernetes-preserve-unknown-fields: true`, so the server never prunes what the operator
  writes; `dict[str, X]` becomes `additionalProperties: X`; `int | str` becomes
  `x-kubernetes-int-or-string`;
- a field marked `x-kubernetes-preserve-unknown-fields` in the model (lora.targetModules: a
  string or a list, which no structural schema can express and CEL cannot inspect on an
  untyped node) keeps no type: the server accepts it and the operator's pydantic validation
  rejects a wrong type when it loads the run;
- `x-kubernetes-validations` (CEL) written beside the models are carried as they are.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault

from sheepdog.api.spec import GROUP, KIND, PLURAL, VERSION, Metadata, RunSpec, SelfAlignmentRun
from sheepdog.api.status import RunStatus

SINGULAR = "selfalignmentrun"
SHORT_NAMES = ["sar"]
CATEGORIES = ["sheepdog"]
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = f"crds/{GROUP}_{PLURAL}.yaml"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Iteration", "type": "integer", "jsonPath": ".status.iteration"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {"name": "Kept", "type": "integer", "jsonPath": ".status.lastKept",
     "description": "Pairs kept by curation in the last curated iteration."},
    # visible by default: a stuck stage shows why (Unschedulable, ImagePullFailing, ...)
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# JSON Schema keys with no place in a structural schema (or no meaning to the API server).
_DROP = {"title", "examples", "$schema", "$defs", "discriminator", "deprecated", "readOnly", "writeOnly"}


class _K8sJsonSchema(GenerateJsonSchema):
    """pydantic's generator, also reporting defaults built by a default_factory."""

    def get_default_value(self, schema: Any) -> Any:
        if "default" in schema:
            return schema["default"]
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return NoDefault
        value = factory()
        if isinstance(value, BaseModel):
            # `{}` and let the server fill the nested defaults: only what differs is spelled out.
            return value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return value


class SchemaError(ValueError):
    """The models use a construct a structural schema cannot express."""


def _is_null(node: dict[str, Any]) -> bool:
    return node.get("type") == "null"


def structural(node: dict[str, Any], defs: dict[str, Any], *, status: bool = False, path: str = "") -> dict[str, Any]:
    """One pydantic JSON Schema node -> a Kubernetes structural schema node (a new dict)."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        # the referencing node's own keys (default, description) win over the definition's
        node = {**defs[name], **node}

    if "anyOf" in node or "oneOf" in node:
        options = [o for o in node.pop("anyOf", None) or node.pop("oneOf") if not _is_null(o)]
        if node.get("default", NoDefault) is None:
            del node["default"]
        if node.get("x-kubernetes-preserve-unknown-fields"):
            pass  # deliberately untyped: the model validates it
        elif len(options) == 1:
            inner = options[0]
            if "$ref" in inner:
                inner = {**defs[inner["$ref"].rsplit("/", 1)[-1]]}
            node = {**inner, **node}
        elif sorted(o.get("type", "") for o in options) == ["integer", "string"] and all(
            len(o) == 1 for o in options
        ):
            node["x-kubernetes-int-or-string"] = True
        else:
            raise SchemaError(f"{path or '<root>'}: a union a structural schema cannot express: {options}")
        return structural(node, defs, status=status, path=path)

    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", NoDefault) is None:
        del node["default"]
    if status:
        # status is written by the operator only: defaults there would fabricate values.
        node.pop("default", None)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "x-kubernetes-int-or-string":
            if value is None or value is True:
                out[key] = True
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
            continue
        if key == "properties":
            out["properties"] = {
                name: structural(prop, defs, status=status, path=f"{path}.{name}")
                for name, prop in value.items()
            }
            continue
        if key == "items":
            out["items"] = structural(value, defs, status=status, path=f"{path}[]")
            continue
        if key == "additionalProperties":
            if value is False:
                continue  # closed object: the server prunes unknown fields (and strict
                #           field validation reports them), which is the structural way
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
                continue
            if "properties" in node:
                raise SchemaError(f"{path}: properties and a typed additionalProperties together")
            out["additionalProperties"] = structural(value, defs, status=status, path=f"{path}.*")
            continue
        out[key] = value

    if out.get("x-kubernetes-preserve-unknown-fields") and "properties" not in out and "additionalProperties" not in out:
        if out.get("type") not in (None, "object"):
            out.pop("x-kubernetes-preserve-unknown-fields")
    if "type" not in out and "properties" in out:
        out["type"] = "object"
    if out.get("type") == "object" and out.get("x-kubernetes-preserve-unknown-fields") is None and not (
        "properties" in out or "additionalProperties" in out
    ):
        # an object whose keys are not declared: keep them
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


def model_schema(model: type[BaseModel], *, status: bool = False) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_K8sJsonSchema)
    defs = raw.get("$defs", {})
    return structural(raw, defs, status=status, path=".spec" if not status else ".status")


def spec_schema() -> dict[str, Any]:
    return model_schema(RunSpec)


def status_schema() -> dict[str, Any]:
    schema = model_schema(RunStatus, status=True)
    schema.pop("required", None)
    return schema


def metadata_schema() -> dict[str, Any]:
    """The root's metadata: only name (and generateName) may be restricted in a CRD."""
    name = Metadata.model_json_schema()["properties"]["name"]
    restricted = {"type": "string"}
    if "pattern" in name:
        restricted["pattern"] = name["pattern"]
    return {"type": "object", "properties": {"name": restricted}}


def root_validations() -> list[dict[str, str]]:
    extra = SelfAlignmentRun.model_config.get("json_schema_extra") or {}
    return copy.deepcopy(extra.get("x-kubernetes-validations", []))  # type: ignore[union-attr]


def root_schema(description: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """A root object schema of ours: apiVersion, kind, the restricted metadata, spec, status."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": metadata_schema(),
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }


def openapi_schema() -> dict[str, Any]:
    root = root_schema(
        "A SelfAlignmentRun runs I-SHEEP iterative self-alignment: per iteration, the model "
        "synthesizes instruction-response pairs, assesses them itself, curates them and is "
        "LoRA-trained on what it kept.", spec_schema(), status_schema())
    rules = root_validations()
    if rules:
        root["x-kubernetes-validations"] = rules
    return root


def crd() -> dict[str, Any]:
    return crd_document(KIND, PLURAL, SINGULAR, SHORT_NAMES, openapi_schema(), PRINTER_COLUMNS)


def crd_document(kind: str, plural: str, singular: str, short_names: list[str], schema: dict[str, Any],
                 columns: list[dict[str, Any]]) -> dict[str, Any]:
    """A namespaced CRD of the sheepdog.dev group (the run's, the sweep's: sweep_crd.py)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "sheepdog", "app.kubernetes.io/part-of": "sheepdog"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(columns),
                }
            ],
        },
    }


# Key order in the written file: what a reader looks for first.
_FIRST = ("type", "description", "default", "enum", "format", "pattern", "minLength", "maxLength",
          "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems", "maxItems")
_LAST = ("properties", "additionalProperties", "items", "required")


def ordered(node: Any) -> Any:
    """A copy with schema keys in a stable, readable order (values are not changed)."""
    if isinstance(node, list):
        return [ordered(v) for v in node]
    if not isinstance(node, dict):
        return node
    keys = list(node)
    head = [k for k in _FIRST if k in node]
    tail = [k for k in _LAST if k in node]
    middle = [k for k in keys if k not in head and k not in tail and not k.startswith("x-kubernetes-")]
    ext = sorted(k for k in keys if k.startswith("x-kubernetes-"))
    out = {}
    for k in head + middle + tail + ext:
        value = node[k]
        if k in ("properties", "default", "enum") or k == "x-kubernetes-validations":
            # property names and literal values keep their order
            if k == "properties":
                out[k] = {name: ordered(v) for name, v in value.items()}
            else:
                out[k] = copy.deepcopy(value)
        else:
            out[k] = ordered(value)
    return out


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors in a CRD
        return True


HEADER = (
    "# Generated from the pydantic models by `python -m sheepdog.api.crd`; do not edit.\n"
    "# tests/api/test_crd.py fails when this file drifts from operator/sheepdog/api/.\n"
)


def render() -> str:
    return render_document(crd())


def render_document(doc: dict[str, Any], module: str = "sheepdog.api.crd") -> str:
    """The CRD file: the header naming `module` (its generator), the schema keys ordered."""
    version = doc["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"] = ordered(version["schema"]["openAPIV3Schema"])
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100,
                     allow_unicode=True)
    return HEADER.replace("sheepdog.api.crd", module) + "---\n" + body


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
