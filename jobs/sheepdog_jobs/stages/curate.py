"""Stage curate (ISHEEP.md stage facts 3, 5): rule filter, then selection by self-assessment.

Reads the synthesize stage's assessments.jsonl (only when its `_SUCCESS` verifies: a
half-written input is never curated) and writes kept.jsonl (what train reads) and
dropped.jsonl (every other pair with the reason it was dropped). method: score needs no
model; ppl/density/density-ppl (paper Table 3) replace the score selection and ask the
generator of this iteration (the current model) for perplexities / embeddings, through the
pure selection code in sheepdog_jobs.filters.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sheepdog.stage_config import StageConfig
from sheepdog_jobs import storage
from sheepdog_jobs.curation import select_by_keep_fraction, select_by_threshold
from sheepdog_jobs.prompts import response_template
from sheepdog_jobs.rules import clean_output, rule_reason
from sheepdog_jobs.stages.common import StageError, check_model, layout, mean, settings_dump

INPUT = "assessments.jsonl"
TRAIN_FIELDS = ("id", "instruction", "input", "output", "scores")


def run(config: StageConfig) -> dict:
    spec, f = config.spec, config.spec.filter
    if f.method != "score":
        check_model(config.generator_model, "generatorModel")
    sources = _sources(config)
    fp = storage.fingerprint(
        {"stage": "curate", "iteration": config.iteration, "filter": settings_dump(f, ("rule_set",)),
         # "sources" stays so that earlier runs' fingerprints stay valid: there is one source
         # for every shard count (synthesize's shards write one set of files).
         "criteria": list(spec.assessment.criteria), "sources": len(sources),
         **({"model": storage.model_identity(config.generator_model), "maxSamples": spec.training.max_samples,
             "chatTemplate": spec.model.chat_template} if f.method != "score" else {})},
        sources)
    out = Path(config.out_dir)
    done = storage.verify_manifest(out, fp)
    if done is not None:
        return {**done["summary"], "skipped": True}

    records = []
    for src in sources:
        try:
            records += storage.read_jsonl(src)
        except ValueError as exc:
            raise StageError(str(exc)) from None
    dropped: list[tuple[dict, str]] = []
    candidates = []
    for r in records:
        # Synthesize already skipped judging these; recomputing keeps curate correct for
        # inputs made with rules off (the rule filter is cheap and deterministic).
        if f.rules and not r.get("ruleReason"):
            r = {**r, "output": clean_output(f.rule_set, r["output"])}
        reason = (r.get("ruleReason") or rule_reason(f.rule_set, r["instruction"], r["input"], r["output"])) \
            if f.rules else None
        if reason:
            dropped.append((r, f"rule_{reason}"))
        else:
            candidates.append(r)
    criteria = list(spec.assessment.criteria)
    extra = {}
    if f.method != "score":
        kept, score_dropped, extra = _model_filter(config, candidates)
    elif f.keep_fraction is not None:
        kept, score_dropped = select_by_keep_fraction(candidates, criteria, f.keep_fraction)
    else:
        kept, score_dropped = select_by_threshold(candidates, criteria, f.threshold)
    dropped += score_dropped

    out.mkdir(parents=True, exist_ok=True)
    storage.remove_manifest(out)
    storage.write_jsonl(out / "kept.jsonl", (_slim(r) for r in kept))
    storage.write_jsonl(out / "dropped.jsonl", ({**_slim(r), "reason": why} for r, why in dropped))
    assessed = len(candidates)
    summary = {
        "kept": len(kept),
        "assessed": assessed,
        "keepRate": round(len(kept) / assessed, 4) if assessed else 0.0,
        "dropped": dict(Counter(why for _, why in dropped)),
        "meanQuality": mean(r.get("scores", {}).get("quality") for r in candidates),
        "meanFollowing": mean(r.get("scores", {}).get("following") for r in candidates),
        # Which rules were in effect and what they dropped (filter.ruleSet; "off": filter.rules false).
        "ruleSet": f.rule_set if f.rules else "off",
        "ruleDropped": dict(Counter(why[len("rule_"):] for _, why in dropped if why.startswith("rule_"))),
        **extra,
    }
    storage.write_manifest(out, ["kept.jsonl", "dropped.jsonl"], fp,
                           counts={"kept": len(kept), "dropped": len(dropped)}, summary=summary)
    return summary


def _slim(record: dict) -> dict:
    # What train and a reader need; the judgements stay in synthesize's assessments.jsonl.
    notes = tuple(k for k in ("ppl", "outputPpl", "cluster") if k in record)  # set by the model filters
    return {k: record.get(k) for k in TRAIN_FIELDS + notes}


def _model_filter(config: StageConfig, candidates: list[dict]):
    from sheepdog_jobs.engines import create_engine
    from sheepdog_jobs.filters import apply_model_filter, pair_text

    spec, f = config.spec, config.spec.filter
    if not candidates:
        return [], [], {"method": f.method}
    # Embeddings come from transformers either way (vLLM would need a second, pooling
    # instance): for density alone, vLLM would only add its start-up time.
    # On vLLM the model is split over the stage's GPUs (tensor parallel = stages.curate.gpus),
    # as synthesize and evaluate split it: a 72B does not fit one GPU. The transformers engine
    # (density, or engine transformers) loads on one device (docs/gpu-plan.md).
    engine = create_engine("transformers" if f.method == "density" else spec.engine,
                           config.generator_model, spec.model.chat_template, seed=spec.synthesis.random_seed,
                           engine_args=spec.engine_args, tensor_parallel=max(1, spec.stages.curate.gpus))
    try:
        template = response_template(spec.synthesis, config.iteration)  # the prompt the pairs answered
        result = apply_model_filter(f.method, candidates, engine, ppl_max=f.ppl_max, clusters=f.clusters,
                                    keep=spec.training.max_samples, seed=spec.synthesis.random_seed,
                                    text_of=lambda r: pair_text(r, template))
        loads = engine.loads
    finally:
        engine.close()
    return result.kept, result.dropped, {**result.stats, "modelLoads": loads}


def _sources(config: StageConfig) -> list[Path]:
    """assessments.jsonl of synthesize, only when complete. However many shards ran, synthesize
    writes one set of files, already deduplicated globally (ROUGE-L against everything kept
    before, in the global request order): there is nothing to merge here."""
    src = Path(layout(config).stage_dir(config.iteration, "synthesize"))
    if storage.verify_manifest(src, None) is None:
        raise StageError(f"{src}: no complete synthesize output (missing or damaged _SUCCESS); "
                         "run synthesize for this iteration first")
    return [src / INPUT]
