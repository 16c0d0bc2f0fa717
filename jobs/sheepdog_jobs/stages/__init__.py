"""The stage programs. Each module has run(config) -> summary dict (stage-specific keys);
the CLI adds stage, iteration, ok, skipped, seconds and writes it out."""

from __future__ import annotations

import importlib

STAGE_MODULES = {
    "synthesize": "sheepdog_jobs.stages.synthesize",
    "curate": "sheepdog_jobs.stages.curate",
    "train": "sheepdog_jobs.stages.train",
    "evaluate": "sheepdog_jobs.stages.evaluate",
}


def stage_runner(name: str):
    return importlib.import_module(STAGE_MODULES[name]).run
