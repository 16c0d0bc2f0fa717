"""Generates docs/spec.md, the field reference, from the spec models.

Generated rather than written so the reference cannot drift from the code: tests/api
regenerates it and compares. Run: python -m sheepdog.api.reference > docs/spec.md
"""

from __future__ import annotations

import json
import typing
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sheepdog.api.spec import RunSpec


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if annotation is typing.Any:
        return "any value"
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(a) for a in parts)
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if origin is dict:
        return "map"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "object"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
    if value is None:
        return "unset"
    return f"`{json.dumps(value)}`"


def _bounds(field: FieldInfo) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "min length ")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym}{v}")
    return ", ".join(out)


def rows(model: type[BaseModel], prefix: str = "spec") -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        desc = (field.description or "").replace("\n", " ").replace("|", "\\|")
        bounds = _bounds(field)
        if bounds:
            desc = f"{desc} ({bounds})" if desc else f"({bounds})"
        yield path, _type_name(field.annotation), _default(field), desc
        for sub in _models_in(field.annotation):
            yield from rows(sub, path)


def render() -> str:
    lines = [
        "# SelfAlignmentRun spec reference (v1alpha1)",
        "",
        "Generated from `operator/sheepdog/api/spec.py` by `python -m sheepdog.api.reference`;",
        "a test fails when this file and the models disagree. Defaults reproduce the paper's",
        "main setting. Cross-field rules (also enforced at `kubectl apply` by CEL):",
        "",
    ]
    rules = RunSpec.model_config.get("json_schema_extra", {}).get("x-kubernetes-validations", [])
    lines += [f"- {r['message']}" for r in rules]
    lines += ["", "| field | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{p}` | {t} | {d} | {m} |" for p, t, d, m in rows(RunSpec)]
    lines += sweep_section()
    lines += plan_section()
    return "\n".join(lines) + "\n"


def sweep_section() -> list[str]:
    """The SelfAlignmentSweep's own fields (its template is the run spec above; docs/sweeps.md)."""
    from sheepdog.api.sweep_spec import SweepSpec

    lines = ["", "## SelfAlignmentSweep spec (v1alpha1)", "",
             "`kubectl get sweep`; docs/sweeps.md. `spec.template` is a run spec: every field above.", "",
             "| field | type | default | meaning |", "|---|---|---|---|"]
    return lines + [f"| `{p}` | {t} | {d} | {m} |" for p, t, d, m in rows(SweepSpec)
                    if not p.startswith("spec.template.")]


# What a user's script reads from `sheepdog plan RUN.yaml --output json` (issue 22); the plan
# has more keys, each documented with its formula in docs/gpu-plan.md, whose key table
# tests/capacity/test_plan.py checks against the plan, and this list too.
PLAN_KEYS = [
    ("stages.<stage>.gpus", "GPUs of one pod of the stage"),
    ("stages.<stage>.memoryGiBPerRank", "GiB one rank of the stage needs (vLLM: what it takes of the GPU)"),
    ("stages.<stage>.fits", "whether that fits spec.resources.gpuMemoryGiB (null: the stage runs on CPU)"),
    ("stages.train.memoryGiBPerRankWithCheckpointing", "train's rank with training.gradientCheckpointing: true"),
    ("stages.train.memoryGiBPerRankWithoutCheckpointing", "... and with false"),
    ("fits", "every stage fits"),
    ("storageGiB", "what the run writes on its volume at the peak (base, models or adapters x iterations, data)"),
]


def plan_section() -> list[str]:
    lines = ["", "## `sheepdog plan RUN.yaml --output json`", "",
             "Before any GPU is spent, from the model's config.json (or spec.model.shape): the keys below, "
             "and every other key with its formula in docs/gpu-plan.md.", "",
             "| key | meaning |", "|---|---|"]
    return lines + [f"| `{k}` | {m} |" for k, m in PLAN_KEYS]


if __name__ == "__main__":
    print(render(), end="")
