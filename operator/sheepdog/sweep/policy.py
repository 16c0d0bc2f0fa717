"""The operator's decisions for one SelfAlignmentSweep (pure: objects in, a plan out).

    plan_sweep(sweep object, its children as listed, now) -> SweepPlan(creates, status, events)

- The grid is expanded and EVERY child validated before any is created (sheepdog.sweep.grid):
  one invalid cell makes the sweep Invalid, with each bad cell's path and reason in its status
  message, an Invalid condition and a Warning Event; nothing is created.
- maxParallelRuns: at most that many children unfinished at once; the next cells (in grid
  order) are *not created yet* and created as earlier ones finish. Not creating them (rather than
  creating them suspended) keeps a queued cell from holding anything, and from showing as a run
  to people who list runs.
- No duplicates across crashes: a child's name is derived from the cell (stable), it carries
  an ownerReference to the sweep and the sweep's labels, and it is created only when the
  listing of the sweep's children lacks it (the API server refuses a second object of a name,
  so a stale listing cannot duplicate either). Nothing is remembered in memory between
  reconciles: a restarted operator plans from the listing alone.
- A run of a child's name that the sweep does not own is never touched: its cell shows
  NameTaken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sheepdog.api.sweep_status import SweepStatus
from sheepdog.sweep.grid import Cell, SweepInvalid, expand
from sheepdog.sweep.load import parse_sweep
from sheepdog.sweep.records import cell_record, saved_gpu_seconds

FINISHED = ("Succeeded", "Failed")
MAX_MESSAGE = 4096


@dataclass
class SweepPlan:
    creates: list[dict[str, Any]] = field(default_factory=list)   # child manifests, in grid order
    status: dict[str, Any] = field(default_factory=dict)          # the sweep's status, wire form
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def _owned_by(child: dict[str, Any], uid: Optional[str]) -> bool:
    refs = (child.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(r.get("uid") == uid for r in refs)


def _condition(old: dict[str, Any], type_: str, status: str, reason: str, message: str, now: str,
               generation: Optional[int]) -> dict[str, Any]:
    prev = next((c for c in old.get("conditions") or [] if c.get("type") == type_), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status and prev.get("lastTransitionTime") else now
    return {"type": type_, "status": status, "reason": reason, "message": message[:MAX_MESSAGE],
            "lastTransitionTime": since, "observedGeneration": generation}


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """A cell's status entry: per iteration only kept, train loss and evaluation (bounded)."""
    its = []
    for r in record["iterations"]:
        item = {"iteration": r.get("iteration")}
        for key in ("kept", "trainLoss", "evaluation"):
            if r.get(key) is not None:
                item[key] = r[key]
        its.append(item)
    out = {k: record[k] for k in ("name", "group", "run", "settings", "phase", "reason", "gpuSeconds", "reused")
           if record.get(k) is not None}
    out["iterations"] = its
    return out


def plan_sweep(sweep: dict[str, Any], children: list[dict[str, Any]], now: str) -> SweepPlan:
    meta = sweep.get("metadata") or {}
    old = sweep.get("status") or {}
    generation = meta.get("generation")
    uid = meta.get("uid")
    plan = SweepPlan()
    try:
        model = parse_sweep({k: sweep[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in sweep},
                            source=f"SelfAlignmentSweep {meta.get('name')}")
        cells = expand(model, owner={"uid": uid})
    except SweepInvalid as err:
        message = "; ".join(err.problems)
        status = SweepStatus(phase="Invalid", reason="InvalidCell", message=message[:MAX_MESSAGE],
                             observed_generation=generation).to_wire()
        status["conditions"] = [
            _condition(old, "Invalid", "True", "InvalidCell", message, now, generation),
            _condition(old, "Ready", "False", "InvalidCell", "no child run was created", now, generation),
        ]
        if old.get("phase") != "Invalid" or old.get("observedGeneration") != generation or old.get("message") != status["message"]:
            plan.events.append(("Warning", "InvalidSweep", f"refused, no child run created: {message}"))
        plan.status = status
        return plan

    by_name = {(c.get("metadata") or {}).get("name"): c for c in children}
    unfinished = sum(1 for c in cells if c.run in by_name and _owned_by(by_name[c.run], uid)
                     and ((by_name[c.run].get("status") or {}).get("phase") not in FINISHED))
    limit = model.spec.max_parallel_runs
    slots = len(cells) if limit is None else max(0, limit - unfinished)
    if model.spec.suspend:
        slots = 0
    records, statuses = [], {}
    for cell in cells:
        child = by_name.get(cell.run)
        if child is not None and not _owned_by(child, uid):
            rec = cell_record(cell, None, include_stages=False)
            rec["phase"], rec["reason"] = "NameTaken", f"a SelfAlignmentRun {cell.run} exists that this sweep does not own"
        elif child is not None:
            st = child.get("status") or {}
            statuses[cell.run] = st
            rec = cell_record(cell, st or {"phase": "Pending"}, include_stages=False)
        elif slots > 0:
            slots -= 1
            plan.creates.append(cell.manifest)
            plan.events.append(("Normal", "RunCreated", f"created run {cell.run} for cell {cell.name}"))
            # as the next reconcile will see it (a child without status yet): no second write
            rec = cell_record(cell, {"phase": "Pending"}, include_stages=False)
        else:
            rec = cell_record(cell, None, include_stages=False)
            rec["reason"] = "Suspended" if model.spec.suspend else "MaxParallelRuns"
        records.append(rec)

    plan.status = _status(old, records, statuses, generation, now, len(plan.creates))
    was, phase = old.get("phase"), plan.status["phase"]
    if phase != was and phase in FINISHED:
        plan.events.append(("Warning" if phase == "Failed" else "Normal", f"Sweep{phase}", plan.status["message"]))
    return plan


def _status(old: dict[str, Any], records: list[dict[str, Any]], statuses: dict[str, dict[str, Any]],
            generation: Optional[int], now: str, creating: int) -> dict[str, Any]:
    phases = [r["phase"] for r in records]
    total = len(records)
    succeeded, failed = phases.count("Succeeded"), phases.count("Failed")
    created = sum(1 for r in records if r["phase"] not in ("NotCreated", "NameTaken"))
    running = created - succeeded - failed
    blocked = phases.count("NameTaken")
    if succeeded == total:
        phase, reason, message = "Succeeded", "AllRunsSucceeded", f"all {total} runs succeeded"
    elif succeeded + failed + blocked == total:
        phase, reason = "Failed", "RunsFailed"
        message = f"{failed} of {total} runs failed" + (f", {blocked} name(s) taken" if blocked else "")
    elif created == 0 and not creating:
        phase, reason, message = "Pending", "Waiting", "no run created yet"
    else:
        phase, reason = "Running", "RunsRunning"
        message = f"{succeeded} of {total} runs succeeded, {running} running, {total - created} not created yet"
    gpu = [r["gpuSeconds"] for r in records if isinstance(r.get("gpuSeconds"), (int, float))]
    status = SweepStatus(phase=phase, reason=reason, message=message, observed_generation=generation,
                         runs=total, created=created, running=running, succeeded=succeeded, failed=failed,
                         progress=f"{succeeded}/{total}", gpu_seconds=sum(gpu) if gpu else None,
                         saved_gpu_seconds=saved_gpu_seconds(statuses),
                         reused_stages=sum(len(r["reused"]) for r in records)).to_wire()
    status["cells"] = [_compact(r) for r in records]
    status["conditions"] = [_condition(old, "Ready", "True" if phase == "Succeeded" else "False", reason,
                                       message, now, generation)]
    return status


def cells_of_status(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's cell records from a sweep's status (`sheepdog report SWEEP`)."""
    return list(status.get("cells") or [])


__all__ = ["Cell", "SweepPlan", "cells_of_status", "plan_sweep"]
