"""Selecting pairs by their self-assessment scores (ISHEEP.md stage fact 5; API filter.*).

Records are dicts ``{"id", "instruction", "input", "output", "scores": {criterion: score}}``
where a score is an int (text judgements), a float (logprob scoring) or None (no parsable
judgement).  Both selectors return ``(kept, dropped)``: ``kept`` in input order, ``dropped``
as ``(record, reason)`` pairs in input order, reasons being stable keys:

* "unscored": a required criterion's score is missing, None, NaN or not a number;
* "low_score": (threshold) some criterion score is <= threshold;
* "below_keep_fraction": (fraction) not among the best fraction.

With ``criteria == []`` (no self-assessment) nothing is dropped by score.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

__all__ = ["select_by_threshold", "select_by_keep_fraction", "record_scores"]

Record = dict[str, Any]


def record_scores(record: Record, criteria: Sequence[str]) -> list[float] | None:
    """The record's scores for ``criteria`` in order, or None if any is unusable."""
    scores = record.get("scores") or {}
    values = []
    for criterion in criteria:
        value = scores.get(criterion)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return None
        values.append(float(value))
    return values


def select_by_threshold(records: Iterable[Record], criteria: Sequence[str], threshold: float
                        ) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Keep records whose every criterion score is > threshold (the paper: C = 8)."""
    kept, dropped = [], []
    for record in records:
        values = record_scores(record, criteria)
        if values is None:
            dropped.append((record, "unscored"))
        elif all(v > threshold for v in values):
            kept.append(record)
        else:
            dropped.append((record, "low_score"))
    return kept, dropped


def select_by_keep_fraction(records: Iterable[Record], criteria: Sequence[str], fraction: float
                            ) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Keep the best ``fraction`` of the scored records by mean score.

    The number kept is ceil(fraction * scored) (so any fraction > 0 keeps at least one of a
    non-empty set); ranking is by mean score descending, ties broken by str(id) ascending, so
    the choice is deterministic whatever the input order.  Unscored records are dropped first
    and do not count in the base.  Meant for uncalibrated small models whose scores never
    pass the paper's threshold."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"keep fraction must be within 0..1, got {fraction}")
    records = list(records)
    if not criteria:
        return records, []
    means: dict[int, float] = {}
    unscored: set[int] = set()
    for i, record in enumerate(records):
        values = record_scores(record, criteria)
        if values is None:
            unscored.add(i)
        else:
            means[i] = sum(values) / len(values)
    keep_count = math.ceil(fraction * len(means) - 1e-9)
    ranked = sorted(means, key=lambda i: (-means[i], str(records[i].get("id"))))
    chosen = set(ranked[:keep_count])
    kept = [r for i, r in enumerate(records) if i in chosen]
    dropped = [(r, "unscored" if i in unscored else "below_keep_fraction")
               for i, r in enumerate(records) if i not in chosen]
    return kept, dropped
