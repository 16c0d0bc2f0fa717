"""A plot per axis of a sweep: each metric of the last iteration against the axis's values
(the paper's Fig. 2a is the threshold axis), one line per combination of the other settings,
error bars where a cell has repeats. Reads the Table only (sheepdog.sweep.table)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sheepdog.sweep.table import Table


def _label(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def axis_figure(table: Table, path: str) -> Any:
    """The matplotlib Figure for one setting path, or None (matplotlib missing, or nothing
    to draw). The caller closes it."""
    rows = [r for r in table.rows if path in r["settings"]]
    last = max((c.iteration for c in table.columns), default=None)
    columns = [c for c in table.columns if c.iteration == last]
    if not rows or not columns:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    xs = list(dict.fromkeys(_label(r["settings"][path]) for r in rows))
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.6), squeeze=False)
    for ax, col in zip(axes[0], columns):
        lines: dict[str, dict[str, Any]] = {}
        for r in rows:
            others = ", ".join(f"{k}={_label(v)}" for k, v in r["settings"].items() if k != path)
            v = r["values"].get(col)
            if v is not None:
                lines.setdefault(others, {})[_label(r["settings"][path])] = v
        for others, points in lines.items():
            at = [x for x in xs if x in points]
            ax.errorbar([xs.index(x) for x in at], [points[x].mean for x in at],
                        yerr=[points[x].sd or 0 for x in at], marker="o", capsize=3, label=others or None)
        ax.set_xticks(range(len(xs)), xs, rotation=20 if max(len(x) for x in xs) > 6 else 0)
        ax.set_xlabel(path)
        ax.set_title(col.title + ("" if col.better is None else f" ({'higher' if col.better == 'max' else 'lower'} is better)"),
                     fontsize=9)
        if any(lines):
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_axes(table: Table, directory: Path, paths: list[str]) -> list[Path]:
    """plot-<axis>.png in `directory` per setting path drawn; the files written."""
    written = []
    for path in paths:
        fig = axis_figure(table, path)
        if fig is None:
            continue
        import matplotlib.pyplot as plt

        out = directory / f"plot-{re.sub(r'[^A-Za-z0-9]+', '-', path).strip('-')}.png"
        directory.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written
