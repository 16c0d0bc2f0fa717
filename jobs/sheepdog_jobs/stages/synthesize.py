"""Stage synthesize (ISHEEP.md stage facts 1, 2, 4): instructions -> responses -> self-assessment.

One model load serves all three phases (the reference loaded vLLM three times). Each phase
ends with an atomic JSONL file and a `_SUCCESS.<phase>` manifest whose fingerprint chains the
previous phase's output checksum, so a restarted pod resumes at the phase it stopped in and
a changed setting recomputes only the phases it affects (assessment settings do not redo
generation). The engine is not part of any fingerprint: vLLM and transformers run the same
prompts and sampling, and a node that falls back from one to the other should not discard
finished work.

assessments.jsonl holds every pair. With filter.rules on, pairs the rule filter drops are
not judged (the paper filters by rules BEFORE assessment); they carry `ruleReason` and no
scores, and curate drops them for that reason. "assessed" counts the judged pairs, the pairs
that enter the score filter (the base of keepRate, as in the reference log "5,875 pairs
entered the score filter, 3,037 kept").

Sharded (StageConfig.shard.count > 1, an Indexed Job; the index comes from the config or
JOB_COMPLETION_INDEX): shard k writes the same files under <outDir>/shard-k, generating its
share of dataSize (and of maxRequests) with request seeds that include k; curate merges.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path

from sheepdog.stage_config import StageConfig
from sheepdog_jobs import storage
from sheepdog_jobs.engines import Engine, create_engine, resolve_engine
from sheepdog_jobs.parsing import extract_score, parse_generated_instructions
from sheepdog_jobs.prompts import build_assessment_prompt, build_instruction_request, build_response_prompt
from sheepdog_jobs.rouge import FastDedup
from sheepdog_jobs.rules import rule_filter_reason
from sheepdog_jobs.scores import logprob_score
from sheepdog_jobs.seeds import load_seed_tasks
from sheepdog_jobs.stages.common import (StageError, check_file, check_model, check_not_adapter, derive_seed,
                                         log, mean, progress, shard_of)

PHASES = ("instructions", "responses", "assessments")
TASKS_PER_REQUEST = 20  # the Alpaca meta prompt asks for 20 tasks (5 shown + 15 new)
# Requests per engine call: big batches keep a GPU busy; on CPU a batch is minutes of work
# and overshooting dataSize wastes it.
BATCH = {"vllm": 256, "transformers": 8}
CHUNK = {"vllm": 512, "transformers": 16}  # prompts per call in phases B and C (progress granularity)


def shard_dir(index: int) -> str:
    return f"shard-{index}"


def share(total: int, index: int, count: int) -> int:
    """Shard index's part of total: the parts differ by at most one and sum to total."""
    return total // count + (1 if index < total % count else 0)


def phase_file(phase: str) -> str:
    return f"{phase}.jsonl"


def phase_manifest(phase: str) -> str:
    return f"{storage.MANIFEST}.{phase}"


class Synthesis:
    def __init__(self, config: StageConfig):
        self.config = config
        self.spec = config.spec
        self.out = Path(config.out_dir)
        self.engine_name = resolve_engine(self.spec.engine)
        self.engine: Engine | None = None
        self.reused: list[str] = []

    # ---- inputs, checked before anything is loaded or written --------------------------------
    def validate(self) -> None:
        shard, count = shard_of(self.config)
        self.shard, self.count = shard, count
        if count > 1:
            # Indexed Job: pod k writes <outDir>/shard-k with its share of dataSize, drawn with
            # its own request seeds. Each shard dedups against the seeds and itself; curate
            # merges the shards and removes near-duplicates across them.
            self.out = Path(self.config.out_dir) / shard_dir(shard)
        check_file(self.config.seed_file, "seedFile")
        self.seeds = load_seed_tasks(self.config.seed_file)
        k = self.spec.seed.examples_per_request
        if k >= TASKS_PER_REQUEST:
            raise StageError(f"seed.examplesPerRequest={k} must be below {TASKS_PER_REQUEST}")
        check_model(self.config.generator_model, "generatorModel")
        check_not_adapter(self.config.generator_model, "generatorModel")
        if self.config.data_size < 1:
            raise StageError(f"dataSize must be >= 1, got {self.config.data_size}")
        s, a = self.spec.synthesis, self.spec.assessment
        base = {
            "stage": "synthesize", "iteration": self.config.iteration, "dataSize": self.config.data_size,
            "shard": [shard, count], "generator": storage.model_identity(self.config.generator_model),
            "chatTemplate": self.spec.model.chat_template,
            "examplesPerRequest": k, "synthesis": s.model_dump(mode="json"),
        }
        self.fp = {"instructions": storage.fingerprint(base, [self.config.seed_file])}
        self.settings = {
            "responses": {},
            "assessments": {"assessment": a.model_dump(mode="json"), "rules": self.spec.filter.rules},
        }

    def phase_fp(self, phase: str) -> str:
        i = PHASES.index(phase)
        if i == 0:
            return self.fp[phase]
        prev = PHASES[i - 1]
        return storage.fingerprint({"phase": phase, "prev": self.phase_fp(prev), **self.settings[phase]},
                                   [self.out / phase_file(prev)])

    # ---- engine: loaded on first use, at most once -------------------------------------------
    def get_engine(self) -> Engine:
        if self.engine is None:
            log.info("loading %s with engine %s", self.config.generator_model, self.engine_name)
            started = time.monotonic()
            self.engine = create_engine(
                self.engine_name, self.config.generator_model, self.spec.model.chat_template,
                seed=self.spec.synthesis.random_seed,
                tensor_parallel=self.spec.stages.synthesize.tensor_parallel,
            )
            # Imports included: that is what a stage start costs.
            self.engine.load_seconds = time.monotonic() - started
            log.info("model loaded in %.1f s", self.engine.load_seconds)
        return self.engine

    # ---- phase A: instructions ---------------------------------------------------------------
    def instructions(self) -> tuple[list[dict], dict]:
        s = self.spec.synthesis
        it = self.config.iteration
        target = share(self.config.data_size, self.shard, self.count)
        max_requests = max(1, math.ceil((s.max_requests or self.config.data_size) / self.count))
        prefix = f"i{it}-" if self.count == 1 else f"i{it}-s{self.shard}-"  # ids unique across shards
        k = min(self.spec.seed.examples_per_request, len(self.seeds))
        dedup = FastDedup([t.instruction for t in self.seeds], threshold=s.rouge_l_max)
        kept: list[dict] = []
        dropped: Counter = Counter()
        made = 0
        bar = progress(total=target, desc="instructions", unit="instr")
        engine = self.get_engine()
        while len(kept) < target and made < max_requests:
            # Size the next batch from the yield so far, so we stop close to dataSize.
            rate = len(kept) / made if made and kept else 1.0
            n = max(1, math.ceil((target - len(kept)) / max(rate, 0.2)))
            n = min(n, BATCH[engine.name], max_requests - made)
            indices = range(made, made + n)
            prompts, seeds = [], []
            for r in indices:
                rng = random.Random(derive_seed(s.random_seed, it, self.shard, "examples", r))
                # No Output sections, as the I-SHEEP scripts: responses are generated zero-shot
                # in phase B, and examples' outputs would cost tokens and invite long items.
                prompts.append(build_instruction_request(rng.sample(self.seeds, k), num_tasks=TASKS_PER_REQUEST,
                                                         include_output=False))
                seeds.append(derive_seed(s.random_seed, it, self.shard, "request", r))
            outs = engine.generate(prompts, temperature=s.temperature, top_p=s.top_p,
                                   max_tokens=s.max_tokens, seed=seeds)
            made += n
            for r, out in zip(indices, outs):  # request order: the result is deterministic
                batch = parse_generated_instructions(out.text, first_index=k + 1,
                                                     truncated=out.finish_reason == "length")
                dropped.update(batch.dropped)
                for task in batch.tasks:
                    if len(kept) >= target:
                        dropped["over_target"] += 1
                    elif dedup.add_if_novel(task.instruction):
                        kept.append({"id": f"{prefix}{len(kept):06d}", "instruction": task.instruction,
                                     "input": task.input, "request": r})
                        bar.update(1)
                    else:
                        dropped["rouge_similar"] += 1
        bar.close()
        if not kept:
            raise StageError(f"no instruction survived parsing and filtering after {made} requests "
                             f"(drops: {dict(dropped)}); raise synthesis.maxRequests or check the model")
        if len(kept) < target:
            log.warning("kept %d of %d instructions after maxRequests=%d", len(kept), target, max_requests)
        return kept, {"requests": made, "dropped": dict(dropped)}

    # ---- phase B: zero-shot responses --------------------------------------------------------
    def responses(self, records: list[dict]) -> tuple[list[dict], dict]:
        s, it = self.spec.synthesis, self.config.iteration
        engine = self.get_engine()
        out_records, bar, step = [], progress(total=len(records), desc="responses", unit="resp"), CHUNK[engine.name]
        for i in range(0, len(records), step):
            chunk = records[i:i + step]
            outs = engine.generate(
                [build_response_prompt(r["instruction"], r["input"]) for r in chunk],
                temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                seed=[derive_seed(s.random_seed, it, "response", r["id"]) for r in chunk])
            for r, o in zip(chunk, outs):
                out_records.append({**r, "output": o.text, "finishReason": o.finish_reason,
                                    "outputTokens": o.num_tokens})
            bar.update(len(chunk))
        bar.close()
        truncated = sum(r["finishReason"] == "length" for r in out_records)
        return out_records, {"truncatedResponses": truncated}

    # ---- phase C: self-assessment ------------------------------------------------------------
    def assessments(self, records: list[dict]) -> tuple[list[dict], dict]:
        a, it = self.spec.assessment, self.config.iteration
        out = []
        for r in records:
            reason = rule_filter_reason(r["instruction"], r["input"], r["output"]) if self.spec.filter.rules else None
            out.append({**r, "ruleReason": reason, "scores": {}})
        todo = [r for r in out if r["ruleReason"] is None]
        failures = 0
        if a.criteria and todo:
            engine = self.get_engine()
            jobs = [(r, c) for r in todo for c in a.criteria]
            bar, step = progress(total=len(jobs), desc="assessments", unit="judge"), CHUNK[engine.name]
            for i in range(0, len(jobs), step):
                chunk = jobs[i:i + step]
                prompts = [build_assessment_prompt(a.prompt, c, r["instruction"], r["input"], r["output"],
                                                   rubric_first=a.rubric_first) for r, c in chunk]
                if a.scoring == "text":
                    outs = engine.generate(prompts, temperature=a.temperature, top_p=self.spec.synthesis.top_p,
                                           max_tokens=a.max_tokens,
                                           seed=[derive_seed(self.spec.synthesis.random_seed, it, "assess", c, r["id"])
                                                 for r, c in chunk])
                    for (r, c), o in zip(chunk, outs):
                        score = extract_score(o.text)
                        r["scores"][c] = score
                        r.setdefault("judgements", {})[c] = o.text  # kept raw, parsable or not
                        failures += score is None
                else:
                    for (r, c), lps in zip(chunk, engine.score_digits(prompts)):
                        expected, argmax, mass = logprob_score(lps)
                        r["scores"][c] = None if expected is None else round(expected, 4)
                        r.setdefault("scoreDetail", {})[c] = {
                            "argmax": argmax, "mass": round(mass, 6),
                            # -inf (a probability of exactly 0) is not JSON: stored as None.
                            "logprobs": {d: (round(v, 4) if v > -1e30 else None) for d, v in lps.items()},
                        }
                        failures += expected is None
                bar.update(len(chunk))
            bar.close()
        counts = {
            "assessed": len(todo),
            "parseFailures": failures,
            "ruleDropped": dict(Counter(r["ruleReason"] for r in out if r["ruleReason"])),
            "meanQuality": mean(r["scores"].get("quality") for r in todo),
            "meanFollowing": mean(r["scores"].get("following") for r in todo),
        }
        return out, counts

    # ---- driver ------------------------------------------------------------------------------
    def run_phase(self, phase: str, previous: list[dict] | None) -> tuple[list[dict], dict]:
        fp = self.phase_fp(phase)
        manifest = storage.verify_manifest(self.out, fp, phase_manifest(phase))
        if manifest is not None:
            log.info("phase %s: reusing checkpoint", phase)
            self.reused.append(phase)
            return storage.read_jsonl(self.out / phase_file(phase)), manifest["counts"]
        storage.remove_manifest(self.out, phase_manifest(phase))
        started = time.monotonic()
        records, counts = getattr(self, phase)(*(() if previous is None else (previous,)))
        counts = {**counts, "records": len(records), "seconds": round(time.monotonic() - started, 2)}
        storage.write_jsonl(self.out / phase_file(phase), records)
        storage.write_manifest(self.out, [phase_file(phase)], fp, counts=counts, name=phase_manifest(phase))
        log.info("phase %s: %d records in %.1f s", phase, len(records), counts["seconds"])
        return records, counts

    def final_fp(self) -> str | None:
        # Chains every phase (and so every input); None while a phase file is missing.
        try:
            return self.phase_fp("assessments")
        except OSError:
            return None

    def run(self) -> dict:
        self.validate()
        fp = self.final_fp()
        done = storage.verify_manifest(self.out, fp) if fp else None
        if done is not None:
            return {**done["summary"], "skipped": True}
        self.out.mkdir(parents=True, exist_ok=True)
        storage.remove_manifest(self.out)
        records, counts = None, {}
        try:
            for phase in PHASES:
                records, counts[phase] = self.run_phase(phase, records)
        finally:
            if self.engine is not None:
                self.engine.close()
        e, c = self.engine, counts["assessments"]
        summary = {
            "generated": counts["instructions"]["records"],
            "assessed": c["assessed"], "parseFailures": c["parseFailures"],
            "meanQuality": c["meanQuality"], "meanFollowing": c["meanFollowing"],
            "modelLoads": e.loads if e else 0, "engine": self.engine_name,
            "requests": counts["instructions"]["requests"],
            "dropped": {**counts["instructions"]["dropped"],
                        **{f"rule_{k}": v for k, v in c["ruleDropped"].items()}},
            "resumedPhases": self.reused,
            **({"shard": self.shard, "shards": self.count} if self.count > 1 else {}),
        }
        if e is not None and e.generate_seconds:
            summary["tokensPerSecond"] = round(e.tokens_per_second, 1)
            summary["loadSeconds"] = round(e.load_seconds, 1)
        storage.write_manifest(self.out, [phase_file(p) for p in PHASES], self.final_fp(),
                               counts={p: counts[p]["records"] for p in PHASES}, summary=summary)
        return summary


def run(config: StageConfig) -> dict:
    return Synthesis(config).run()
