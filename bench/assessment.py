"""Benchmark: self-assessment scored as text (the reference) vs from the next-token digits.

    .venv/bin/python bench/assessment.py                  # 16 pairs, transformers engine
    .venv/bin/python bench/assessment.py --quick          # 8 pairs
    .venv/bin/python bench/assessment.py --engine vllm    # the same on vLLM

Data.  N real (instruction, response) pairs: the first N Self-Instruct seed tasks'
instruction (+ input) and output (jobs/sheepdog_jobs/data/self_instruct/seed_tasks.jsonl, read in
place; falls back to examples/seeds/quickstart.jsonl).  Each pair gets the paper's combined
QUALITY prompt (build_assessment_prompt("combined", "quality", ...), paper word order).

Both methods run on the same prompts, the same loaded tiny model, in this one process:
* text: the reference's way -- sample a judgement at temperature 1, top_p 0.95, up to
  MAX_TOKENS new tokens (256 here; the paper allows 1000, so this UNDERSTATES the text cost
  whenever a judgement runs to the budget) and read the first number (extract_score; the
  scripts' stricter rule, extract_score_strict, is counted too).
* logprobs: one forward pass over the prompt (score_digits), expected score over the digits.
* text, decode score (assessment.decode: score, the default with parse strict): the same
  judgements decoded to '||' or SCORE_MAX_TOKENS, again in full only where the strict score is
  not readable yet (judgement_decode.generate_judgements), the same seeds as text.

Figures (the LAST line is one JSON object):
* decoded_tokens_ratio: text's mean generated tokens per judgement divided by 1.  The
  logprob method decodes no token; its single forward pass is COUNTED AS 1 token here, so the
  ratio reads "sequential decoding steps per judgement, text over logprobs".
* time_ratio: wall seconds of all text judgements over wall seconds of all logprob scores
  (model load excluded from both; the same batch size for both).
* decision_agreement: on the pairs whose text judgement parsed, each method keeps the pairs
  scoring at or above its own median over those pairs (keep-fraction about 0.5; ties at the
  median are kept); the share of pairs where both made the same keep/drop decision.
* spearman: rank correlation (average ranks for ties) of the two scores on the same pairs.
* text_parse_failures: judgements with no score in 1..10 by extract_score.
* score_decode_*: tokens per judgement, seconds, judgements decoded again in full, and how many
  strict scores equal the full-length text decode's (all of them, by construction).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "operator"))
# One intra-op thread: on the shared 2-core machine 2 threads were ~10x slower (tests/jobs).
os.environ.setdefault("SHEEPDOG_TORCH_THREADS", "1")

from sheepdog_jobs.engines import create_engine  # noqa: E402
from sheepdog_jobs.judgement_decode import generate_judgements  # noqa: E402
from sheepdog_jobs.modelprep import default_cache_dir, prepare_model  # noqa: E402
from sheepdog_jobs.parsing import extract_score, extract_score_strict  # noqa: E402
from sheepdog_jobs.prompts import build_assessment_prompt  # noqa: E402
from sheepdog_jobs.scores import logprob_score  # noqa: E402
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, load_seed_tasks  # noqa: E402
from sheepdog_jobs.stages.common import configure_torch_threads  # noqa: E402

SHARED_SEEDS = SELF_INSTRUCT_SEED_TASKS  # shipped in jobs/sheepdog_jobs/data/self_instruct
TEMPERATURE, TOP_P, MAX_TOKENS, SEED = 1.0, 0.95, 256, 1234
SCORE_MAX_TOKENS = 16  # assessment.scoreMaxTokens's default


def log(msg: str) -> None:
    print(msg, flush=True)


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / (va * vb) ** 0.5


def keep_half(xs: list[float]) -> list[bool]:
    med = statistics.median(xs)
    return [x >= med for x in xs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 pairs instead of 16")
    ap.add_argument("--pairs", type=int, default=None)
    ap.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--model", default=None, help="model directory (default: the cached tiny model)")
    args = ap.parse_args(argv)
    n = args.pairs or (8 if args.quick else 16)

    configure_torch_threads()
    model = args.model or prepare_model(default_cache_dir())["model"]
    seed_file = SHARED_SEEDS  # a missing file fails: no silent fallback
    tasks = [t for t in load_seed_tasks(seed_file) if t.output][:n]
    prompts = [build_assessment_prompt("combined", "quality", t.instruction, t.input, t.output)
               for t in tasks]
    log(f"assessment bench: {len(prompts)} pairs from {seed_file}, combined quality prompt, "
        f"engine {args.engine}, model {model}")
    started = time.monotonic()
    engine = create_engine(args.engine, model, "none", seed=SEED)
    load = time.monotonic() - started
    log(f"model loaded in {load:.1f} s")

    log(f"text scoring: temperature {TEMPERATURE}, top_p {TOP_P}, up to {MAX_TOKENS} tokens "
        f"(paper: 1000)")
    t0 = time.perf_counter()
    outs = engine.generate(prompts, temperature=TEMPERATURE, top_p=TOP_P, max_tokens=MAX_TOKENS,
                           seed=SEED)
    text_seconds = time.perf_counter() - t0
    text_scores = [extract_score(o.text) for o in outs]
    strict_scores = [extract_score_strict(o.text) for o in outs]
    tokens = [o.num_tokens for o in outs]
    log(f"  {text_seconds:.1f} s, {sum(tokens)} tokens ({statistics.fmean(tokens):.1f} per "
        f"judgement, {sum(o.finish_reason == 'length' for o in outs)} hit the budget), "
        f"parsed {sum(s is not None for s in text_scores)}/{len(outs)}")
    for o, s in list(zip(outs, text_scores))[:3]:
        log(f"  e.g. score {s}: {o.text[:100]!r}")

    log(f"text scoring, decode score: to '||' or {SCORE_MAX_TOKENS} tokens, in full only where undecided")
    t0 = time.perf_counter()
    short, cost = generate_judgements(engine, prompts, temperature=TEMPERATURE, top_p=TOP_P, max_tokens=MAX_TOKENS,
                                      seeds=[SEED + i for i in range(len(prompts))], decode="score",
                                      score_max_tokens=SCORE_MAX_TOKENS)
    short_seconds = time.perf_counter() - t0
    same = sum(extract_score_strict(a.text) == b for a, b in zip(short, strict_scores))
    log(f"  {short_seconds:.1f} s, {cost['judgementTokens']} tokens, {cost['fullDecodes']} decoded again in "
        f"full; strict scores equal to the full decode's: {same}/{len(prompts)}")

    log("logprob scoring: one forward pass per prompt")
    t0 = time.perf_counter()
    digit_lps = engine.score_digits(prompts)
    lp_seconds = time.perf_counter() - t0
    lp = [logprob_score(d) for d in digit_lps]
    lp_scores = [e for e, _, _ in lp]
    masses = [m for _, _, m in lp]
    log(f"  {lp_seconds:.2f} s; expected scores {min(x for x in lp_scores if x is not None):.2f}.."
        f"{max(x for x in lp_scores if x is not None):.2f}, digit mass mean "
        f"{statistics.fmean(masses):.3f}")
    engine.close()

    both = [(t, l) for t, l in zip(text_scores, lp_scores) if t is not None and l is not None]
    agreement = rho = None
    if len(both) >= 2:
        kt = keep_half([t for t, _ in both])
        kl = keep_half([l for _, l in both])
        agreement = sum(a == b for a, b in zip(kt, kl)) / len(both)
        rho = spearman([t for t, _ in both], [l for _, l in both])
    per_judgement = statistics.fmean(tokens)
    result = {
        "bench": "assessment", "quick": args.quick, "engine": args.engine, "pairs": len(prompts),
        "prompt": "combined/quality, paper order", "seed_file": str(seed_file),
        "text_settings": {"temperature": TEMPERATURE, "top_p": TOP_P, "max_tokens": MAX_TOKENS,
                          "paper_max_tokens": 1000},
        "text_tokens_per_judgement": round(per_judgement, 1),
        "text_judgements_at_budget": sum(o.finish_reason == "length" for o in outs),
        "logprob_forward_passes_per_judgement": 1,
        "decoded_tokens_ratio": round(per_judgement / 1, 1),
        "decoded_tokens_ratio_note": "text tokens per judgement / 1 (the logprob forward pass "
                                     "counted as one token; it decodes none)",
        "text_seconds": round(text_seconds, 2), "logprob_seconds": round(lp_seconds, 3),
        "time_ratio": round(text_seconds / lp_seconds, 1),
        "load_seconds": round(load, 1),
        "text_parse_failures": sum(s is None for s in text_scores),
        "text_parse_failures_strict": sum(s is None for s in strict_scores),
        "logprob_failures": sum(s is None for s in lp_scores),
        "logprob_digit_mass_mean": round(statistics.fmean(masses), 4),
        "compared_pairs": len(both),
        "decision_rule": "each method keeps scores >= its own median over the compared pairs",
        "decision_agreement": None if agreement is None else round(agreement, 3),
        "spearman": None if rho is None else round(rho, 3),
        "score_decode_tokens_per_judgement": round(cost["judgementTokens"] / len(prompts), 1),
        "score_decode_seconds": round(short_seconds, 2),
        "score_decode_full_again": cost["fullDecodes"],
        "score_decode_same_strict_scores": same,
        "score_decode_time_ratio": round(text_seconds / short_seconds, 1),
        "text_scores": text_scores,
        "logprob_scores": [None if s is None else round(s, 2) for s in lp_scores],
    }
    log(f"text/logprobs: {result['decoded_tokens_ratio']}x decoded tokens, "
        f"{result['time_ratio']}x time; agreement {result['decision_agreement']}, "
        f"spearman {result['spearman']} on {len(both)} pairs")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
