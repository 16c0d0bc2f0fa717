"""Which curated pairs the train stage trains on (training.maxSamples over trainData files).

Data of one iteration (one_base, one_last, direct): its first ``maxSamples`` pairs, as the authors'
training scripts do (LLaMA-Factory's ``max_samples`` keeps the head of the data set). Curate
writes pairs in the global request order, so the head is not a biased part. So ``direct``
with 20k or 30k instructions generates more but trains on no more than maxSamples pairs, as
in the authors' data-size scripts (the same training script, max_samples 3000).

Data of several iterations (total_base: the curated data of iterations 1..t): a seeded random sample of
``maxSamples`` pairs from the pool of all of them. Taking the head of the concatenation, as
sheepdog once did, trains on iteration 1 only as soon as iteration 1 kept ``maxSamples``
pairs. A uniform sample over the pool, rather than an equal share per iteration, treats the
data of all iterations as the one data set of the paper's total_base row: each iteration
contributes in proportion to what it kept, and an iteration that kept little is not
over-weighted. The sample depends on (randomSeed, iteration) only, so a rerun trains on the
same pairs.

``samplesFrom`` (iteration -> pairs drawn from it, validation pairs included) goes into the
train summary, so a reader sees what each iteration contributed.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

from sheepdog_jobs.stages.common import derive_seed

__all__ = ["iteration_of", "samples_from", "select_training_records"]

# Synthesize names every pair "i<N>-<number>" (PrefixMerge's id prefix), and curate keeps it.
_ID = re.compile(r"^i(\d+)-")


def iteration_of(record: dict) -> str:
    """The iteration that generated a curated pair ("?" for an id outside that scheme)."""
    m = _ID.match(str(record.get("id", "")))
    return m.group(1) if m else "?"


def samples_from(records: Sequence[dict]) -> dict[str, int]:
    """samplesFrom: iteration -> pairs of it among ``records`` (keys are strings, as JSON's)."""
    counts = Counter(iteration_of(r) for r in records)
    return {k: counts[k] for k in sorted(counts, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0))}


def select_training_records(records: Sequence[dict], max_samples: int, seed: int, iteration: int) -> list[dict]:
    """The pairs to train on: all when they fit; else the head of one iteration's data, or a
    seeded sample from the pool of several iterations (module doc), in the pool's order."""
    if max_samples < 1:
        raise ValueError(f"maxSamples must be >= 1, got {max_samples}")
    records = list(records)
    if len(records) <= max_samples:
        return records
    if len({iteration_of(r) for r in records}) == 1:
        return records[:max_samples]
    rng = random.Random(derive_seed(seed, iteration, "train-samples"))
    return [records[i] for i in sorted(rng.sample(range(len(records)), max_samples))]
