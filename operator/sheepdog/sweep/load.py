"""Reading a SelfAlignmentSweep file (or object): one line per problem, camelCase paths.

A problem inside spec.template is worded by the run file's own reader (sheepdog.api.load),
so the template reads exactly like a run file's spec; the rest of the sweep's problems name
their path (spec.axes[0].values) and pydantic's reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import ValidationError

from sheepdog.api.load import RunSpecError, parse_run
from sheepdog.api.sweep_spec import SWEEP_KIND, SelfAlignmentSweep
from sheepdog.sweep.grid import SweepInvalid


def is_sweep_file(path: Union[str, Path]) -> bool:
    """Whether `path` holds one YAML document of kind SelfAlignmentSweep (`sheepdog validate`
    takes run and sweep files alike); anything unreadable is left to the run reader to word."""
    try:
        documents = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return len(documents) == 1 and isinstance(documents[0], dict) and documents[0].get("kind") == SWEEP_KIND


def load_sweep(path: Union[str, Path]) -> SelfAlignmentSweep:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SweepInvalid([f"cannot read: {getattr(err, 'strerror', None) or err}"], source=str(path)) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise SweepInvalid([f"invalid YAML: {err}"], source=str(path)) from None
    if len(documents) != 1:
        raise SweepInvalid([f"expected one YAML document with a SelfAlignmentSweep, found {len(documents)}"],
                           source=str(path))
    return parse_sweep(documents[0], source=str(path))


def parse_sweep(data: Any, source: str = "<sweep>") -> SelfAlignmentSweep:
    if not isinstance(data, dict):
        raise SweepInvalid([f"expected a mapping (apiVersion, kind, metadata, spec), got {type(data).__name__}"],
                           source=source)
    if data.get("kind") == "SelfAlignmentRun":
        raise SweepInvalid(["this is a SelfAlignmentRun: `sheepdog run` runs it (a sweep has kind "
                            "SelfAlignmentSweep, spec.template and spec.axes)"], source=source)
    problems = _template_problems(data)
    try:
        sweep = SelfAlignmentSweep.model_validate(data)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            loc = tuple(e["loc"])
            if loc[:2] == ("spec", "template") and len(loc) > 2:
                continue  # worded by the run reader above
            problems.append(f"{_path(loc)}: {_reason(e)}")
        raise SweepInvalid(problems or [str(err)], source=source) from None
    if problems:
        raise SweepInvalid(problems, source=source)
    return sweep


def _template_problems(data: dict[str, Any]) -> list[str]:
    spec = data.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    if not isinstance(template, dict):
        return []
    as_run = {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun",
              "metadata": {"name": "template"}, "spec": template}
    try:
        parse_run(as_run, source="")
    except RunSpecError as err:
        return [p.removeprefix(": ").replace("spec.", "spec.template.", 1) for p in err.problems]
    return []


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _reason(e: dict[str, Any]) -> str:
    if e["type"] == "missing":
        return "required"
    if e["type"] == "extra_forbidden":
        return "unknown field"
    message = str((e.get("ctx") or {}).get("error") or e["msg"]).removeprefix("Value error, ")
    given = e.get("input")
    if e["type"] not in ("value_error",) and not isinstance(given, (dict, list)):
        message += f" (got {given!r})"
    return message
