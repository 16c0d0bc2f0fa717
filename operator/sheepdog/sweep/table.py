"""The comparison table of a sweep, in the paper's shape: one row per cell, one column per
iteration x metric, the best of each column marked, a cell's repeats as mean ± sd.

Pure: it reads cell records only (the `cells` of sweep.json, or of a cluster sweep's status:
{name, group, settings, phase, iterations: [status.iterations records]}), so `sheepdog sweep`
and `sheepdog report SWEEP` print the same table.

Metrics, per iteration: kept (pairs curation kept: no "best", more is not better), train loss
(lower is better) and every evaluation metric (higher is better; IFEval accuracies, judge
scores). Iteration 0 holds the base model's evaluation where the run evaluated M_0.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Optional

from sheepdog.sweep.grid import SEED_FIELD

KEPT, LOSS = "kept", "train loss"


@dataclass(frozen=True)
class Column:
    iteration: int
    metric: str
    better: Optional[str]  # "max", "min" or None (not ranked)

    @property
    def title(self) -> str:
        return f"i{self.iteration} {self.metric}"


@dataclass(frozen=True)
class Value:
    mean: float
    sd: Optional[float]  # None: one value (no repeats)
    n: int


@dataclass
class Table:
    settings: list[str]                 # setting columns (field paths)
    columns: list[Column]
    rows: list[dict[str, Any]]          # {group, settings: {path: value}, phases, runs, values: {Column: Value}}
    best: dict[Column, set[str]]        # column -> the groups marked best

    def is_best(self, group: str, column: Column) -> bool:
        return group in self.best.get(column, set())


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _metrics(record: dict[str, Any]) -> dict[tuple[str, Optional[str]], float]:
    out: dict[tuple[str, Optional[str]], float] = {}
    for key, metric, better in (("kept", KEPT, None), ("trainLoss", LOSS, "min")):
        v = _number(record.get(key))
        if v is not None:
            out[(metric, better)] = v
    for metric, value in sorted((record.get("evaluation") or {}).items()):
        v = _number(value)
        if v is not None:
            out[(metric, "max")] = v
    return out


def _mean_sd(values: list[float]) -> Value:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return Value(mean, None, len(values))
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)  # sample sd of the repeats
    return Value(mean, math.sqrt(var), len(values))


def build_table(cells: list[dict[str, Any]]) -> Table:
    """The table of the cell records, rows in the cells' order (first repeat's position)."""
    groups: dict[str, dict[str, Any]] = {}
    samples: dict[tuple[str, Column], list[float]] = {}
    order: dict[Column, int] = {}
    setting_paths: list[str] = []
    for cell in cells:
        group = cell.get("group") or cell.get("name") or "?"
        settings = {k: v for k, v in (cell.get("settings") or {}).items() if k != SEED_FIELD}
        for path in settings:
            if path not in setting_paths:
                setting_paths.append(path)
        row = groups.setdefault(group, {"group": group, "settings": settings, "phases": [], "runs": 0, "values": {}})
        row["runs"] += 1
        row["phases"].append(cell.get("phase") or "Pending")
        for record in cell.get("iterations") or []:
            it = record.get("iteration")
            if not isinstance(it, int):
                continue
            for (metric, better), v in _metrics(record).items():
                col = Column(it, metric, better)
                order.setdefault(col, len(order))
                samples.setdefault((group, col), []).append(v)
    metric_rank = {KEPT: 0, LOSS: 1}
    columns = sorted(order, key=lambda c: (c.iteration, metric_rank.get(c.metric, 2), c.metric))
    for (group, col), values in samples.items():
        groups[group]["values"][col] = _mean_sd(values)
    best: dict[Column, set[str]] = {}
    for col in columns:
        if col.better is None:
            continue
        have = {g: row["values"][col].mean for g, row in groups.items() if col in row["values"]}
        if len(have) < 2:
            continue  # one value is no comparison
        target = max(have.values()) if col.better == "max" else min(have.values())
        marked = {g for g, v in have.items() if math.isclose(v, target, rel_tol=1e-9, abs_tol=1e-12)}
        if len(marked) < len(have):  # all equal: nothing stands out
            best[col] = marked
    return Table(setting_paths, columns, list(groups.values()), best)


def _fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def cell_text(value: Optional[Value]) -> str:
    if value is None:
        return "-"
    if value.sd is None:
        return _fmt(value.mean)
    return f"{_fmt(value.mean)} ± {_fmt(value.sd)}"


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_setting(v) for v in value) + "]"
    if value is None:
        return "unset"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _status(row: dict[str, Any]) -> str:
    phases = row["phases"]
    if all(p == phases[0] for p in phases):
        return phases[0]
    return ", ".join(f"{phases.count(p)} {p}" for p in dict.fromkeys(phases))


def _grid(table: Table, best_mark: Any) -> tuple[list[str], list[list[str]]]:
    header = ["cell", *table.settings, "runs", "phase", *(c.title for c in table.columns)]
    body = []
    for row in table.rows:
        cells = [row["group"], *(_setting(row["settings"].get(p)) if p in row["settings"] else "-"
                                 for p in table.settings), str(row["runs"]), _status(row)]
        for col in table.columns:
            text = cell_text(row["values"].get(col))
            cells.append(best_mark(text) if table.is_best(row["group"], col) else text)
        body.append(cells)
    return header, body


def format_text(table: Table) -> str:
    """Aligned columns; the best value of a ranked column ends in `*`."""
    header, body = _grid(table, lambda t: f"{t} *")
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i < 3 + len(table.settings) else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in body]
    marked = [c.title for c in table.columns if c in table.best]
    if marked:
        out.append("")
        out.append("* best of the column (kept is not ranked; train loss: lowest; evaluation: highest)")
    return "\n".join(out)


def format_markdown(table: Table) -> str:
    """A GitHub table; the best value of a ranked column in bold."""
    header, body = _grid(table, lambda t: f"**{t}**")
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" if i < 3 + len(table.settings) else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def format_csv(table: Table) -> str:
    """Numbers as numbers: per column its mean, `<column> sd` where a cell has repeats, and a
    last column `best` listing the columns this row is best in."""
    with_sd = {c for c in table.columns if any((r["values"].get(c) or Value(0, None, 1)).sd is not None
                                              for r in table.rows)}
    header = ["cell", *table.settings, "runs", "phase"]
    for c in table.columns:
        header.append(c.title)
        if c in with_sd:
            header.append(f"{c.title} sd")
    header.append("best")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        out = [row["group"], *(_setting(row["settings"][p]) if p in row["settings"] else "" for p in table.settings),
               row["runs"], _status(row)]
        for c in table.columns:
            v = row["values"].get(c)
            out.append("" if v is None else repr(round(v.mean, 6)))
            if c in with_sd:
                out.append("" if v is None or v.sd is None else repr(round(v.sd, 6)))
        out.append(";".join(c.title for c in table.columns if table.is_best(row["group"], c)))
        writer.writerow(out)
    return buf.getvalue()


FORMATS = {"text": format_text, "markdown": format_markdown, "csv": format_csv}
