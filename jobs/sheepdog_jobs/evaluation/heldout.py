"""The held-out set: seed-style tasks the run never trains on, answered and judged.

The tasks are a Self-Instruct or flat JSONL file (the seed format, seeds.load_seed_tasks), by
default the small set shipped with sheepdog (data/heldout_small.jsonl, written for the
project and disjoint from the Self-Instruct seeds). The model answers each task zero-shot
with the response prompt of synthesize (prompts.build_response_prompt), greedily; a judge
(judge.SelfJudge or judge.HttpJudge) scores every answer on each criterion.

Metrics (all numbers, for the summary's ``evaluation`` map):
    heldout.meanScore   mean over the scored tasks of the mean of their criterion scores
    heldout.<criterion> mean score of that criterion over the tasks that have one
    heldout.unscored    tasks with at least one criterion unscored (left out of meanScore)
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Sequence

from sheepdog_jobs.evaluation.judge import Judgement, Pair
from sheepdog_jobs.prompts import build_response_prompt
from sheepdog_jobs.seeds import SeedTask, load_seed_tasks

__all__ = ["default_heldout_file", "load_heldout", "response_prompts", "aggregate_heldout",
           "heldout_records"]


def default_heldout_file() -> str:
    return str(resources.files("sheepdog_jobs.data") / "heldout_small.jsonl")


def load_heldout(path: str, limit: int | None = None) -> list[SeedTask]:
    tasks = load_seed_tasks(path)
    return tasks[:limit] if limit is not None else tasks


def response_prompts(tasks: Sequence[SeedTask]) -> list[str]:
    return [build_response_prompt(t.instruction, t.input) for t in tasks]


def aggregate_heldout(judgements: Sequence[dict[str, Judgement]], criteria: Sequence[str]
                      ) -> dict[str, float]:
    """meanScore, one mean per criterion, and the unscored count (see the module doc)."""
    per_task = []
    by_criterion: dict[str, list[float]] = {c: [] for c in criteria}
    unscored = 0
    for j in judgements:
        scores = [j[c].score for c in criteria]
        for c, s in zip(criteria, scores):
            if s is not None:
                by_criterion[c].append(s)
        if any(s is None for s in scores):
            unscored += 1
        else:
            per_task.append(sum(scores) / len(scores))
    out: dict[str, float] = {
        "heldout.meanScore": (sum(per_task) / len(per_task)) if per_task else float("nan"),
        "heldout.unscored": float(unscored),
    }
    for c, values in by_criterion.items():
        out[f"heldout.{c}"] = (sum(values) / len(values)) if values else float("nan")
    return out


def heldout_records(tasks: Sequence[SeedTask], responses: Sequence[str],
                    judgements: Sequence[dict[str, Judgement]]) -> list[dict[str, Any]]:
    """One JSON record per task for heldout.jsonl (answer, scores and the judge's words)."""
    return [{
        "id": t.id, "instruction": t.instruction, "input": t.input, "response": r,
        "scores": {c: j[c].score for c in j}, "judgements": {c: j[c].raw for c in j},
    } for t, r, j in zip(tasks, responses, judgements)]


def pairs_of(tasks: Sequence[SeedTask], responses: Sequence[str]) -> list[Pair]:
    return [Pair(t.instruction, t.input, r) for t, r in zip(tasks, responses)]
