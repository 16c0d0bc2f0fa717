"""A cell's record: what sweep.json and a sweep's status hold per cell, from its child run's
status (status.json locally, the child SelfAlignmentRun's .status on a cluster). Pure."""

from __future__ import annotations

from typing import Any, Optional

from sheepdog.sweep.grid import Cell

# the stage record's key naming the producer whose output a stage reused (the stage cache)
REUSED_FROM = "reusedFrom"


def reused_stages(status: dict[str, Any]) -> list[dict[str, Any]]:
    """[{iteration, stage, from}] for every stage the run took from the stage cache."""
    out = []
    for record in status.get("iterations") or []:
        for stage, rec in (record.get("stages") or {}).items():
            source = (rec or {}).get(REUSED_FROM)
            if source:
                out.append({"iteration": record.get("iteration"), "stage": stage, "from": source})
    return out


def cell_record(cell: Cell, status: Optional[dict[str, Any]], *, include_stages: bool = True) -> dict[str, Any]:
    """{name, group, run, settings, repeat, phase, iterations, reused, gpuSeconds}. Without a
    status (the child does not exist yet) the phase is NotCreated. include_stages=False drops
    the per-stage records from the iterations (a cluster sweep's status stays small)."""
    status = status or {}
    iterations = []
    for record in status.get("iterations") or []:
        rec = dict(record)
        if not include_stages:
            rec.pop("stages", None)
        iterations.append(rec)
    return {
        "name": cell.name,
        "group": cell.group,
        "run": cell.run,
        "settings": dict(cell.settings),
        "repeat": cell.repeat,
        "phase": status.get("phase") or ("NotCreated" if not status else "Pending"),
        "reason": status.get("reason"),
        "iterations": iterations,
        "reused": reused_stages(status),
        "gpuSeconds": status.get("gpuSeconds"),
    }


def producer_of(source: str) -> Optional[tuple[str, int, str]]:
    """(run, iteration, stage) of a cluster reusedFrom `<namespace>/<run>/iteration-<N>/<stage>`;
    None for another form (a local directory)."""
    parts = source.split("/")
    if len(parts) != 4 or not parts[2].startswith("iteration-") or not parts[2][10:].isdigit():
        return None
    return parts[1], int(parts[2][10:]), parts[3]


def saved_gpu_seconds(statuses: dict[str, dict[str, Any]]) -> float:
    """GPU-seconds sharing saved among these runs (name -> status): per stage reused from one
    of them, what the producer's stage cost. A producer outside them is not counted (unknown
    is not claimed)."""
    total = 0.0
    for status in statuses.values():
        for item in reused_stages(status):
            found = producer_of(str(item["from"]))
            if found is None or found[0] not in statuses:
                continue
            run, iteration, stage = found
            for record in statuses[run].get("iterations") or []:
                if record.get("iteration") == iteration:
                    value = ((record.get("stages") or {}).get(stage) or {}).get("gpuSeconds")
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        total += float(value)
    return total
