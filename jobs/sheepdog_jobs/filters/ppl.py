"""The PPL filter (paper Table 3; ISHEEP.md stage fact 5).

Drop a pair whose perplexity under the CURRENT model (the generator M_t of this iteration)
exceeds ``filter.pplMax`` (paper: 50). The perplexities are computed elsewhere (glue in
filters/__init__.py, Engine.perplexity) so this selection is a pure function.

Dropped reasons (stable keys, as curation.py's): "high_ppl" (ppl > ppl_max), "unscored_ppl"
(no usable perplexity: None, NaN, a non-number; an infinite perplexity is simply high).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

__all__ = ["select_by_ppl", "usable_ppl"]

Record = dict[str, Any]


def usable_ppl(value: Any) -> Optional[float]:
    """The value as a float perplexity, or None when it cannot be used (None, NaN, bool, text).
    +inf is usable (a pair the model finds impossible is maximally perplexing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if math.isnan(value) or value < 0:
        return None
    return value


def select_by_ppl(records: Sequence[Record], ppl: Sequence[Any], ppl_max: float
                  ) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Keep records with perplexity <= ppl_max; both lists in input order."""
    if len(ppl) != len(records):
        raise ValueError(f"{len(ppl)} perplexities for {len(records)} records")
    if not ppl_max > 0:
        raise ValueError(f"ppl_max must be > 0, got {ppl_max}")
    kept: list[Record] = []
    dropped: list[tuple[Record, str]] = []
    for record, value in zip(records, ppl):
        p = usable_ppl(value)
        if p is None:
            dropped.append((record, "unscored_ppl"))
        elif p > ppl_max:
            dropped.append((record, "high_ppl"))
        else:
            kept.append(record)
    return kept, dropped
