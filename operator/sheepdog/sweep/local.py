"""`sheepdog sweep SWEEP.yaml --workdir DIR [--parallel N]`: a sweep's cells as local runs.

    DIR/cells/<child>.yaml   each cell's run file (the template with the cell's settings)
    DIR/<child>/             each cell's run workdir (`sheepdog status DIR/<child>` reads it)
    DIR/logs/<child>.log     what `sheepdog run` would have printed for the cell
    DIR/stage-cache/         the stage cache every cell shares (docs/stage-cache.md): a stage
                             two cells have in common (same key) runs once, the others reuse its
                             output (or wait for it, with --parallel); --no-stage-cache: off
    DIR/sweep.json           {"sweep", "phase", "axes", "cells": [...], ...} (records.cell_record)
    DIR/table.{txt,md,csv}   the comparison table; DIR/plot-<axis>.png per axis

Every cell is validated (and its seed and model found) before the first one starts. Cells run
one after another, or N at a time with --parallel N. Running the same command again resumes:
a finished cell is observed as finished, an interrupted one resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import yaml

from sheepdog.local import run_local
from sheepdog.local.inputs import InputError, prepare_local_run
from sheepdog.local.workdir_files import read_json, write_atomically, write_json
from sheepdog.sweep.grid import Cell, axis_label, axis_path, child_run, expand
from sheepdog.sweep.load import load_sweep
from sheepdog.sweep.plot import plot_axes
from sheepdog.sweep.records import cell_record
from sheepdog.sweep.table import FORMATS, build_table

SWEEP_FILE = "sweep.json"
STAGE_CACHE_DIR = "stage-cache"


@dataclass
class SweepResult:
    sweep: str
    workdir: Path
    document: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return 1 if any(c["phase"] == "Failed" for c in self.document["cells"]) else 0


def prepare_cells(sweep_file: Path, workdir: Path) -> tuple[Any, list[Cell]]:
    """The sweep and its cells, each child's seed and model found (as `sheepdog run` looks
    them up: in DIR, then beside the sweep file) and made absolute, since each cell runs in
    its own DIR/<child>. Raises SweepInvalid or InputError, nothing written."""
    sweep = load_sweep(sweep_file)
    cells = expand(sweep)
    problems: list[str] = []
    out = []
    for cell in cells:
        try:
            run, _ = prepare_local_run(child_run(cell), workdir, sweep_file)
        except InputError as err:
            problems += [f"cell {cell.name}: {p}" for p in err.problems]
            continue
        manifest = dict(cell.manifest)
        spec = dict(manifest["spec"])
        for key, value in (("model", run.spec.model.base), ("seed", run.spec.seed.path)):
            if value is None:
                continue
            absolute = value if Path(value).is_absolute() or not (workdir / value).exists() else str((workdir / value).resolve())
            section = "base" if key == "model" else "path"
            spec[key] = {**(spec.get(key) or {}), section: absolute}
        manifest["spec"] = spec
        out.append(Cell(cell.name, cell.group, cell.settings, cell.repeat, cell.run, manifest))
    if problems:
        raise InputError(problems)
    return sweep, out


def sweep_document(sweep: Any, cells: list[Cell], workdir: Path, *, shared: bool) -> dict[str, Any]:
    records = []
    for cell in cells:
        status = read_json(workdir / cell.run / "status.json")
        records.append(cell_record(cell, status if isinstance(status, dict) else None))
    phases = [r["phase"] for r in records]
    phase = ("Failed" if "Failed" in phases else "Succeeded" if all(p == "Succeeded" for p in phases)
             else "Running")
    gpu = [r["gpuSeconds"] for r in records if isinstance(r["gpuSeconds"], (int, float))]
    return {
        "sweep": sweep.metadata.name,
        "phase": phase,
        "axes": [{"field": axis_path(a), "name": axis_label(a), "values": list(a.values)} for a in sweep.spec.axes],
        "repeats": sweep.spec.repeats,
        "stageCache": str(workdir / STAGE_CACHE_DIR) if shared else None,
        "gpuSeconds": sum(gpu) if gpu else None,
        "reusedStages": sum(len(r["reused"]) for r in records),
        "cells": records,
    }


def run_sweep(sweep_file: Path, workdir: Path, *, parallel: int = 1, share: bool = True,
              out: Optional[TextIO] = None, plot: bool = True, stage_module: Optional[str] = None) -> SweepResult:
    """Run (or resume) every cell; write sweep.json, the tables and the plots. Raises
    SweepInvalid / InputError before anything runs."""
    out = out if out is not None else sys.stdout
    sweep_file, workdir = Path(sweep_file), Path(workdir)
    sweep, cells = prepare_cells(sweep_file, workdir)
    shared = share
    (workdir / "cells").mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    for cell in cells:
        write_atomically(workdir / "cells" / f"{cell.run}.yaml", yaml.safe_dump(cell.manifest, sort_keys=False))
    _say(out, f"sweep {sweep.metadata.name}: {len(cells)} run(s), {parallel} at a time"
              + (f", sharing stages through {workdir / STAGE_CACHE_DIR}" if shared else ""))
    lock = threading.Lock()

    def one(cell: Cell) -> None:
        # one cache for every cell (docs/stage-cache.md); None: each cell runs all its stages
        kwargs: dict[str, Any] = {"plot": False, "stage_cache": workdir / STAGE_CACHE_DIR if shared else None}
        if stage_module:
            kwargs["stage_module"] = stage_module
        with lock:
            _say(out, f"[{cell.name}] start: run {cell.run} (log {workdir / 'logs' / (cell.run + '.log')})")
        with open(workdir / "logs" / f"{cell.run}.log", "a", encoding="utf-8") as log:
            try:
                result = run_local(workdir / "cells" / f"{cell.run}.yaml", workdir / cell.run, out=log, **kwargs)
                line = f"{result.status.phase}" + (f": {result.status.message}" if result.status.phase == "Failed" else "")
            except Exception as err:  # noqa: BLE001 - one cell's crash is reported; the others go on
                print(f"error: {type(err).__name__}: {err}", file=log)
                line = f"error: {type(err).__name__}: {err}"
        with lock:
            _say(out, f"[{cell.name}] {line}")

    if parallel <= 1:
        for cell in cells:
            one(cell)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="cell") as pool:
            for future in [pool.submit(one, c) for c in cells]:
                future.result()

    document = sweep_document(sweep, cells, workdir, shared=shared)
    write_json(workdir / SWEEP_FILE, document)
    table = build_table(document["cells"])
    for fmt, ext in (("text", "txt"), ("markdown", "md"), ("csv", "csv")):
        write_atomically(workdir / f"table.{ext}", FORMATS[fmt](table) + ("" if fmt == "csv" else "\n"))
    _say(out, "")
    _say(out, FORMATS["text"](table))
    reused = [(c["name"], r) for c in document["cells"] for r in c["reused"]]
    if reused:
        _say(out, "")
        _say(out, "shared stages: " + "; ".join(f"{name} i{r['iteration']} {r['stage']} from {r['from']}"
                                                  for name, r in reused))
    if plot:
        for path in plot_axes(table, workdir, [axis_path(a) for a in sweep.spec.axes]):
            _say(out, f"plot: {path}")
    _say(out, f"sweep.json: {workdir / SWEEP_FILE}; tables: {workdir}/table.txt, table.md, table.csv")
    return SweepResult(sweep.metadata.name, workdir, document)


def _say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)
