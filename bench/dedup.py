"""Benchmark: ROUGE-L de-duplication, the reference's exact quadratic method vs FastDedup.

    .venv/bin/python bench/dedup.py            # 2k, 10k and 50k candidates (~5 min)
    .venv/bin/python bench/dedup.py --quick    # 2k and 10k, smaller Exact sample (~1 min)

Data.  Instruction-like sentences built deterministically (random.Random(SEED)) from the 175
Self-Instruct seed tasks (shipped in jobs/sheepdog_jobs/data/self_instruct/; a missing
file fails, nothing falls back to other seeds): the opening
(1-3 words) of a seed instruction ("Write a", "Given a sentence"), continued by a random walk
on the word bigrams of all the seed texts (instructions, inputs and outputs) that jumps to a
word of another seed instruction 15% of the time, 6 to 28 words.  A known share
(INJECT_RATE) of the candidates are near-duplicates: an earlier candidate (or a seed) with
1 to 3 word edits (substitute, delete, insert, swap).  The pool starts with the seed
instructions and the candidates arrive in one stream, as in stage 1 (threshold 0.7).

What is measured (CPU seconds of this process, time.process_time, so the load of other
processes on a shared machine matters less; wall seconds are reported too):
* FastDedup: the whole stream, timed cumulatively; the figures at the smaller sizes are the
  same run's prefix (the state after n candidates does not depend on what follows).
* Exact (sheepdog_jobs.rouge.ExactDedup, the reference algorithm, single process) at the
  smallest size: the whole stream, every decision compared with FastDedup's.
* Exact at the larger sizes would take hours, so it is measured on a fixed random sample of
  candidate positions (random.Random(SEED + size)), each checked against exactly the pool
  state FastDedup had at that position (the seeds plus every candidate FastDedup kept
  before it); decisions are compared on the sample.  The full Exact time is ESTIMATED as
  size * (mean measured time per sampled candidate), an unbiased estimate of the sum since
  the sample is uniform; its standard error is reported.  At the smallest size the same
  estimator is also applied to a sample, next to the full measurement, as a check on it.
* The reference spreads the same pairwise work over a process pool: that divides its wall
  time by at most the number of cores but not its CPU time, which is what is compared here.
* `identical` is true only if every compared decision matched (all of them at the smallest
  size, the samples at the larger ones).

The LAST line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from itertools import accumulate
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "jobs"))

from sheepdog_jobs.rouge import ExactDedup, FastDedup, tokenize  # noqa: E402
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, load_seed_tasks  # noqa: E402

SHARED_SEEDS = SELF_INSTRUCT_SEED_TASKS  # shipped in jobs/sheepdog_jobs/data/self_instruct
SEED = 20240815
THRESHOLD = 0.7
INJECT_RATE = 0.10


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- data --------------------------------------------------------------------------------

class Generator:
    """Deterministic instruction-like sentences from the seed tasks (see module docstring)."""

    def __init__(self, tasks, rng: random.Random):
        self.rng = rng
        self.instructions = [t.instruction.split() for t in tasks]
        self.instructions = [w for w in self.instructions if len(w) >= 3]
        # Word bigrams of all the seed texts, and word frequencies (for substitutions).
        self.successors: dict[str, list[str]] = defaultdict(list)
        counts: Counter = Counter()
        for t in tasks:
            for text in (t.instruction, t.input, t.output):
                words = text.split()
                counts.update(words)
                for x, y in zip(words, words[1:]):
                    self.successors[x].append(y)
        self.words = list(counts)
        self.cum_weights = list(accumulate(counts[w] for w in self.words))

    def vocab_word(self) -> str:
        return self.rng.choices(self.words, cum_weights=self.cum_weights)[0]

    def fresh(self) -> str:
        """The opening (1-3 words) of a seed instruction, then a walk on the word bigrams
        of all seed texts that jumps to a word of another seed instruction 15% of the
        time (so it does not copy a seed), 6 to 28 words, ending early after a word that
        ends a sentence."""
        rng = self.rng
        first = rng.choice(self.instructions)
        words = first[:rng.randint(1, 3)]
        target = rng.randint(6, 28)
        while len(words) < target:
            following = self.successors.get(words[-1])
            if not following or rng.random() < 0.15:
                words.append(rng.choice(rng.choice(self.instructions)))
            else:
                words.append(rng.choice(following))
            if len(words) > 6 and words[-1][-1] in ".?!":
                break
        return " ".join(words)

    def near_duplicate(self, source: str) -> str:
        rng = self.rng
        words = source.split()
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            pos = rng.randrange(len(words))
            if op < 0.35:
                words[pos] = self.vocab_word()
            elif op < 0.6 and len(words) > 4:
                del words[pos]
            elif op < 0.85:
                words.insert(pos, self.vocab_word())
            elif pos + 1 < len(words):
                words[pos], words[pos + 1] = words[pos + 1], words[pos]
        return " ".join(words)


def build_stream(tasks, size: int) -> tuple[list[str], list[bool]]:
    rng = random.Random(SEED)
    gen = Generator(tasks, rng)
    seeds = [t.instruction for t in tasks]
    stream: list[str] = []
    injected: list[bool] = []
    for _ in range(size):
        if rng.random() < INJECT_RATE:
            source = rng.choice(stream) if stream and rng.random() < 0.8 else rng.choice(seeds)
            stream.append(gen.near_duplicate(source))
            injected.append(True)
        else:
            stream.append(gen.fresh())
            injected.append(False)
    return stream, injected


# ---- runs --------------------------------------------------------------------------------

def run_fast(pool: list[str], stream: list[str], checkpoints: list[int]):
    """FastDedup over the whole stream: decisions, the number kept before each candidate,
    and CPU/wall seconds at each checkpoint."""
    fast = FastDedup(pool, THRESHOLD)
    decisions: list[bool] = []
    kept_before: list[int] = []
    kept = 0
    cpu: dict[int, float] = {}
    wall: dict[int, float] = {}
    c0, w0 = time.process_time(), time.perf_counter()
    step = max(1, len(stream) // 10)
    for i, text in enumerate(stream, 1):
        kept_before.append(kept)
        d = fast.add_if_novel(text)
        decisions.append(d)
        kept += d
        if i in checkpoints:
            cpu[i], wall[i] = time.process_time() - c0, time.perf_counter() - w0
        if i % step == 0:
            log(f"  fast: {i}/{len(stream)} candidates, {kept} kept, "
                f"{time.process_time() - c0:.2f} cpu s")
    return decisions, kept_before, cpu, wall


def run_exact_full(pool: list[str], stream: list[str], fast_decisions: list[bool]):
    exact = ExactDedup(pool, THRESHOLD)
    mismatches = 0
    c0, w0 = time.process_time(), time.perf_counter()
    step = max(1, len(stream) // 10)
    for i, text in enumerate(stream):
        mismatches += exact.add_if_novel(text) != fast_decisions[i]
        if (i + 1) % step == 0:
            log(f"  exact: {i + 1}/{len(stream)} candidates, "
                f"{time.process_time() - c0:.1f} cpu s")
    return time.process_time() - c0, time.perf_counter() - w0, mismatches


def run_exact_sample(pool: list[str], stream: list[str], fast_decisions: list[bool],
                     kept_before: list[int], size: int, sample_size: int):
    """Exact on a fixed random sample of the first ``size`` candidates, each against the
    pool state FastDedup had at that position.  Returns per-candidate CPU seconds, wall
    seconds in all and the number of decisions that differ."""
    positions = sorted(random.Random(SEED + size).sample(range(size), min(sample_size, size)))
    kept_texts = [t for t, d in zip(stream, fast_decisions) if d]
    exact = ExactDedup(pool, THRESHOLD)
    in_pool = 0  # kept candidates already added to exact's pool
    times: list[float] = []
    mismatches = 0
    wall = 0.0
    for n, i in enumerate(positions, 1):
        # Bring the pool to FastDedup's state before candidate i (untimed: in the real
        # algorithm the pool grows as a by-product of the decisions).
        exact._pool.extend(tokenize(t) for t in kept_texts[in_pool:kept_before[i]])
        in_pool = kept_before[i]
        c0, w0 = time.process_time(), time.perf_counter()
        decision = exact.is_novel(stream[i])
        times.append(time.process_time() - c0)
        wall += time.perf_counter() - w0
        mismatches += decision != fast_decisions[i]
        if n % max(1, len(positions) // 5) == 0:
            log(f"  exact sample at {size}: {n}/{len(positions)} "
                f"(position {i}, pool {len(exact)}), {sum(times):.1f} cpu s")
    return times, wall, mismatches


def estimate(times: list[float], size: int) -> tuple[float, float]:
    """Estimated total over ``size`` candidates from a uniform sample, and its standard
    error (finite-population corrected)."""
    n = len(times)
    mean = statistics.fmean(times)
    sd = statistics.stdev(times) if n > 1 else 0.0
    fpc = math.sqrt(max(0.0, (size - n) / (size - 1))) if size > 1 else 0.0
    return size * mean, size * sd / math.sqrt(n) * fpc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2k and 10k only (no 50k)")
    ap.add_argument("--sample", type=int, default=None, metavar="N",
                    help="Exact sample size at the larger sizes (default 100; quick 40)")
    args = ap.parse_args(argv)
    sizes = [2000, 10000] if args.quick else [2000, 10000, 50000]
    sample = args.sample or (40 if args.quick else 100)
    labels = [f"{s // 1000}k" if s % 1000 == 0 else str(s) for s in sizes]

    seed_file = SHARED_SEEDS  # a missing file fails: no silent fallback
    tasks = load_seed_tasks(seed_file)
    pool = [t.instruction for t in tasks]
    log(f"dedup bench: seeds {seed_file} ({len(pool)} tasks), threshold {THRESHOLD}, "
        f"sizes {sizes}, near-duplicates injected at {INJECT_RATE:.0%}")
    stream, injected = build_stream(tasks, sizes[-1])
    lengths = [len(tokenize(t)) for t in stream]
    vocab = {w for t in stream for w in tokenize(t)}
    log(f"stream: {len(stream)} candidates, {sum(injected)} injected near-duplicates, "
        f"{statistics.fmean(lengths):.1f} tokens on average, {len(vocab)} distinct tokens")
    log("examples: " + " | ".join(stream[:3]))

    log(f"FastDedup over {sizes[-1]} candidates:")
    fast_dec, kept_before, fast_cpu, fast_wall = run_fast(pool, stream, sizes)

    result: dict = {"bench": "dedup", "quick": args.quick, "seed_file": str(seed_file),
                    "seed_tasks": len(pool), "threshold": THRESHOLD,
                    "inject_rate": INJECT_RATE, "sizes": dict(zip(labels, sizes)),
                    "time": "cpu seconds (process_time) of one process",
                    "exact_sample_size": sample,
                    "measured": f"fast_* at every size; exact_{labels[0]}_seconds (all "
                                f"{sizes[0]} candidates); exact_*_sample_seconds_measured",
                    "estimated": "exact_*_seconds_estimated = size * mean time of the "
                                 "sampled candidates (each against Fast's pool state there); "
                                 "speedup_* at the larger sizes use that estimate"}
    all_identical = True
    for label, size in zip(labels, sizes):
        kept = sum(fast_dec[:size])
        inj = sum(injected[:size])
        inj_dropped = sum(1 for d, j in zip(fast_dec[:size], injected[:size]) if j and not d)
        result[f"kept_{label}"] = kept
        result[f"injected_{label}"] = inj
        result[f"injected_dropped_{label}"] = inj_dropped
        result[f"fast_{label}_seconds"] = round(fast_cpu[size], 3)
        result[f"fast_{label}_wall_seconds"] = round(fast_wall[size], 3)
        log(f"{label} ({size}): fast {fast_cpu[size]:.2f} cpu s, kept {kept}, "
            f"{inj_dropped}/{inj} injected near-duplicates dropped")

    # Exact, fully, at the smallest size; and the sample estimator there as a check.
    size0, label0 = sizes[0], labels[0]
    log(f"Exact (reference algorithm) over all {size0} candidates:")
    e_cpu, e_wall, e_mis = run_exact_full(pool, stream[:size0], fast_dec)
    all_identical &= e_mis == 0
    result[f"exact_{label0}_seconds"] = round(e_cpu, 3)
    result[f"exact_{label0}_wall_seconds"] = round(e_wall, 3)
    result[f"decisions_compared_{label0}"] = size0
    result[f"mismatches_{label0}"] = e_mis
    result[f"speedup_{label0}"] = round(e_cpu / fast_cpu[size0], 1)
    log(f"{label0}: exact {e_cpu:.1f} cpu s, mismatches {e_mis}, "
        f"speedup {e_cpu / fast_cpu[size0]:.1f}x (both measured)")
    log(f"Exact on a sample of {sample} at {size0} (check of the estimator):")
    times, _, mis = run_exact_sample(pool, stream, fast_dec, kept_before, size0, sample)
    all_identical &= mis == 0
    est, se = estimate(times, size0)
    result[f"exact_{label0}_seconds_estimated_from_sample"] = round(est, 3)
    result[f"exact_{label0}_estimate_stderr"] = round(se, 3)
    log(f"{label0}: estimated {est:.1f} +- {se:.1f} cpu s vs measured {e_cpu:.1f}")

    for label, size in zip(labels[1:], sizes[1:]):
        log(f"Exact on a sample of {sample} of the {size} candidates:")
        times, wall, mis = run_exact_sample(pool, stream, fast_dec, kept_before, size, sample)
        all_identical &= mis == 0
        est, se = estimate(times, size)
        result[f"exact_{label}_sample_seconds_measured"] = round(sum(times), 3)
        result[f"exact_{label}_seconds_estimated"] = round(est, 1)
        result[f"exact_{label}_estimate_stderr"] = round(se, 1)
        result[f"decisions_compared_{label}"] = len(times)
        result[f"mismatches_{label}"] = mis
        result[f"speedup_{label}"] = round(est / fast_cpu[size], 1)
        result[f"speedup_{label}_is_estimated"] = True
        log(f"{label}: exact estimated {est:.0f} +- {se:.0f} cpu s "
            f"({est / 3600:.2f} h), fast {fast_cpu[size]:.2f} cpu s, "
            f"speedup {est / fast_cpu[size]:.0f}x (estimated), mismatches {mis}")

    result["identical"] = all_identical
    print(json.dumps(result), flush=True)
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(main())
