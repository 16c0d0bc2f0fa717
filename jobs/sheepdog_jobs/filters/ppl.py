"""The PPL filter (paper Table 3; ISHEEP.md stage fact 5).

Drop a pair whose perplexity under the CURRENT model (the generator M_t of this iteration)
exceeds ``filter.pplMax`` (paper: 50), and, as the authors' scripts also do, a pair whose
OUTPUT's perplexity (the response text alone) exceeds it. The perplexities are computed
elsewhere (glue in filters/__init__.py, Engine.perplexity) so this selection is a pure function.

Dropped reasons (stable keys, as curation.py's): "high_ppl" (pair ppl > ppl_max),
"high_output_ppl" (the pair passes, its output's ppl > ppl_max), "unscored_ppl" (no usable
perplexity: None, NaN, a non-number; an infinite perplexity is simply high).
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


def select_by_ppl(records: Sequence[Record], ppl: Sequence[Any], ppl_max: float,
                  output_ppl: Optional[Sequence[Any]] = None
                  ) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Keep records whose pair perplexity, and output perplexity when ``output_ppl`` is given,
    are <= ppl_max; both lists in input order."""
    if len(ppl) != len(records):
        raise ValueError(f"{len(ppl)} perplexities for {len(records)} records")
    if output_ppl is None:
        output_ppl = [0.0] * len(records)  # no output check
    elif len(output_ppl) != len(records):
        raise ValueError(f"{len(output_ppl)} output perplexities for {len(records)} records")
    if not ppl_max > 0:
        raise ValueError(f"ppl_max must be > 0, got {ppl_max}")
    kept: list[Record] = []
    dropped: list[tuple[Record, str]] = []
    for record, value, out_value in zip(records, ppl, output_ppl):
        p, o = usable_ppl(value), usable_ppl(out_value)
        if p is None or o is None:
            dropped.append((record, "unscored_ppl"))
        elif p > ppl_max:
            dropped.append((record, "high_ppl"))
        elif o > ppl_max:
            dropped.append((record, "high_output_ppl"))
        else:
            kept.append(record)
    return kept, dropped
