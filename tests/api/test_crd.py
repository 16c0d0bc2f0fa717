"""The generated CRD: in sync with the models, structural, and defaulting like pydantic does."""

from __future__ import annotations

import copy
import pathlib
from typing import Any, Iterator

import pytest
import yaml

from sheepdog.api import crd as crdmod
from sheepdog.api.spec import STAGES, FilterSpec, RunSpec, SelfAlignmentRun
from sheepdog.api.status import RunStatus

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / crdmod.CRD_FILE


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return crdmod.crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crds_dir_matches_models() -> None:
    """crds/ is generated: regenerate with `python -m sheepdog.api.crd > crds/...` when this fails."""
    assert CRD_PATH.exists(), f"missing {crdmod.CRD_FILE}: run python -m sheepdog.api.crd > {crdmod.CRD_FILE}"
    assert CRD_PATH.read_text() == crdmod.render(), (
        f"{crdmod.CRD_FILE} drifted from the models: run "
        f"`python -m sheepdog.api.crd > {crdmod.CRD_FILE}`"
    )


def test_rendered_file_parses_back_to_the_same_object(crd: dict[str, Any]) -> None:
    docs = [d for d in yaml.safe_load_all(crdmod.render()) if d]
    assert len(docs) == 1
    assert docs[0] == crd


def test_cli_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdmod.main([]) == 0
    assert capsys.readouterr().out == crdmod.render()


def test_names_scope_and_subresources(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "selfalignmentruns.sheepdog.dev"
    spec = crd["spec"]
    assert spec["group"] == "sheepdog.dev"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["kind"] == "SelfAlignmentRun"
    assert names["plural"] == "selfalignmentruns"
    assert names["singular"] == "selfalignmentrun"
    assert names["shortNames"] == ["sar"]
    assert "sheepdog" in names["categories"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    cols = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert cols["Phase"]["jsonPath"] == ".status.phase"
    assert cols["Iteration"]["jsonPath"] == ".status.iteration"
    assert cols["Stage"]["jsonPath"] == ".status.stage"
    assert cols["Kept"]["jsonPath"] == ".status.lastKept"
    # why a run is stuck (Unschedulable, ImagePullFailing...) shows in plain `kubectl get sar`
    assert cols["Reason"]["jsonPath"] == ".status.reason" and not cols["Reason"].get("priority")
    assert cols["Message"] == {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1}
    assert cols["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    # every column's path names a field the status model has (or metadata)
    status_fields = {f.alias or name for name, f in RunStatus.model_fields.items()}
    for col in cols.values():
        head, _, field = col["jsonPath"].lstrip(".").partition(".")
        if head == "status":
            assert field.split(".")[0] in status_fields, col


# --- structural schema -------------------------------------------------------------------

_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_FORBIDDEN_IN_JUNCTORS = ("type", "description", "default", "additionalProperties", "nullable",
                          "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string")


def structural_violations(node: Any, path: str = "", root: bool = True) -> list[str]:
    """The structural-schema rules of apiextensions.k8s.io/v1 that a generator can break."""
    out: list[str] = []
    if not isinstance(node, dict):
        return [f"{path}: not an object"]
    for key in node:
        if key.startswith("$") or key in ("definitions", "title", "const", "examples"):
            out.append(f"{path}: JSON Schema key {key!r} has no place in a structural schema")
    for j in _JUNCTORS:
        if j in node:
            for sub in node[j] if isinstance(node[j], list) else [node[j]]:
                for bad in _FORBIDDEN_IN_JUNCTORS:
                    if bad in sub:
                        out.append(f"{path}: {j} sets {bad}")
    typed = node.get("type")
    untyped_ok = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if not typed and not untyped_ok:
        out.append(f"{path or '<root>'}: no type")
    if typed is not None and not isinstance(typed, str):
        out.append(f"{path}: type must be one string, got {typed!r}")
    if typed == "null":
        out.append(f"{path}: type null")
    if node.get("x-kubernetes-int-or-string") and typed:
        out.append(f"{path}: int-or-string with a type")
    if root and typed != "object":
        out.append("<root>: must be an object")
    if "properties" in node and "additionalProperties" in node:
        out.append(f"{path}: properties and additionalProperties together")
    if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
        out.append(f"{path}: additionalProperties must be a schema")
    if ("properties" in node or "additionalProperties" in node) and typed != "object":
        out.append(f"{path}: properties on a non-object")
    if "items" in node and typed != "array":
        out.append(f"{path}: items on a non-array")
    if typed == "array" and "items" not in node:
        out.append(f"{path}: array without items")
    if node.get("nullable") and "default" in node and node["default"] is None:
        out.append(f"{path}: null default")
    if node.get("x-kubernetes-list-type") == "set":
        if node.get("items", {}).get("type") not in ("string", "integer", "number", "boolean"):
            out.append(f"{path}: list-type set of non-scalars")
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and not isinstance(node[bound], bool):
            out.append(f"{path}: {bound} must be a boolean in OpenAPI v3.0")
    for rule in node.get("x-kubernetes-validations", []):
        if set(rule) - {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}:
            out.append(f"{path}: unknown keys in a validation rule {rule}")
        if "\n" in rule.get("message", ""):
            out.append(f"{path}: validation message with a line break")
    if root:
        meta = node.get("properties", {}).get("metadata")
        if meta is not None:
            extra = set(meta.get("properties", {})) - {"name", "generateName"}
            if extra or set(meta) - {"type", "properties"}:
                out.append("metadata: only name and generateName may be restricted")
    for name, prop in node.get("properties", {}).items():
        out += structural_violations(prop, f"{path}.{name}", root=False)
    if isinstance(node.get("additionalProperties"), dict):
        out += structural_violations(node["additionalProperties"], f"{path}.*", root=False)
    if isinstance(node.get("items"), dict):
        out += structural_violations(node["items"], f"{path}[]", root=False)
    return out


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, prop in node.get("properties", {}).items():
            yield from walk(prop, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    assert structural_violations(schema) == []


def test_the_checker_catches_what_pydantic_emits() -> None:
    raw = RunSpec.model_json_schema(by_alias=True)
    problems = structural_violations(raw)
    assert any("$defs" in p or "$ref" in p for p in problems)
    assert any("anyOf sets type" in p for p in problems)


def test_no_anyof_or_nullable_anywhere(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        for key in ("anyOf", "oneOf", "allOf", "not", "nullable", "$ref"):
            assert key not in node, f"{path} has {key}"


def test_every_spec_object_is_closed_or_a_map(schema: dict[str, Any]) -> None:
    """spec objects prune unknown fields (pydantic forbids them): only targetModules is open, the
    pass-through mappings (training.trainerArgs, engineArgs: the loader checks their names),
    model.shape (a config.json, whatever its model type adds: capacity/shape.py reads its fields), and
    the core/v1 parts of a stage's podTemplate (EnvVar, EnvFromSource, Affinity, Volume,
    VolumeMount), which the API server validates as part of the Job."""
    open_nodes = [p for p, n in walk(schema["properties"]["spec"]) if n.get("x-kubernetes-preserve-unknown-fields")]
    core = [f".stages.{s}.podTemplate.{f}" for s in STAGES
            for f in ("env[]", "envFrom[]", "affinity", "volumes[]", "volumeMounts[]")]
    assert sorted(open_nodes) == sorted([".training.lora.targetModules", ".training.trainerArgs", ".engineArgs",
                                         ".model.shape", *core])


def test_status_keeps_what_the_operator_writes(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    record = status["properties"]["iterations"]["items"]
    assert record["x-kubernetes-preserve-unknown-fields"] is True
    stage = record["properties"]["stages"]["additionalProperties"]
    assert stage["x-kubernetes-preserve-unknown-fields"] is True
    assert stage["properties"]["summary"]["x-kubernetes-preserve-unknown-fields"] is True
    assert record["properties"]["evaluation"]["additionalProperties"] == {"type": "number"}
    assert status["properties"]["lastKept"]["type"] == "integer"
    for path, node in walk(status):
        assert "default" not in node, f"status{path} has a default: the operator writes status"


def test_ranges_enums_and_exclusive_bounds(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    threshold = spec["filter"]["properties"]["threshold"]
    assert (threshold["minimum"], threshold["maximum"]) == (-1, 10)  # -1: every scored pair (Fig. 2a)
    assert spec["iterations"]["minimum"] == 1 and spec["iterations"]["maximum"] == 100
    top_p = spec["synthesis"]["properties"]["topP"]
    assert top_p["minimum"] == 0 and top_p["exclusiveMinimum"] is True and top_p["maximum"] == 1
    assert spec["assessment"]["properties"]["prompt"]["enum"] == ["simple", "combined", "icl"]
    assert spec["training"]["properties"]["strategy"]["enum"] == ["one_base", "one_last", "total_base", "direct"]
    assert spec["engine"]["enum"] == ["auto", "vllm", "transformers"]
    criteria = spec["assessment"]["properties"]["criteria"]
    assert criteria["items"]["enum"] == ["quality", "following"]
    assert criteria["x-kubernetes-list-type"] == "set"
    resources = spec["stages"]["properties"]["train"]["properties"]["resources"]
    assert resources["additionalProperties"]["additionalProperties"] == {"x-kubernetes-int-or-string": True}
    assert spec["stages"]["properties"]["train"]["properties"]["nodeSelector"]["additionalProperties"] == {
        "type": "string"
    }
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["required"] == ["model"]


def test_cel_rules_come_from_the_models(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == RunSpec.model_config["json_schema_extra"]["x-kubernetes-validations"]
    assert (
        spec["properties"]["filter"]["x-kubernetes-validations"]
        == FilterSpec.model_config["json_schema_extra"]["x-kubernetes-validations"]
    )
    root_rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert "size(self.metadata.name) <= 40" in root_rules
    assert SelfAlignmentRun.model_config["json_schema_extra"]["x-kubernetes-validations"] == schema[
        "x-kubernetes-validations"
    ]
    assert schema["properties"]["metadata"]["properties"]["name"]["pattern"].startswith("^[a-z]")


def test_every_cel_field_reference_exists(schema: dict[str, Any]) -> None:
    """A typo in a CEL rule (self.filter.treshold) would only show on a real API server."""
    import re

    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            for ref in re.findall(r"self((?:\.[A-Za-z_]\w*)+)", rule["rule"]):
                cur = node
                for part in ref.lstrip(".").split("."):
                    if path == "" and part == "metadata":
                        cur = {"properties": {"name": {}}}
                        continue
                    assert part in cur.get("properties", {}), f"{path}: {rule['rule']} names {ref}"
                    cur = cur["properties"][part]


# --- defaulting: what the API server stores equals what pydantic fills in -------------------


def apply_defaults(obj: Any, node: dict[str, Any]) -> Any:
    """apiextensions structural defaulting: a missing property with a default gets a copy of it,
    then defaulting recurses into it (so `default: {}` fills the nested defaults)."""
    if isinstance(obj, dict):
        props = node.get("properties")
        if props:
            for name, prop in props.items():
                if name not in obj and "default" in prop:
                    obj[name] = copy.deepcopy(prop["default"])
                if name in obj:
                    obj[name] = apply_defaults(obj[name], prop)
        elif isinstance(node.get("additionalProperties"), dict):
            for k in obj:
                obj[k] = apply_defaults(obj[k], node["additionalProperties"])
    elif isinstance(obj, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(v, node["items"]) for v in obj]
    return obj


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"base": "m"}},
        {"model": {"base": "m"}, "stages": {"train": {"nodes": 2}}, "filter": {"method": "ppl"}},
        {"model": {"base": "m"}, "training": {"lora": {"targetModules": ["q_proj", "v_proj"]}}},
        {"model": {"base": "m"}, "assessment": {"criteria": []}, "filter": {"threshold": 0}},
    ],
)
def test_server_defaults_equal_pydantic_defaults(schema: dict[str, Any], spec: dict[str, Any]) -> None:
    defaulted = apply_defaults(copy.deepcopy(spec), schema["properties"]["spec"])
    assert defaulted == RunSpec.model_validate(spec).to_wire()


def test_every_default_is_valid_for_pydantic(schema: dict[str, Any]) -> None:
    """The defaulted empty spec is what the operator reads back: pydantic must accept it as is."""
    defaulted = apply_defaults({"model": {"base": "m"}}, schema["properties"]["spec"])
    assert RunSpec.model_validate(defaulted).to_wire() == defaulted


# --- API conventions and immutability (issue 14) ------------------------------------------------


def test_conditions_are_a_list_map_keyed_by_type(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]  # a map key must be required


def test_every_time_is_a_date_time(schema: dict[str, Any]) -> None:
    times = {p: n.get("format") for p, n in walk(schema["properties"]["status"])
             if p.endswith(("At", "Time"))}
    assert times and set(times.values()) == {"date-time"}, times
    assert ".conditions[].lastTransitionTime" in times and ".startedAt" in times


def test_fields_that_would_corrupt_a_started_run_are_immutable(schema: dict[str, Any]) -> None:
    rules = [r for r in schema["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    fields = [r["message"].split()[0] for r in rules]
    assert fields == ["spec.storage.claimName", "spec.storage.subPath", "spec.model.base", "spec.seed.path",
                      "spec.training.strategy"]
    for r in rules:
        assert r["rule"].startswith("!(has(oldSelf.status) && has(oldSelf.status.startedAt)) || ")
        assert "cannot change once the run has started: " in r["message"]
