"""Stage evaluate: not implemented yet (IFEval and friends are a separate issue).

It fails clearly, as an expected error, so a run with evaluation.enabled: true stops with a
readable reason instead of a traceback."""

from __future__ import annotations

from sheepdog.stage_config import StageConfig
from sheepdog_jobs.stages.common import StageError


def run(config: StageConfig) -> dict:
    raise StageError("the evaluate stage is not implemented yet; set evaluation.enabled: false")
