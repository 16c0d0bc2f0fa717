"""Reading a SelfAlignmentRun file, with errors a user can act on.

Pydantic's own messages name Python field paths and internal union tags; a user edits YAML in
camelCase. So every problem here is rewritten as `<file>:<line>: spec.filter.threshold: must
be between 0 and 10 (got 12)`: the camelCase path, what is allowed, what was given, and the
line where it stands. All problems are reported at once, so one edit fixes them all.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError

from sheepdog.api.overrides import OverrideError, apply_overrides
from sheepdog.api.spec import SelfAlignmentRun

__all__ = ["RunSpecError", "load_run", "load_run_text", "parse_run", "dump_run"]


class RunSpecError(ValueError):
    """A run file that cannot be used. `.problems` holds one line per problem."""

    what = "run"  # "invalid run: ..." (a subclass names its own kind: sheepdog.sweep.grid)

    def __init__(self, problems: list[str], source: Optional[str] = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"{where}invalid {self.what}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{where}invalid {self.what} ({len(self.problems)} problems):\n{lines}"


def load_run(path: Union[str, Path], overrides: Sequence[str] = ()) -> SelfAlignmentRun:
    """The run in `path`, with each `key=value` of `overrides` set (see sheepdog.api.overrides)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunSpecError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunSpecError([f"{path}: cannot read: {err}"]) from None
    return load_run_text(text, source=str(path), overrides=overrides)


def load_run_text(text: str, source: str = "<string>", overrides: Sequence[str] = ()) -> SelfAlignmentRun:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        root_node = yaml.compose(text, Loader=yaml.SafeLoader) if len(documents) == 1 else None
    except yaml.YAMLError as err:
        raise RunSpecError([_yaml_problem(err, source)]) from None
    if len(documents) != 1:
        raise RunSpecError([f"{source}: expected one YAML document with a SelfAlignmentRun, "
                            f"found {len(documents)}"])
    if overrides:
        try:
            document = apply_overrides(documents[0], overrides)
        except OverrideError as err:
            raise RunSpecError(err.problems, source=source) from None
        # A problem with an overridden value would point at the file's line holding the old one;
        # without the node, problems name the path alone.
        return parse_run(document, source=f"{source} with --set", node=None)
    return parse_run(documents[0], source=source, node=root_node)


def parse_run(data: Any, source: str = "<string>", node: Optional[yaml.Node] = None) -> SelfAlignmentRun:
    """Validate already-parsed data; `node` (yaml.compose) lets problems carry line numbers."""
    if not isinstance(data, dict):
        raise RunSpecError([f"{source}: expected a mapping (apiVersion, kind, metadata, spec), "
                            f"got {type(data).__name__}"])
    try:
        return SelfAlignmentRun.model_validate(data)
    except ValidationError as err:
        raise RunSpecError(_problems(err, source, node)) from None


def dump_run(run: SelfAlignmentRun, defaults: bool = True) -> str:
    """The run as YAML in camelCase; `defaults=False` keeps only what the file set."""
    data = run.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=not defaults)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# --- turning pydantic errors into user problems ---------------------------------------------


def _yaml_problem(err: yaml.YAMLError, source: str) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    detail = f"{problem} ({context})" if context else problem
    if mark is not None:
        return f"{source}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {detail}"
    return f"{source}: invalid YAML: {detail}"


def _problems(err: ValidationError, source: str, node: Optional[yaml.Node]) -> list[str]:
    seen: dict[str, list[str]] = {}  # path -> messages, in first-seen order
    lines: dict[str, int] = {}
    for e in err.errors(include_url=False):
        field_loc, field, tags = _split_loc(SelfAlignmentRun, tuple(e["loc"]))
        path = _path(field_loc)
        message = _message(e, field, field_loc, tags)
        if tags:  # a union: each alternative failed; say them together once
            message = f"must be {_union_wording(field)} (got {_show(e['input'])})"
        line = _line_of(node, field_loc, e["type"] == "missing")
        key = f"{source}:{line}: {path}" if line else f"{source}: {path}"
        lines[key] = line or 0
        if message not in seen.setdefault(key, []):
            seen[key].append(message)
    ordered = sorted(seen, key=lambda k: lines[k])  # file order reads best; sort is stable
    return [f"{key}: {m}" for key in ordered for m in seen[key]]


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(e: dict, field: Any, loc: tuple, tags: tuple) -> str:
    kind, ctx, given = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        return f"unknown field (allowed: {', '.join(allowed)}){hint}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        one_of = "one of " if (" or " in expected or "," in expected) else ""
        return f"must be {one_of}{expected} (got {_show(given)})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be {_range_wording(field, ctx)} (got {_show(given)})"
    if kind in ("too_short", "string_too_short") and isinstance(given, str):
        return "must not be empty"
    if kind == "string_pattern_mismatch" and tuple(loc) == ("metadata", "name"):
        return ("must be a DNS label: lowercase letters, digits and '-', starting with a "
                f"letter and ending with a letter or digit (got {_show(given)})")
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters (got {len(given)})"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')} (got {_show(given)})"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", e["msg"])).removeprefix("Value error, ")
    wording = {
        "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
        "float_parsing": "a number", "float_type": "a number",
        "bool_parsing": "true or false", "bool_type": "true or false",
        "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
        "model_type": "a mapping", "model_attributes_type": "a mapping",
    }.get(kind)
    if wording:
        return f"must be {wording} (got {_show(given)})"
    return f"{e['msg']} (got {_show(given)})"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _range_wording(field: Any, ctx: dict) -> str:
    lo = hi = None
    lo_open = hi_open = False
    for m in getattr(field, "metadata", []) or []:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.Lt):
            hi, hi_open = m.lt, True
    if lo is None and hi is None:  # not found on the field: fall back to pydantic's bound
        for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if k in ctx:
                return f"{op} {_num(ctx[k])}"
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"between {_num(lo)} and {_num(hi)}"
        return f"{'>' if lo_open else '>='} {_num(lo)} and {'<' if hi_open else '<='} {_num(hi)}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    return f"{'<' if hi_open else '<='} {_num(hi)}"


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _union_wording(field: Any) -> str:
    names = []
    for arg in typing.get_args(getattr(field, "annotation", None)):
        origin = typing.get_origin(arg) or arg
        names.append({str: "a string", int: "an integer", float: "a number", bool: "true or false",
                      list: "a list of strings" if arg == list[str] else "a list",
                      dict: "a mapping"}.get(origin, getattr(origin, "__name__", str(arg))))
    return " or ".join(names) if names else "of another type"


# --- walking the models along an error location ----------------------------------------------


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _field_by_key(model: type[BaseModel], key: str):
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info
    return None


def _split_loc(model: type[BaseModel], loc: tuple) -> tuple[tuple, Any, tuple]:
    """(user-visible location, FieldInfo of its last field, leftover union tags)."""
    tp: Any = model
    field = None
    for i, part in enumerate(loc):
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = _field_by_key(tp, str(part))
            if info is None:  # an unknown key (extra_forbidden) or a model-level error
                return loc[: i + 1], field, ()
            field, tp = info, info.annotation
            continue
        origin = typing.get_origin(tp)
        if origin in (list, tuple) and isinstance(part, int):
            tp = (typing.get_args(tp) or (Any,))[0]
            continue
        if origin is dict:
            tp = (typing.get_args(tp) or (Any, Any))[-1]
            continue
        if origin in (Union, types.UnionType):
            return loc[:i], field, loc[i:]
        return loc[: i + 1], field, ()
    return loc, field, ()


def _allowed_keys(loc: tuple) -> list[str]:
    tp: Any = SelfAlignmentRun
    for part in loc:
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = _field_by_key(tp, str(part))
            if info is None:
                return []
            tp = info.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
    tp = _unwrap_optional(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _line_of(node: Optional[yaml.Node], loc: Iterable, missing: bool) -> Optional[int]:
    """1-based line of the key at `loc` (for a missing key: of its parent)."""
    if node is None:
        return None
    parts = list(loc)
    if missing:
        parts = parts[:-1]
    line = node.start_mark.line + 1
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
