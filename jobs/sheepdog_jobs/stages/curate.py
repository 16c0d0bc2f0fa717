"""Stage curate (ISHEEP.md stage facts 3, 5): rule filter, then selection by self-assessment.

Reads the synthesize stage's assessments.jsonl (only when its `_SUCCESS` verifies: a
half-written input is never curated) and writes kept.jsonl (what train reads) and
dropped.jsonl (every other pair with the reason it was dropped). No model is needed for
method: score; ppl/density/density-ppl need one and are not implemented yet.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sheepdog.stage_config import StageConfig
from sheepdog_jobs import storage
from sheepdog_jobs.curation import select_by_keep_fraction, select_by_threshold
from sheepdog_jobs.rules import rule_filter_reason
from sheepdog_jobs.stages.common import StageError, layout, mean

INPUT = "assessments.jsonl"
TRAIN_FIELDS = ("id", "instruction", "input", "output", "scores")


def run(config: StageConfig) -> dict:
    spec, f = config.spec, config.spec.filter
    if f.method != "score":
        raise StageError(f"filter.method {f.method!r} is not implemented yet (use method: score)")
    src = Path(layout(config).stage_dir(config.iteration, "synthesize"))
    if storage.verify_manifest(src, None) is None:
        raise StageError(f"{src}: no complete synthesize output (missing or damaged _SUCCESS); "
                         "run synthesize for this iteration first")
    fp = storage.fingerprint(
        {"stage": "curate", "iteration": config.iteration, "filter": f.model_dump(mode="json"),
         "criteria": list(spec.assessment.criteria)},
        [src / INPUT])
    out = Path(config.out_dir)
    done = storage.verify_manifest(out, fp)
    if done is not None:
        return {**done["summary"], "skipped": True}

    try:
        records = storage.read_jsonl(src / INPUT)
    except ValueError as exc:
        raise StageError(str(exc)) from None
    dropped: list[tuple[dict, str]] = []
    candidates = []
    for r in records:
        # Synthesize already skipped judging these; recomputing keeps curate correct for
        # inputs made with rules off (the rule filter is cheap and deterministic).
        reason = (r.get("ruleReason") or rule_filter_reason(r["instruction"], r["input"], r["output"])) \
            if f.rules else None
        if reason:
            dropped.append((r, f"rule_{reason}"))
        else:
            candidates.append(r)
    criteria = list(spec.assessment.criteria)
    if f.keep_fraction is not None:
        kept, score_dropped = select_by_keep_fraction(candidates, criteria, f.keep_fraction)
    else:
        kept, score_dropped = select_by_threshold(candidates, criteria, f.threshold)
    dropped += score_dropped

    out.mkdir(parents=True, exist_ok=True)
    storage.remove_manifest(out)
    storage.write_jsonl(out / "kept.jsonl", ({k: r.get(k) for k in TRAIN_FIELDS} for r in kept))
    storage.write_jsonl(out / "dropped.jsonl",
                        ({**{k: r.get(k) for k in TRAIN_FIELDS}, "reason": why} for r, why in dropped))
    assessed = len(candidates)
    summary = {
        "kept": len(kept),
        "assessed": assessed,
        "keepRate": round(len(kept) / assessed, 4) if assessed else 0.0,
        "dropped": dict(Counter(why for _, why in dropped)),
        "meanQuality": mean(r.get("scores", {}).get("quality") for r in candidates),
        "meanFollowing": mean(r.get("scores", {}).get("following") for r in candidates),
    }
    storage.write_manifest(out, ["kept.jsonl", "dropped.jsonl"], fp,
                           counts={"kept": len(kept), "dropped": len(dropped)}, summary=summary)
    return summary
