"""`--set key=value`: change a run file's settings from the command line without editing it.

A key is a dotted camelCase path into `spec` (`synthesis.dataSize`, `filter.keepFraction`);
`spec.` may be written out, and `metadata.name` reaches the run's name. A list element is
named by its index (`stages.train.tolerations.0.key`). The value is read as YAML, so `40` is an
integer, `0.5` a number, `true` a boolean, `null` unsets, `[a, b]` is a list and anything else a
string.

The path is checked against the spec models before anything is set, so a typo is an error
that names the closest field instead of a value that validation would report elsewhere (or,
under a free-form mapping, silently accept). The value itself is checked by the same
validation as a run file's.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from typing import Any, Sequence, Union

import yaml
from pydantic import BaseModel

from sheepdog.api.spec import SelfAlignmentRun

__all__ = ["OverrideError", "apply_overrides", "parse_override"]


class OverrideError(ValueError):
    """A --set that cannot be applied. `.problems` holds one line per bad --set."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`synthesis.dataSize=40` -> (["spec", "synthesis", "dataSize"], 40)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError([f"--set {text!r}: expected KEY=VALUE, e.g. synthesis.dataSize=40"])
    parts = key.split(".")
    if any(p == "" for p in parts):
        raise OverrideError([f"--set {text!r}: empty segment in the key {key!r}"])
    if parts[0] not in ("spec", "metadata"):
        parts = ["spec", *parts]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise OverrideError([f"--set {text!r}: the value is not valid YAML: {err}"]) from None
    return parts, value


def apply_overrides(document: Any, overrides: Sequence[str]) -> Any:
    """A deep copy of the run `document` (parsed YAML) with every override set, in order (a
    later --set of the same key wins). Raises OverrideError listing every bad --set."""
    if not overrides:
        return document
    if not isinstance(document, dict):
        return document  # parse_run reports the non-mapping document itself
    out = copy.deepcopy(document)
    problems: list[str] = []
    for text in overrides:
        try:
            parts, value = parse_override(text)
            keys = _check_path(parts)
            _set(out, keys, value, text)
        except OverrideError as err:
            problems += err.problems
    if problems:
        raise OverrideError(problems)
    return out


# --- the path against the models -----------------------------------------------------------


def _check_path(parts: list[str]) -> list[Union[str, int]]:
    """The path with every field spelled as the run file spells it (its camelCase alias) and
    list indices as ints; raises OverrideError naming the first segment that does not exist."""
    tp: Any = SelfAlignmentRun
    keys: list[Union[str, int]] = []
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "(top level)"
        tp = _unwrap_optional(tp)
        models = _models_in(tp)
        if models:
            found = None
            for model in models:
                for name, info in model.model_fields.items():
                    if part in (info.alias, name):
                        found = (info.alias or name, info.annotation)
                        break
                if found:
                    break
            if found is None:
                allowed = sorted({info.alias or name for m in models for name, info in m.model_fields.items()})
                guess = difflib.get_close_matches(part, allowed, n=1)
                hint = f"; did you mean {where}.{guess[0]}?" if guess else ""
                raise OverrideError([f"--set {'.'.join(parts)}: {where} has no field {part!r} "
                                     f"(it has: {', '.join(allowed)}){hint}"])
            keys.append(found[0])
            tp = found[1]
            continue
        origin = typing.get_origin(tp)
        if tp is Any or origin is dict or tp is dict:
            keys.append(part)  # a free-form mapping: any key is the user's to choose
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else Any
            continue
        list_type = _list_in(tp)
        if list_type is not None:
            if not part.isdigit():
                raise OverrideError([f"--set {'.'.join(parts)}: {where} is a list; name an element by "
                                     f"its index (got {part!r})"])
            keys.append(int(part))
            args = typing.get_args(list_type)
            tp = args[0] if args else Any
            continue
        raise OverrideError([f"--set {'.'.join(parts)}: {where} is a single value "
                             f"({_type_name(tp)}), it has no field {part!r}"])
    return keys


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap_optional(args[0])
    if typing.get_origin(tp) is typing.Annotated:
        return _unwrap_optional(typing.get_args(tp)[0])
    return tp


def _alternatives(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [_unwrap_optional(a) for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _models_in(tp: Any) -> list[type[BaseModel]]:
    return [a for a in _alternatives(tp) if isinstance(a, type) and issubclass(a, BaseModel)]


def _list_in(tp: Any) -> Any:
    for a in _alternatives(tp):
        if a is list or typing.get_origin(a) in (list, tuple):
            return a
    return None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    return " or ".join(getattr(a, "__name__", str(a)) for a in _alternatives(tp))


# --- setting the value in the document -------------------------------------------------------


def _set(document: dict, keys: list[Union[str, int]], value: Any, text: str) -> None:
    node: Any = document
    for depth, key in enumerate(keys[:-1]):
        nxt = keys[depth + 1]
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                have = len(node) if isinstance(node, list) else 0
                raise OverrideError([f"--set {text}: {_show(keys[:depth])} has {have} element(s); "
                                     f"no index {key}"])
            if node[key] is None:
                node[key] = [] if isinstance(nxt, int) else {}
            node = node[key]
            continue
        if not isinstance(node, dict):
            raise OverrideError([f"--set {text}: {_show(keys[:depth])} in the run file is not a mapping"])
        if node.get(key) is None:  # absent or null: the override creates the section
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    last = keys[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            have = len(node) if isinstance(node, list) else 0
            raise OverrideError([f"--set {text}: {_show(keys[:-1])} has {have} element(s); no index {last}"])
    elif not isinstance(node, dict):
        raise OverrideError([f"--set {text}: {_show(keys[:-1])} in the run file is not a mapping"])
    node[last] = value


def _show(keys: list[Union[str, int]]) -> str:
    return ".".join(str(k) for k in keys) or "(top level)"
