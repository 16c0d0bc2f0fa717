"""Prompt samples: the exact text of the first few prompts of each phase, and who answered.

A reproduction is only as good as the prompts its models saw, and those are assembled from
several settings (response templates per iteration, the chat template, the judge's tail).
So synthesize (phases instructions, responses, assessment:<criterion>) and evaluate
(evaluate:<suite>) write ``prompts.sample.jsonl`` in their stage directory: one JSON object a
line with the keys phase, iteration, model, prompt, output. ``prompt`` is the text after the
engine's chat template (model.chatTemplate), i.e. what was tokenized; ``model`` is the model
directory that answered. `sheepdog status --prompts` prints them
(sheepdog.local.report.prompt_samples reads them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from sheepdog.stage_config import PROMPT_SAMPLES
from sheepdog_jobs import storage

__all__ = ["SAMPLE_FILE", "PER_PHASE", "rendered", "sample_lines", "write_samples", "RecordingEngine"]

SAMPLE_FILE = PROMPT_SAMPLES
PER_PHASE = 3  # enough to see the layout; the files stay small at any dataSize


def rendered(engine, prompt: str) -> str:
    """The prompt as the engine tokenizes it (its chat template applied, if any)."""
    fmt = getattr(engine, "format", None)
    return fmt.render(prompt) if fmt is not None else prompt


def sample_lines(phase: str, iteration: int, model: str, engine, prompts: Sequence[str],
                 outputs: Sequence[Any], limit: int = PER_PHASE) -> list[dict]:
    """Up to ``limit`` sample lines; ``outputs`` are Completions or strings."""
    return [{"phase": phase, "iteration": iteration, "model": model, "prompt": rendered(engine, p),
             "output": getattr(o, "text", o)}
            for p, o in list(zip(prompts, outputs))[:limit]]


def write_samples(directory: Path | str, lines: Iterable[dict]) -> Path:
    path = Path(directory) / SAMPLE_FILE
    storage.write_jsonl(path, lines)
    return path


class RecordingEngine:
    """An engine that keeps the first PER_PHASE prompts and completions of each phase (set
    ``phase`` before a suite runs); everything else is the wrapped engine's."""

    def __init__(self, engine, iteration: int, model: str, limit: int = PER_PHASE):
        self._engine, self._iteration, self._model, self._limit = engine, iteration, model, limit
        self.phase = "evaluate"
        self.lines: list[dict] = []

    def generate(self, prompts, **kwargs):
        outs = self._engine.generate(prompts, **kwargs)
        have = sum(line["phase"] == self.phase for line in self.lines)
        if have < self._limit:
            self.lines += sample_lines(self.phase, self._iteration, self._model, self._engine,
                                       prompts, outs, self._limit - have)
        return outs

    def __getattr__(self, name):
        return getattr(self._engine, name)
