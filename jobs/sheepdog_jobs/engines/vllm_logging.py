"""vLLM's logging in the stage programs: WARNING and above, and its per-weight dtype warnings
folded into one line.

vLLM logs at INFO by default (every engine start is dozens of lines). Its CPU build loads a
float32 checkpoint (the quickstart's model) into bfloat16 parameters and warns once per weight
("Attempted to load weight ... with dtype torch.float32 into parameter with dtype
torch.bfloat16"): 90 lines per engine start for the 135M model, 244 of the demo's 425 lines.
The cast is expected, so those records are counted and reported once after the load.
A user's own VLLM_LOGGING_LEVEL wins.
"""

from __future__ import annotations

import logging
import os
import re

# Before vLLM is imported: it reads the level when it configures its logger.
LEVEL_ENV = "VLLM_LOGGING_LEVEL"
_CAST = re.compile(r"Attempted to load weight \S+ with dtype (\S+) into parameter with dtype (\S+)")


def default_level() -> None:
    os.environ.setdefault(LEVEL_ENV, "WARNING")


class WeightCastFilter(logging.Filter):
    """Drops vLLM's per-weight cast warnings, counting them by (from, to) dtype."""

    def __init__(self):
        super().__init__()
        self.casts: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        m = _CAST.search(record.getMessage())
        if m is None:
            return True
        key = (m.group(1), m.group(2))
        self.casts[key] = self.casts.get(key, 0) + 1
        return False

    def summary(self) -> list[str]:
        """One line per cast seen since the last call (then forgotten)."""
        lines = [f"vLLM loaded {n} weights stored as {a} into {b} parameters" for (a, b), n in sorted(self.casts.items())]
        self.casts.clear()
        return lines


# The loggers that warn once per weight (vllm/model_executor/models/utils.py and the sharded
# state loader). vLLM configures its logging again when it builds an engine (dictConfig: new
# handlers), so a filter on its handlers alone is gone by the time the weights load; a filter
# on the emitting logger itself stays (dictConfig leaves existing loggers' filters alone).
EMITTERS = ("vllm.model_executor.models.utils", "vllm.model_executor.model_loader.sharded_state_loader")


def install(root: str = "vllm", emitters: tuple[str, ...] = EMITTERS) -> WeightCastFilter:
    """The filter on the emitting loggers and on the handlers of vLLM's logger, installed once
    per process."""
    targets = [logging.getLogger(name) for name in emitters]
    for target in targets:
        for existing in target.filters:
            if isinstance(existing, WeightCastFilter):
                return existing
    flt = WeightCastFilter()
    for target in [*targets, *logging.getLogger(root).handlers]:
        target.addFilter(flt)
    return flt
