"""The held-out set: seed-style tasks the run never trains on, answered and judged.

The tasks are a Self-Instruct or flat JSONL file (the seed format, seeds.load_seed_tasks), by
default the small set shipped with sheepdog (data/heldout_small.jsonl, written for the
project and disjoint from the Self-Instruct seeds and the quickstart seeds). A held-out task
must not be one of the run's seeds (check_disjoint, run by synthesize and evaluate) nor one of
the pairs any iteration so far kept for training (check_disjoint_from_kept, run by evaluate:
a model trained on a held-out task would be scored on recall); either fails the stage. The model answers each task zero-shot with the run's response prompt
(prompts.build_response_prompt, synthesis.responsePrompt), greedily; a judge
(judge.SelfJudge or judge.HttpJudge) scores every answer on each criterion.

Metrics (all numbers, for the summary's ``evaluation`` map):
    heldout.meanScore   mean over the scored tasks of the mean of their criterion scores
    heldout.<criterion> mean score of that criterion over the tasks that have one
    heldout.unscored    tasks with at least one criterion unscored (left out of meanScore)
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any, Optional, Sequence

from sheepdog_jobs import storage
from sheepdog_jobs.evaluation.judge import Judgement, Pair
from sheepdog_jobs.prompts import build_response_prompt
from sheepdog_jobs.rouge import FastDedup
from sheepdog_jobs.seeds import SeedTask, load_seed_tasks

__all__ = ["default_heldout_file", "heldout_file", "load_heldout", "response_prompts", "aggregate_heldout",
           "heldout_records", "overlaps", "check_disjoint", "check_disjoint_from_kept", "load_kept",
           "HeldoutOverlap"]


class HeldoutOverlap(ValueError):
    """The held-out set shares tasks with the run's seeds or its training pairs: its scores
    would measure recall."""


def default_heldout_file() -> str:
    return str(resources.files("sheepdog_jobs.data") / "heldout_small.jsonl")


def heldout_file(spec, root: str) -> Optional[str]:
    """The held-out file a run evaluates on (absolute), or None when it runs no heldout suite."""
    ev = spec.evaluation
    if not ev.enabled or "heldout" not in ev.suites:
        return None
    if ev.heldout_file is None:
        return default_heldout_file()
    return ev.heldout_file if os.path.isabs(ev.heldout_file) else os.path.join(root, ev.heldout_file)


def overlaps(tasks: Sequence[SeedTask], seeds: Sequence[SeedTask], threshold: float,
             what: str = "seed") -> list[str]:
    """One line per held-out task that is one of ``seeds`` (the run's seeds, or ``what`` else:
    kept training pairs): its instruction's ROUGE-L F1 against one of their instructions
    exceeds ``threshold`` (the run's synthesis.rougeLMax, the very test that calls two
    instructions the same task), or its non-empty input is one of theirs."""
    dedup = FastDedup([s.instruction for s in seeds], threshold=threshold)
    inputs = {s.input.strip(): s.id for s in seeds if s.input.strip()}
    found = []
    for t in tasks:
        similarity = dedup.max_similarity(t.instruction)
        if similarity > threshold:
            found.append(f"{t.id}: instruction {t.instruction!r} matches a {what} (ROUGE-L {similarity:.2f})")
        elif t.input.strip() in inputs:
            found.append(f"{t.id}: the same input as {what} {inputs[t.input.strip()]}")
    return found


def check_disjoint(heldout_path: str, seed_path: str, threshold: float) -> None:
    """Raise HeldoutOverlap naming every held-out task that is one of the seeds."""
    found = overlaps(load_seed_tasks(heldout_path), load_seed_tasks(seed_path), threshold)
    if found:
        raise HeldoutOverlap(
            f"the held-out set {heldout_path} shares {len(found)} task(s) with the seeds {seed_path}, "
            "so its scores would reward remembering them; use other tasks (evaluation.heldoutFile) "
            "or other seeds: " + "; ".join(found[:5]) + (" ..." if len(found) > 5 else ""))


def load_kept(path: str | os.PathLike) -> list[SeedTask]:
    """The pairs of a curate stage's kept.jsonl (what train read), as tasks."""
    return [SeedTask(str(r.get("instruction", "")), str(r.get("input", "") or ""), str(r.get("output", "")),
                     f"{os.fspath(path)}#{r.get('id', n)}")
            for n, r in enumerate(storage.iter_jsonl(path), start=1)]


def check_disjoint_from_kept(heldout_path: str, kept_paths: Sequence[str], threshold: float) -> None:
    """Raise HeldoutOverlap naming every held-out task that is one of the kept training pairs
    of ``kept_paths`` (every iteration's curate/kept.jsonl up to the evaluated one)."""
    if not kept_paths:
        return
    kept = [t for path in kept_paths for t in load_kept(path)]
    found = overlaps(load_seed_tasks(heldout_path), kept, threshold, what="kept training pair")
    if found:
        raise HeldoutOverlap(
            f"the held-out set {heldout_path} shares {len(found)} task(s) with the training pairs "
            f"kept so far ({', '.join(kept_paths)}), so its scores would reward remembering them; "
            "evaluate on other tasks (evaluation.heldoutFile, or leave heldout out of "
            "evaluation.suites): " + "; ".join(found[:5]) + (" ..." if len(found) > 5 else ""))


def load_heldout(path: str, limit: int | None = None) -> list[SeedTask]:
    tasks = load_seed_tasks(path)
    return tasks[:limit] if limit is not None else tasks


def response_prompts(tasks: Sequence[SeedTask], template: str | None = None) -> list[str]:
    """The prompts the model was trained on (synthesis.responsePrompt), one per task."""
    return [build_response_prompt(t.instruction, t.input, template) for t in tasks]


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
