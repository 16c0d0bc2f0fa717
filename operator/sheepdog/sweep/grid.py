"""A sweep's grid: its cells, their child runs' names and manifests, every child validated.

Pure: no files, no API server. Both the operator (sheepdog.sweep.policy) and `sheepdog sweep`
build the children here, so a cell's run is the same object on a laptop and on a cluster.

Order: named cells (in the file's order), each crossed with the axes (first axis slowest),
each crossed with the repeats. A cell's name is `<cell>` for a named cell, `<axis>-<value>`
per axis (joined by `-`), and `-s<r>` for repeat r when repeats > 1; `group` is the same name
without the repeat: the table's row. A child run is named `<sweep>-<cell>`; when that is not
a valid run name (too long, or two cells would collide) it becomes a prefix of it plus a hash
of the whole, so the name is stable across reconciles and operator restarts: the operator
creates a child only if no run of its name exists, and never a duplicate.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from sheepdog.api.load import RunSpecError, parse_run
from sheepdog.api.overrides import OverrideError, apply_overrides
from sheepdog.api.spec import GROUP, KIND, VERSION, SelfAlignmentRun
from sheepdog.api.sweep_spec import SWEEP_KIND, SelfAlignmentSweep

MAX_RUN_NAME = 40  # sheepdog.api.spec.Metadata: a run's name
SEED_FIELD = "synthesis.randomSeed"
LABEL_SWEEP = f"{GROUP}/sweep"   # on every child: which sweep made it
LABEL_CELL = f"{GROUP}/sweep-cell"  # ... and for which cell
_RUN_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Cell:
    name: str                 # unique in the sweep: group plus -s<r> for a repeat
    group: str                # the table row: the cell without its repeat
    settings: dict[str, Any]  # field path -> value, as the cell sets them (seed included)
    repeat: int
    run: str = ""             # the child run's name
    manifest: dict[str, Any] = field(default_factory=dict, compare=False)


class SweepInvalid(RunSpecError):
    """A sweep whose grid cannot be run: `.problems`, one line per bad cell or field."""

    what = "sweep"


def slug(value: Any) -> str:
    """A value as a DNS-label fragment: -1 -> m1, 0.5 -> 0-5, [quality, following] ->
    quality-following, [] -> none, one_base -> one-base."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "-".join(slug(v) for v in value) or "none"
    if isinstance(value, dict):
        return "-".join(f"{slug(k)}-{slug(v)}" for k, v in value.items()) or "none"
    if value is None:
        return "unset"
    text = str(value).lower()
    if isinstance(value, (int, float)) and text.startswith("-"):
        text = "m" + text[1:]
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text or "x"


def axis_label(axis: Any) -> str:
    """The axis's name, else its path's last segment in kebab case (keepFraction -> keep-fraction)."""
    if axis.name:
        return axis.name
    last = axis.field.split(".")[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", last).lower()


def axis_path(axis: Any) -> str:
    return axis.field.removeprefix("spec.")


def child_name(sweep: str, cell: str, taken: frozenset[str] = frozenset()) -> str:
    """`<sweep>-<cell>`, or when that is no valid run name (or is in `taken`), its first 31
    characters and an 8-hex hash of the whole: stable for the same sweep and cell."""
    name = f"{sweep}-{cell}"
    if len(name) <= MAX_RUN_NAME and _RUN_NAME.match(name) and name not in taken:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = re.sub(r"[^-a-z0-9]", "-", name.lower())[: MAX_RUN_NAME - 9].rstrip("-")
    if not head or not head[0].isalpha():
        head = "s" + head[: MAX_RUN_NAME - 10]
    return f"{head}-{digest}"


def cells_of(sweep: SelfAlignmentSweep) -> list[Cell]:
    """Every cell of the grid, in order, with its settings (no child manifests yet)."""
    spec = sweep.spec
    named = [(c.name, dict(c.settings)) for c in spec.cells] or [("", {})]
    axes = [[(axis_label(a), axis_path(a), v) for v in a.values] for a in spec.axes]
    seed0 = spec.template.synthesis.random_seed
    out: list[Cell] = []
    for (cell_name, cell_settings), combo in itertools.product(named, itertools.product(*axes)):
        parts = [cell_name] if cell_name else []
        settings = dict(cell_settings)
        for label, path, value in combo:
            parts.append(f"{label}-{slug(value)}")
            settings[path] = value
        group = "-".join(parts)
        for r in range(spec.repeats):
            s = dict(settings)
            name = group
            if spec.repeats > 1:
                s[SEED_FIELD] = seed0 + r
                name = f"{group}-s{r}"
            out.append(Cell(name=name, group=group, settings=s, repeat=r))
    return _distinct(out)


def _distinct(cells: list[Cell]) -> list[Cell]:
    """Two values with the same slug ("Say" and "say", 0.5 and "0.5") would name two cells
    alike: each such group gets a hash of its settings, so names stay unique and stable."""
    groups = [c.group for c in cells if c.repeat == 0]
    clash = {g for g in groups if groups.count(g) > 1}
    if not clash:
        return cells
    out = []
    for c in cells:
        if c.group not in clash:
            out.append(c)
            continue
        own = {k: v for k, v in c.settings.items() if k != SEED_FIELD}
        group = f"{c.group}-{hashlib.sha256(json.dumps(own, sort_keys=True).encode()).hexdigest()[:6]}"
        name = group + c.name[len(c.group):]
        out.append(Cell(name=name, group=group, settings=c.settings, repeat=c.repeat))
    return out


def _override(path: str, value: Any) -> str:
    # JSON is YAML: the override parser reads the value back exactly (lists, null, -1)
    return f"{path}={json.dumps(value)}"


def _template_document(sweep: SelfAlignmentSweep) -> dict[str, Any]:
    # what the file (or the API server) holds: set fields only, so a child reads like a run file
    return sweep.spec.template.model_dump(mode="json", by_alias=True, exclude_unset=True)


def child_manifest(sweep: SelfAlignmentSweep, cell: Cell, run_name: str,
                   owner: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The child SelfAlignmentRun of `cell` (raises OverrideError for a path the run has not).
    `owner`: the sweep's {uid} on a cluster, for the child's ownerReference."""
    meta: dict[str, Any] = {"name": run_name, "labels": {LABEL_SWEEP: sweep.metadata.name, LABEL_CELL: cell.name}}
    if sweep.metadata.namespace:
        meta["namespace"] = sweep.metadata.namespace
    # annotations of the sweep reach its children (a test's pod pass-through, a team's notes)
    annotations = (sweep.metadata.model_extra or {}).get("annotations")
    if isinstance(annotations, dict):
        meta["annotations"] = {k: v for k, v in annotations.items()
                               if not k.startswith("kubectl.kubernetes.io/")}
    if owner and owner.get("uid"):
        # no blockOwnerDeletion, as for a run's Jobs (sheepdog.kube.jobs.owner_reference)
        meta["ownerReferences"] = [{
            "apiVersion": f"{GROUP}/{VERSION}", "kind": SWEEP_KIND, "name": sweep.metadata.name,
            "uid": owner["uid"], "controller": True,
        }]
    document = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta,
                "spec": copy.deepcopy(_template_document(sweep))}
    overrides = [_override(path, value) for path, value in cell.settings.items()]
    return apply_overrides(document, overrides)


def check_paths(sweep: SelfAlignmentSweep) -> list[str]:
    """A problem per axis or cell setting whose path the run spec has not (a typo), or that
    reaches outside spec."""
    problems = []
    where = [(f"spec.axes[{i}].field", axis_path(a)) for i, a in enumerate(sweep.spec.axes)]
    where += [(f"spec.cells[{i}] ({c.name}).settings", p.removeprefix("spec."))
              for i, c in enumerate(sweep.spec.cells) for p in c.settings]
    for at, path in where:
        if path.startswith("metadata.") or path == "metadata":
            problems.append(f"{at}: {path}: a sweep sets fields of the run spec only")
            continue
        try:
            apply_overrides({"spec": {}}, [f"{path}=null"])
        except OverrideError as err:
            problems += [f"{at}: {p.removeprefix('--set ')}" for p in err.problems]
    return problems


def expand(sweep: SelfAlignmentSweep, owner: Optional[dict[str, Any]] = None) -> list[Cell]:
    """Every cell with its child run's name and manifest, each child validated as a run file
    is. Raises SweepInvalid naming every bad cell (its settings and the run's reason) before
    anything is created: one invalid cell refuses the whole sweep."""
    problems = check_paths(sweep)
    if problems:
        raise SweepInvalid(problems)
    cells = cells_of(sweep)
    names = _child_names(sweep.metadata.name, [c.name for c in cells])
    out: list[Cell] = []
    sub_paths: dict[str, str] = {}
    for cell, run_name in zip(cells, names):
        label = f"cell {cell.name} ({_show_settings(cell.settings)})"
        try:
            manifest = child_manifest(sweep, cell, run_name, owner)
            run = parse_run(manifest, source=label)
        except OverrideError as err:
            problems += [f"{label}: {p.removeprefix('--set ')}" for p in err.problems]
            continue
        except RunSpecError as err:
            problems += [f"{label}: {p.removeprefix(label + ': ')}" for p in err.problems]
            continue
        sub = run.spec.storage.sub_path
        if sub:  # an explicit run directory shared by two children would mix their iterations
            if sub in sub_paths:
                problems.append(f"{label}: storage.subPath {sub!r} is also cell {sub_paths[sub]}'s: each "
                                "child needs its own run directory (leave subPath unset: runs/<child>)")
            sub_paths[sub] = cell.name
        out.append(Cell(cell.name, cell.group, cell.settings, cell.repeat, run_name, manifest))
    if problems:
        raise SweepInvalid(problems)
    return out


def _child_names(sweep: str, cells: list[str]) -> list[str]:
    plain = [f"{sweep}-{c}" for c in cells]
    # a collision (two values with the same slug, 0.5 and "0.5") hashes every name involved
    clash = frozenset(n for n in plain if plain.count(n) > 1)
    return [child_name(sweep, c, clash) for c in cells]


def _show_settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in settings.items()) or "the template"


def child_run(cell: Cell) -> SelfAlignmentRun:
    return parse_run(cell.manifest, source=f"cell {cell.name}")
