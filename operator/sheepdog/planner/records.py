"""Iteration records (status.iterations[]) and how a stage's summary fills them.

Summary keys come from the stage contract (docs/design.md); a key that is missing or of the
wrong type leaves its figure unknown (None) rather than failing the run: the figures are a
report, the stage's exit code is what says whether it worked.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import IterationRecord, RunStatus
from sheepdog.planner.lineage_policy import lineage, model_of
from sheepdog.stage_config import Layout

# summary key -> (record field, type)
_FIGURES: dict[str, tuple[tuple[str, str, type], ...]] = {
    "synthesize": (
        ("generated", "generated", int),
        ("assessed", "assessed", int),
        ("parseFailures", "parse_failures", int),
        ("meanQuality", "mean_quality", float),
        ("meanFollowing", "mean_following", float),
    ),
    "curate": (("kept", "kept", int), ("keepRate", "keep_rate", float)),
    "train": (("trainLoss", "train_loss", float),
              # the steady steps' throughput, MFU and the largest rank's peak (training/throughput.py)
              ("tokensPerSecond", "train_tokens_per_second", float), ("mfu", "train_mfu", float),
              ("peakMemoryGiB", "train_peak_memory_gib", float)),
    "evaluate": (),
}


# A stage record keeps what its summary says beyond the iteration's figures, at most this many
# bytes of JSON: status is one etcd object (1.5 MiB at most) and holds up to 100 iterations.
MAX_STAGE_SUMMARY_BYTES = 512
_IDENTITY = ("stage", "iteration", "ok")


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def stage_summary(stage: str, summary: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The part of a stage's summary its stage record keeps: not the figures apply_summary
    copies into the iteration record (no second copy of them), and bounded: the largest values
    go first until the rest fits MAX_STAGE_SUMMARY_BYTES (a `truncated` list names them)."""
    if not summary:
        return None
    copied = {key for key, _, _ in _FIGURES.get(stage, ())} | {"evaluation"}
    kept = {k: v for k, v in summary.items() if k not in copied}
    dropped: list[str] = []
    # what says whose summary this is stays, however many other keys a stage reports
    droppable = [k for k in kept if k not in _IDENTITY]
    while droppable and _size(kept) + _size(dropped) > MAX_STAGE_SUMMARY_BYTES:
        largest = max(droppable, key=lambda k: _size(kept[k]))
        droppable.remove(largest)
        dropped.append(str(largest)[:64])
        del kept[largest]
    if dropped:
        kept["truncated"] = sorted(dropped)
    return kept


def record_for(status: RunStatus, spec: RunSpec, iteration: int, layout: Layout, started_at: str) -> IterationRecord:
    """The record of `iteration`, created (with its lineage) when absent; records stay sorted."""
    existing = status.record(iteration)
    if existing is not None:
        return existing
    if iteration == 0:  # M_0: nothing generates or trains, its model is the base
        record = IterationRecord(iteration=0, model=layout.relative(model_of(spec, 0, layout)),
                                 started_at=started_at)
    else:
        line = lineage(spec, iteration, layout)
        record = IterationRecord(
            iteration=iteration,
            generator_model=layout.relative(line.generator),
            base_model=layout.relative(line.base),
            started_at=started_at,
        )
    status.iterations = sorted([*status.iterations, record], key=lambda r: r.iteration)
    return record


def _number(value: Any, kind: type) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def figures_of(record: IterationRecord, stage: str) -> dict[str, Any]:
    """The summary keys of `stage` that apply_summary copied into `record`, back as summary keys
    (the stage cache hands a finished stage's summary to the runs that reuse it)."""
    out: dict[str, Any] = {key: getattr(record, attr) for key, attr, _ in _FIGURES.get(stage, ())
                           if getattr(record, attr) is not None}
    if stage == "evaluate" and record.evaluation is not None:
        out["evaluation"] = dict(record.evaluation)
    if stage == "train" and record.model:
        out["model"] = record.model
    return out


def copy_figures(source: IterationRecord, target: IterationRecord, stage: str) -> None:
    """The figures `stage` put into `source`, into `target` (the same iteration planned twice)."""
    for _, attr, _ in _FIGURES.get(stage, ()):
        setattr(target, attr, getattr(source, attr))
    if stage == "evaluate":
        target.evaluation = source.evaluation
    if stage == "train":
        target.model = source.model


def apply_summary(record: IterationRecord, stage: str, summary: Optional[dict[str, Any]], layout: Layout) -> None:
    """Copy the figures of a succeeded stage into its iteration's record."""
    if stage == "train":
        # The model's place is fixed by the layout, so it is known even without a summary.
        model = (summary or {}).get("model")
        path = model if isinstance(model, str) and model else layout.model_dir(record.iteration)
        record.model = layout.relative(path)
    if not summary:
        return
    for key, attr, kind in _FIGURES.get(stage, ()):
        setattr(record, attr, _number(summary.get(key), kind))
    if stage == "evaluate":
        raw = summary.get("evaluation")
        if isinstance(raw, dict):
            record.evaluation = {
                str(k): float(v) for k, v in raw.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }


_TRAIN_WORDED = ("tokensPerSecond", "mfu", "peakMemoryGiB")  # described by _train_figures


def _train_figures(summary: dict[str, Any]) -> list[str]:
    parts = []
    tokens = _number(summary.get("tokensPerSecond"), float)
    if tokens is not None:
        parts.append(f"{tokens:.4g} tokens/s")
    mfu = _number(summary.get("mfu"), float)
    if mfu is not None:
        parts.append(f"MFU {mfu:.1%}")
    peak = _number(summary.get("peakMemoryGiB"), float)
    if peak is not None:
        parts.append(f"peak memory {peak:.3g} GiB a rank")
    return parts


def describe_summary(stage: str, summary: Optional[dict[str, Any]]) -> str:
    """'generated 20, assessed 18, ...': the counts a person reads in an event or a log line."""
    if not summary:
        return "figures unknown (no summary)"
    parts = []
    for key, _, kind in _FIGURES.get(stage, ()):
        if key in _TRAIN_WORDED:
            continue
        value = _number(summary.get(key), kind)
        if value is not None:
            label = {"parseFailures": "parse failures", "meanQuality": "mean quality",
                     "meanFollowing": "mean following", "keepRate": "keep rate",
                     "trainLoss": "train loss"}.get(key, key)
            parts.append(f"{label} {value:.3g}" if kind is float else f"{label} {value}")
    if stage == "evaluate" and isinstance(summary.get("evaluation"), dict):
        parts += [f"{k} {v:.3g}" for k, v in summary["evaluation"].items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if stage == "train":  # throughput of the steady steps, MFU and the peak (training/throughput.py)
        parts += _train_figures(summary)
    if summary.get("skipped"):
        parts.append("skipped (already done)")
    return ", ".join(parts) if parts else "no figures"
